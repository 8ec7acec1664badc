"""TorchDevice's `torch.backends` entry point: zero-edit activation.

torch (2.5 and later) calls every entry point of the group "torch.backends"
at the end of `import torch`.  This is TorchDevice's.  It lives outside the
TorchDevice package on purpose: importing the package enables TorchDevice,
so the check below must run first.

Without TORCHDEVICE=1 in the environment it returns at once, having imported
nothing: installing TorchDevice changes nothing for programs that did not
ask for it.  TORCH_DEVICE_BACKEND_AUTOLOAD=0 (torch's switch) turns every
such entry point off.
"""
import os

_ON = ("1", "true", "yes", "on")


def autoload() -> None:
    """Enables TorchDevice when TORCHDEVICE=1; never breaks `import torch`."""
    if os.environ.get("TORCHDEVICE", "").strip().lower() not in _ON:
        return
    try:
        import TorchDevice  # noqa: F401  (enables on import)
    except Exception as exc:  # torch would turn it into an ImportError
        import warnings
        warnings.warn(f"TORCHDEVICE=1, but TorchDevice could not be enabled: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning,
                      stacklevel=2)
