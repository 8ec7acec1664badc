"""Tensors sent between processes from a device torch cannot share.

torch sends a tensor to another process (``multiprocessing`` pools and
queues, ``torch.multiprocessing``) through shared memory on the CPU and CUDA
IPC on NVIDIA; any other device (MPS, a generic accelerator) fails with
"_share_fd_: only available on CPU".  CUDA-written code sends what it made
with ``device="cuda"``, and under TorchDevice also what it made without a
device (accelerate mode places it on the accelerator), so on those devices
the tensor goes as a host copy and is put back on the same device in the
receiving process, with its place as the program sees it ("Moves copy",
docs/policy.md).  Each side then holds a device tensor of its own, linked
to the host copy in shared memory: writes on either side reach the other
at the next message between processes (see _Link), where CUDA's shared
memory has them at once.  A tensor the program put in shared memory
(``share_memory_()``, ``Module.share_memory()``: Hogwild training, whose
workers write into the parameters the parent reads after join(), with no
message between) is refused instead, with an error that says how to run
the program (docs/compile-checkpoints-distributed.md).
"""
from __future__ import annotations

import functools
import os
import pickle
import uuid
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


def _rebuild(host: torch.Tensor, counter: torch.Tensor, token: str,
             device: str, dtype: torch.dtype, size: Tuple[int, ...],
             stride: Tuple[int, ...], offset: int, requires_grad: bool,
             on_accelerator: bool, parameter: bool) -> torch.Tensor:
    """The receiving side: the tensor back on its device (the same device:
    one machine) over a storage linked to the shared host copy it came
    through (tensors of one storage there share one here, as CUDA's do),
    with the place the program saw and its autograd flag."""
    from . import _patches, _tdcore
    link = _tokens.get(token)
    storage = link.ref() if link is not None else None
    if link is not None and storage is not None:
        link.claims += 1        # the sender counted this one for it
    else:
        to = _patches._originals.get("tensor_to", torch.Tensor.to)
        storage = to(host, device).untyped_storage()
        _link(storage, host, counter, token)
    tensor = torch.empty(0, dtype=dtype, device=storage.device).set_(
        storage, offset, size, stride)
    if on_accelerator:
        _tdcore.mark_accelerator(tensor)
    if parameter:
        return torch.nn.Parameter(tensor, requires_grad=requires_grad)
    return tensor.requires_grad_(requires_grad) if requires_grad else tensor


class _Link:
    """A device storage and the shared host copy it was sent through.

    On CUDA the tensor a process receives is the sender's memory (IPC), so a
    write on either side reaches the other: a collector process writes each
    new batch into the buffer it sent once and then sends only "ready"
    (torchrl's multi-process collectors), a parent updates the weights its
    workers hold.  Here each side holds device memory of its own, and they
    meet at the host copy in shared memory.  A process's writes go there
    when it next sends anything to another process, and it takes the other
    side's in when it next receives something: the message is where a CUDA
    program's other side may read the write too.  Two counters in shared
    memory go with the copy: its generation, which tells a process that it
    changed, and how many processes hold it, so that a process left alone
    with it (DataLoader workers bring what they receive to the host) stops
    writing to it.  A sender counts each receiver when it pickles the
    tensor, before the receiver can read a write it makes next; a receiver
    gives back what it was counted for when its storage dies.  Writes are
    found by the bytes, not by a tensor's version count: a write through
    another tensor of the same memory (a module's parameter behind the
    tensors of a state dict that was sent) counts on that tensor only."""

    __slots__ = ("ref", "host", "counter", "shared", "seen", "token",
                 "claims")

    def __init__(self, storage: Any, host: torch.Tensor,
                 counter: torch.Tensor, token: str) -> None:
        self.ref = weakref.ref(storage)
        self.host = host                    # uint8, the whole storage
        self.counter = counter              # what is sent: its storage
        self.shared = counter.numpy()       # [generation, holders]
        self.seen = int(self.shared[_GENERATION])
        self.token = token
        self.claims = 1                     # of the holders, this process's


# id(device storage) and token -> its link, while the storage lives: on the
# sending side the host copy must outlive the pickling (a process started
# by spawn or forkserver receives the copy's file descriptor only when it
# starts, after pickling: "bad value(s) in fds_to_keep" if it was freed),
# and the same storage sent again goes through the same copy.
_links: Dict[int, _Link] = {}
_tokens: Dict[str, _Link] = {}
_GENERATION, _HOLDERS = 0, 1


def _add(link: _Link, which: int, delta: int) -> int:
    from . import _tdcore
    return _tdcore.shared_add(link.shared, which, delta)


def _forget(key: int, token: str) -> None:
    _links.pop(key, None)
    link = _tokens.pop(token, None)
    if link is not None:
        try:
            _add(link, _HOLDERS, -link.claims)
        except (ImportError, AttributeError):
            pass        # at interpreter exit, with TorchDevice torn down


def _link(storage: Any, host: torch.Tensor, counter: torch.Tensor,
          token: str) -> _Link:
    link = _Link(storage, host, counter, token)
    _links[id(storage)] = link
    _tokens[token] = link
    weakref.finalize(storage, _forget, id(storage), token)
    _hook()
    return link


def _bytes_of(storage: Any) -> torch.Tensor:
    """The whole storage as bytes, where it is."""
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(
        storage)


def _as_words(data: torch.Tensor) -> torch.Tensor:
    """Bytes seen as the widest integers that tile them: torch compares
    int64 about eight times faster than uint8 (a message's cost while a
    large tensor is held, benchmarks/process_messages.py).  Integers, as
    floats would read NaN bytes as unequal to themselves."""
    n = data.numel()
    for dtype, width in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2)):
        if n % width == 0:
            return data.view(dtype)
    return data


def _on_host(tensor: torch.Tensor) -> torch.Tensor:
    from . import _patches
    to_host = _patches._originals.get("tensor_cpu", torch.Tensor.cpu)
    return to_host(tensor.detach())


def _send_link(storage: Any) -> _Link:
    """The sending side's link of `storage`, its host copy up to date."""
    link = _links.get(id(storage))
    if (link is not None and link.ref() is storage
            and storage.nbytes() == link.host.numel()):
        _flush(link, storage, resend=True)
        return link
    # (a storage resized since it was sent goes through a new copy)
    # In shared memory before anything reads them, so that the counter's
    # view is of the memory the other processes map (a tensor made without
    # a device is the accelerator's in mode "accelerate").
    host = _on_host(_bytes_of(storage)).share_memory_()
    counter = _on_host(torch.tensor([0, 1], dtype=torch.int64))
    return _link(storage, host, counter.share_memory_(), uuid.uuid4().hex)


def _flush(link: _Link, storage: Any, resend: bool = False) -> None:
    if int(link.shared[_GENERATION]) != link.seen:
        return          # the other side wrote last: this copy is the old one
    if int(link.shared[_HOLDERS]) <= 1 and not resend:
        return          # no other process holds it (until it is sent again)
    if storage.nbytes() != link.host.numel():
        return          # resized since: no longer the memory that was sent
    now = _on_host(_bytes_of(storage))
    if torch.equal(_as_words(now), _as_words(link.host)):
        return
    link.host.copy_(now)
    link.seen = _add(link, _GENERATION, 1)


def _refresh(link: _Link, storage: Any) -> None:
    current = int(link.shared[_GENERATION])
    if current == link.seen or storage.nbytes() != link.host.numel():
        return
    _bytes_of(storage).copy_(link.host)
    link.seen = current


def _each_link(step: Callable[[_Link, Any], None]) -> None:
    with torch.no_grad():
        for link in list(_links.values()):
            storage = link.ref()
            if storage is not None:
                step(link, storage)


def flush_all() -> None:
    """Before this process sends anything: its writes to linked storages
    into their host copies."""
    if _links:
        _each_link(_flush)


def refresh_all() -> None:
    """After this process received something: the other side's writes into
    its linked storages."""
    if _links:
        _each_link(_refresh)


def reduce_tensor(tensor: torch.Tensor) -> Tuple[Any, ...]:
    """ForkingPickler's reducer for tensors while TorchDevice is enabled."""
    assert _torch_reduce is not None
    device = tensor.device
    if (device.type in _NATIVE or tensor.layout != torch.strided
            or (tensor.requires_grad and not tensor.is_leaf)):
        return _torch_reduce(tensor)       # torch's own, errors included
    storage = tensor.untyped_storage()
    if getattr(storage, _SHARED, False):
        raise RuntimeError(_SHARED_MESSAGE.format(device=device.type))
    from . import _tdcore
    link = _send_link(storage)
    _add(link, _HOLDERS, 1)         # the receiver, counted before it reads
    return (_rebuild, (link.host, link.counter, link.token, str(device),
                       tensor.dtype, tuple(tensor.shape), tensor.stride(),
                       tensor.storage_offset(), tensor.requires_grad,
                       _tdcore.on_accelerator(tensor),
                       isinstance(tensor, torch.nn.Parameter)))


# What sends and receives between processes, hooked once a tensor is linked
# (a program that sends no device tensor keeps multiprocessing as it was).
# Every send pickles with ForkingPickler.dump (queues and pipes through its
# dumps, spawn's process arguments); receiving unpickles with
# ForkingPickler.loads (queues, simple queues, pipes, pools).
_saved: List[Tuple[Any, str, Any]] = []


def _hooks() -> Tuple[Callable[..., None], Callable[..., Any]]:
    """ForkingPickler's dump and loads while hooked.  They run in globals of
    their own (_patches.passthrough): what they pickle and unpickle reads
    its caller's module (a device pickles as the name the program asked
    for, and TorchDevice's frames would be the caller)."""
    from ._patches import passthrough
    dump, loads = pickle.Pickler.dump, pickle.loads
    flush, refresh = flush_all, refresh_all

    def dump_after_flush(self: Any, obj: Any) -> None:
        flush()
        dump(self, obj)

    def loads_then_refresh(*args: Any, **kwargs: Any) -> Any:
        obj = loads(*args, **kwargs)
        refresh()
        return obj

    return passthrough(dump_after_flush), passthrough(loads_then_refresh)


_dump, _loads = _hooks()


def _hook() -> None:
    if _saved:
        return              # hooked already
    _saved.append((ForkingPickler, "dump", ForkingPickler.__dict__.get("dump")))
    ForkingPickler.dump = _dump            # type: ignore[method-assign]
    _saved.append((ForkingPickler, "loads", ForkingPickler.__dict__.get("loads")))
    ForkingPickler.loads = staticmethod(_loads)  # type: ignore[assignment]


def _unhook() -> None:
    while _saved:
        owner, name, value = _saved.pop()
        if value is None:
            try:
                delattr(owner, name)
            except AttributeError:
                pass
        else:
            setattr(owner, name, value)


def _forget_links() -> None:
    """A forked child: its copies of the parent's tensors are not linked
    (the parent's links stay the parent's)."""
    _links.clear()
    _tokens.clear()
    _unhook()


os.register_at_fork(after_in_child=_forget_links)


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
    if _links:
        _hook()


def on_restore() -> None:
    """torch's reducer again."""
    global _registered
    if not _registered or _torch_reduce is None:
        return
    for cls in _classes():
        ForkingPickler.register(cls, _torch_reduce)
    _registered = False
    _unhook()
