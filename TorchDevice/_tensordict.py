"""tensordict's CudaGraphModule where "cuda" is not CUDA.

``tensordict.nn.CudaGraphModule`` (torchrl, LeanRL) warms a function up,
captures it in ``torch.cuda.CUDAGraph`` and replays it.  Before capture it
checks that every tensor given to it is a CUDA tensor by its device's
type: a tensor reads the device really used (docs/policy.md, "What a
device reads as"), so the check refused the tensors the program made for
"cuda" ("All tensors must be stored on CUDA. Got cpu."), while a
TensorDict made with ``device="cuda"`` passed.  Where the capture is
TorchDevice's (docs/masquerade.md, "CUDA graphs"), a tensor on the device
"cuda" lands on passes that check; one on another device is refused as
before, and one that requires gradients gets tensordict's error for that.
The module is adapted right after a program imports it.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Dict, Tuple

from . import _imports, _patches

_MODULE = "tensordict.nn.cudagraphs"
_FAILED = ("could not adapt tensordict's CudaGraphModule: it refuses the "
           "tensors made for \"cuda\" here (\"All tensors must be stored on "
           "CUDA\")")
_lock = threading.Lock()
_originals: Dict[Tuple[Any, str], Any] = {}


def _on_the_device(cls: Any, x: Any) -> bool:
    """Whether `x` is a tensor on the device "cuda" lands on; one that
    requires gradients gets tensordict's own error for that."""
    import torch
    if not (isinstance(x, torch.Tensor)
            and x.device.type == _patches.landed_type()):
        return False
    if x.requires_grad:
        raise RuntimeError(getattr(
            cls, "_REQUIRES_GRAD_ERROR",
            "CudaGraphModule takes no tensors that require gradients"))
    return True


def _clone_builder(original: Callable[[Any, Any], Any]) -> Any:
    def _check_device_and_clone(cls: Any, x: Any) -> Any:
        if _on_the_device(cls, x):
            return x.clone()
        return original(cls, x)
    return classmethod(_check_device_and_clone)


def _grad_builder(original: Callable[[Any, Any], Any]) -> Any:
    def _check_device_and_grad(cls: Any, x: Any) -> Any:
        if _on_the_device(cls, x):
            return None
        return original(cls, x)
    return classmethod(_check_device_and_grad)


_BUILDERS = {"_check_device_and_clone": _clone_builder,
             "_check_device_and_grad": _grad_builder}


def _register() -> None:
    owner = sys.modules[_MODULE].CudaGraphModule
    with _lock:
        for name, builder in _BUILDERS.items():
            if (owner, name) in _originals:
                continue
            # The function under the classmethod, called with the class.
            original = owner.__dict__[name]
            _originals[(owner, name)] = original
            setattr(owner, name, builder(original.__func__))


def on_apply() -> None:
    """Called at the end of _patches.apply(): where CUDA graphs are
    TorchDevice's (the same rule as _graphs.patches)."""
    from ._masquerade import cuda_emulated
    if cuda_emulated():
        _imports.after(_MODULE, _register, _FAILED)


def on_restore() -> None:
    """Called by _patches.restore(): tensordict's own methods back."""
    _imports.cancel(_MODULE, _register)
    with _lock:
        for (owner, name), original in _originals.items():
            setattr(owner, name, original)
        _originals.clear()
