"""Start-up hook: every Python process of a run with SIMACCEL_AUTOLOAD=1 has
the simulated accelerator, loaded as `import torch` completes.

Run by the line of simaccel_autoload.pth (site-packages; installed by
`make simaccel`) at interpreter start-up, only when SIMACCEL_AUTOLOAD=1.  It
imports nothing heavy: it waits for the first `import torch`, lets torch
initialise without its "torch.backends" entry points, loads the simulated
accelerator, then runs those entry points itself.  So TorchDevice's entry
point (TORCHDEVICE=1), and every later look at torch.accelerator, find the
device already there, whatever order the entry points come in.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_AUTOLOAD = "TORCH_DEVICE_BACKEND_AUTOLOAD"


def _load_simaccel(torch) -> None:
    module = sys.modules.get("simaccel")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "simaccel", os.path.join(_HERE, "__init__.py"), submodule_search_locations=[_HERE])
        module = importlib.util.module_from_spec(spec)
        sys.modules["simaccel"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["simaccel"]
            raise
    reason = module.try_load()
    if reason is not None:
        # Loud on purpose: a run that asked for the device must not quietly
        # run on the CPU instead.
        raise ImportError(f"SIMACCEL_AUTOLOAD=1, but the simulated accelerator could not be "
                          f"loaded: {reason}")


class _TorchLoader(importlib.abc.Loader):
    def __init__(self, real: importlib.abc.Loader, finder: "_TorchFinder"):
        self._real = real
        self._finder = finder

    def create_module(self, spec):
        return self._real.create_module(spec)

    def exec_module(self, module) -> None:
        if self._finder in sys.meta_path:  # torch is being imported: once only
            sys.meta_path.remove(self._finder)
        saved = os.environ.get(_AUTOLOAD)
        os.environ[_AUTOLOAD] = "0"  # torch's own switch for its entry points
        try:
            self._real.exec_module(module)
        finally:
            if saved is None:
                del os.environ[_AUTOLOAD]
            else:
                os.environ[_AUTOLOAD] = saved
        module.__loader__ = self._real
        if module.__spec__ is not None:
            module.__spec__.loader = self._real
        _load_simaccel(module)
        if module._is_device_backend_autoload_enabled():
            module._import_device_backends()

    def __getattr__(self, name):
        return getattr(self._real, name)


class _TorchFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of torch's spec.  It stays in sys.meta_path until
    torch is actually imported: a find_spec("torch") that only asks whether
    torch is installed (transformers does) must not use it up."""

    simaccel_hook = True

    def find_spec(self, name, path, target=None):
        if name != "torch":
            return None
        for finder in sys.meta_path:
            if getattr(finder, "simaccel_hook", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _TorchLoader(spec.loader, self)
                return spec
        return None


# The .pth line may run twice (site.addsitedir of the same directory); each
# run defines a new class, hence the marker attribute.
if "torch" not in sys.modules and not any(getattr(f, "simaccel_hook", False)
                                          for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchFinder())
