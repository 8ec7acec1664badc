"""Tensors sent between processes from a device torch cannot share.

torch sends a tensor to another process (``multiprocessing`` pools and
queues, ``torch.multiprocessing``) through shared memory on the CPU and CUDA
IPC on NVIDIA; any other device (MPS, a generic accelerator) fails with
"_share_fd_: only available on CPU".  CUDA-written code sends what it made
with ``device="cuda"``, and under TorchDevice also what it made without a
device (accelerate mode places it on the accelerator), so on those devices
the tensor goes as a host copy and is put back on the same device in the
receiving process, with its place as the program sees it ("Moves copy",
docs/policy.md).  Unlike CUDA IPC the receiver holds a copy: writes there
do not reach the sender.  So a tensor the program put in shared memory
(``share_memory_()``, ``Module.share_memory()``: Hogwild training, whose
workers write into the parameters the parent reads) is not sent as a copy,
which would silently lose those writes, but refused with an error that
says how to run the program (docs/compile-checkpoints-distributed.md).
"""
from __future__ import annotations

import functools
import weakref
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

# Devices torch sends itself (shared memory, CUDA IPC, nothing to send).
_NATIVE = ("cpu", "cuda", "meta")

# Set on a storage whose share_memory_() was called on such a device
# (torch makes that a no-op there, as on CUDA, where memory is shared anyway).
_SHARED = "_torchdevice_share_memory"

_torch_reduce: Optional[Callable[[Any], Any]] = None
_registered = False

_SHARED_MESSAGE = (
    "TorchDevice: a tensor on {device} that the program put in shared "
    "memory (share_memory_(), Module.share_memory()) is being sent to "
    "another process. CUDA shares it, so that process's writes (Hogwild "
    "training) reach this one; {device} memory cannot be shared between "
    "processes, and a copy would lose those writes without a sign. Run the "
    "program on the host, where shared memory works as on CUDA: "
    "TORCHDEVICE_TARGET=cpu (docs/compile-checkpoints-distributed.md).")


def _build_share_memory(original: Callable[..., Any]) -> Callable[..., Any]:
    """UntypedStorage.share_memory_ while TorchDevice is enabled: torch's,
    and on a device torch cannot share, a note that the program wants the
    storage shared between processes (read by reduce_tensor)."""
    @functools.wraps(original)
    def share_memory_(storage: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(storage, *args, **kwargs)
        if storage.device.type not in _NATIVE:
            try:
                setattr(storage, _SHARED, True)
            except (AttributeError, RuntimeError):
                pass
        return result
    return share_memory_


def patches() -> List[Any]:
    from ._patches import Patch
    return [Patch(torch.UntypedStorage, "share_memory_", _build_share_memory)]


def _rebuild(host: torch.Tensor, device: str, requires_grad: bool,
             on_accelerator: bool, parameter: bool) -> torch.Tensor:
    """The receiving side: the tensor back on its device (the same device:
    one machine), with the place the program saw and its autograd flag."""
    from . import _patches, _tdcore
    to = _patches._originals.get("tensor_to", torch.Tensor.to)
    tensor = to(host, device)
    if on_accelerator:
        _tdcore.mark_accelerator(tensor)
    if parameter:
        return torch.nn.Parameter(tensor, requires_grad=requires_grad)
    return tensor.requires_grad_(requires_grad) if requires_grad else tensor


# id(tensor) -> (its version, its host copy), while the tensor lives.  torch
# sends the host copy through shared memory by its file descriptor; a
# process started by spawn/forkserver receives the descriptor only when it
# starts, after pickling (a Dataset handed to DataLoader workers), so the
# copy must outlive the pickling, or the descriptor is closed by then
# ("bad value(s) in fds_to_keep").  The same tensor sent again, unchanged,
# reuses its copy.
_host_copies: Dict[int, Tuple[int, torch.Tensor]] = {}


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    key = id(tensor)
    held = _host_copies.get(key)
    if held is not None and held[0] == tensor._version:
        return held[1]
    from . import _patches
    to_host = _patches._originals.get("tensor_cpu", torch.Tensor.cpu)
    host = to_host(tensor.detach())
    if host is tensor:
        host = host.clone()
    if held is None:
        weakref.finalize(tensor, _host_copies.pop, key, None)
    _host_copies[key] = (tensor._version, host)
    return host


def reduce_tensor(tensor: torch.Tensor) -> Tuple[Any, ...]:
    """ForkingPickler's reducer for tensors while TorchDevice is enabled."""
    assert _torch_reduce is not None
    device = tensor.device
    if (device.type in _NATIVE or tensor.layout != torch.strided
            or (tensor.requires_grad and not tensor.is_leaf)):
        return _torch_reduce(tensor)       # torch's own, errors included
    if getattr(tensor.untyped_storage(), _SHARED, False):
        raise RuntimeError(_SHARED_MESSAGE.format(device=device.type))
    from . import _tdcore
    return (_rebuild, (_host_copy(tensor), str(device), tensor.requires_grad,
                       _tdcore.on_accelerator(tensor),
                       isinstance(tensor, torch.nn.Parameter)))


def _classes() -> Tuple[type, ...]:
    return (torch.Tensor, torch.nn.parameter.Parameter)


def on_apply() -> None:
    """Puts the reducer in front of torch's for tensors and parameters."""
    global _torch_reduce, _registered
    import torch.multiprocessing.reductions as reductions
    if _torch_reduce is None:
        _torch_reduce = reductions.reduce_tensor
    for cls in _classes():
        ForkingPickler.register(cls, reduce_tensor)
    _registered = True


def on_restore() -> None:
    """torch's reducer again."""
    global _registered
    if not _registered or _torch_reduce is None:
        return
    for cls in _classes():
        ForkingPickler.register(cls, _torch_reduce)
    _registered = False
