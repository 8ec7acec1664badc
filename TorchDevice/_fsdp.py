"""FullyShardedDataParallel (FSDP1) programs where "cuda" lands on the host.

Three of FSDP's steps assume that the device it computes on is not the
host:

- ``sync_module_states=True`` refuses a module whose parameters are on the
  CPU ("requires them to be on GPU"), comparing each tensor's device with
  ``torch.device("cpu")``.  A CUDA program's module, moved by FSDP to the
  ``device_id`` it names, is on the host here: those tensors are on the
  accelerator for the program (TorchDevice's mark), and they pass.  A module
  the program left on the host itself keeps torch's refusal.
- Without ``device_id``, FSDP takes the device of the module's parameters,
  or where they are on the CPU, torch's current accelerator: a CUDA
  program's ``FSDP(model.to(rank))`` (torch's own tutorial) stopped with
  "FSDP needs a non-CPU accelerator device".  A module the program put on
  the accelerator is given the device the program put it on, as FSDP reads
  it on CUDA; one it left on the host keeps torch's error.
- ``CPUOffload(offload_params=True)`` moves parameters and gradients between
  the host and the compute device and tells the two apart by device; with
  both on the host, FSDP's gradient bookkeeping takes the wrong branch (the
  previous step's gradient is summed into the next one with
  ``use_orig_params=True``) or stops (the host's stream has no
  ``synchronize``).  Where "cuda" is the host the parameters are already in
  host memory, which is what offloading is for: FSDP is built without it,
  and the report names the call.

Nothing changes on profile cuda, nor where "cuda" lands on a device that is
not the host (docs/compile-checkpoints-distributed.md, "FSDP").  FSDP's
modules are costly to import, so the changes are made right after a
program imports them.

fairscale's FullyShardedDataParallel, on every profile but cuda: its
``state_dict()`` copies each full parameter before ``summon_full_params``
frees it, by ``.to(state_dict_device)`` where the tensor's device type
differs from that device's, else by ``clone()``.  Its default
``state_dict_device`` is the "cuda" device it builds, which reads ``cuda``
to it while the tensors read the device really used: it took ``.to()``,
which leaves a tensor already there as it is, so the state dict held freed
memory (an unloadable file, then a segmentation fault in
``load_state_dict``).  A ``state_dict_device`` asked for as "cuda" (or
"mps") elsewhere is given to it as the device really used, which is what
it compares on CUDA.
"""
from __future__ import annotations

import functools
import inspect
import sys
import threading
from typing import Any, Callable, Dict, List

from . import _imports, _patches, _tdcore, _torch_compat

_INIT_UTILS = "torch.distributed.fsdp._init_utils"
_FSDP = "torch.distributed.fsdp.fully_sharded_data_parallel"
_FAIRSCALE = "fairscale.nn.data_parallel.fully_sharded_data_parallel"
_FAIRSCALE_FAILED = ("could not adapt fairscale's FullyShardedDataParallel: "
                     "its state_dict() may hold memory it frees")
_FAILED = ("could not adapt FullyShardedDataParallel to a host that stands "
           "for \"cuda\"; sync_module_states, a module without device_id "
           "and CPU offloading stop where torch's do")

_lock = threading.Lock()
# (owner, name) -> torch's own object, while ours stands in its place
_originals: Dict[Any, Any] = {}


def _host_profile() -> bool:
    return _tdcore.settings()["profile"] == "cpu"


def _states_check_builder(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def check(module_states: List[Any]) -> Any:
        host = [t for t in module_states if t.device.type == "cpu"]
        if host and all(_tdcore.on_accelerator(t) for t in host):
            return None
        return original(module_states)
    return check


def _program_device() -> Any:
    """The device a module the program put on "cuda" is on, as FSDP reads
    it on CUDA (its parameters' device): the current one."""
    import torch
    return torch.device("cuda", torch.cuda.current_device())


def _init_builder(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if _host_profile():
            bound = signature.bind(self, *args, **kwargs)
            offload = bound.arguments.get("cpu_offload")
            if offload is not None and getattr(offload, "offload_params",
                                               False):
                bound.arguments["cpu_offload"] = type(offload)(
                    offload_params=False)
                _patches.record_emulated(
                    "FullyShardedDataParallel(cpu_offload)")
            if (bound.arguments.get("device_id") is None
                    and _patches.module_on_accelerator(
                        bound.arguments.get("module"))):
                bound.arguments["device_id"] = _program_device()
            args, kwargs = bound.args[1:], bound.kwargs
        original(self, *args, **kwargs)
    return __init__


def _fairscale_init_builder(
        original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        device = getattr(self, "state_dict_device", None)
        if device is not None and _tdcore.asked_device(device) is not None:
            import torch
            # str() read here is the device really used
            self.state_dict_device = torch.device(str(device))
    return __init__


def _replace(owner: Any, name: str,
             builder: Callable[[Any], Any]) -> None:
    with _lock:
        if (owner, name) in _originals:
            return
        original = getattr(owner, name)
        _originals[(owner, name)] = original
        setattr(owner, name, builder(original))


def _register_states_check() -> None:
    module = _torch_compat.get("fsdp_init_utils")
    if module is not None and _torch_compat.has("fsdp_states_check"):
        _replace(module, "_check_module_states_for_sync_module_states",
                 _states_check_builder)


def _register_init() -> None:
    # Run as the module's import ends, inside the package's own import:
    # the class is read from the module, not from the package.
    module = sys.modules[_FSDP]
    _replace(module.FullyShardedDataParallel, "__init__", _init_builder)


def _register_fairscale() -> None:
    module = sys.modules[_FAIRSCALE]
    _replace(module.FullyShardedDataParallel, "__init__",
             _fairscale_init_builder)


def on_apply() -> None:
    """Called at the end of _patches.apply()."""
    if _host_profile():
        _imports.after(_INIT_UTILS, _register_states_check, _FAILED)
        _imports.after(_FSDP, _register_init, _FAILED)
    if _tdcore.settings()["profile"] != "cuda":
        _imports.after(_FAIRSCALE, _register_fairscale, _FAIRSCALE_FAILED)


def on_restore() -> None:
    """Called by _patches.restore(): torch's own objects back."""
    _imports.cancel(_INIT_UTILS, _register_states_check)
    _imports.cancel(_FSDP, _register_init)
    _imports.cancel(_FAIRSCALE, _register_fairscale)
    with _lock:
        for (owner, name), original in _originals.items():
            setattr(owner, name, original)
        _originals.clear()
