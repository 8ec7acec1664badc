"""Checkpoints written on another accelerator load where TorchDevice runs.

``torch.save`` tags every storage with the device it lived on ("cuda:0" on an
NVIDIA machine, "mps" on a Mac).  ``torch.load`` hands each tag, or the tag
``map_location`` turns it into, to the deserializers of
``torch.serialization._package_registry`` in priority order; torch's own
"cuda" one (priority 20) refuses to run without a CUDA device.  TorchDevice
registers one deserializer ahead of it (priority 17; torch's "cpu" is 10)
that sends "cuda*" and "mps*" tags where the policy sends those devices.
``torch.load`` itself is not replaced, so every ``map_location`` form, the
``weights_only`` unpickler and ``mmap`` keep torch's own code paths.

Saving tags tensors with the device they really are on, except those the
program moved to the host, which mode "accelerate" keeps on the device:
those are tagged "cpu", as on CUDA.  A checkpoint written under TorchDevice
loads in a process without it.
"""
from __future__ import annotations

import contextvars
import functools
import weakref
from typing import Any, Dict, Optional, Set, Tuple

import torch

from . import _grammar, _patches, _tdcore, _torch_compat

PRIORITY = 17
_TAGS = ("cuda", "mps")

_registered = False


class _Load:
    """One torch.load call, so that its report rows count the call once,
    as every row counts calls, however many storages it loads."""
    __slots__ = ("recorded", "dtypes")

    def __init__(self) -> None:
        self.recorded: Set[Tuple[str, str]] = set()
        # (device, dtype saved) -> dtype made there, decided (and reported)
        # at the call's first such tensor
        self.dtypes: Dict[Tuple[Any, Any], Any] = {}

    def first(self, row: Tuple[str, str]) -> bool:
        """Whether this call has not recorded `row` yet (and now has)."""
        if row in self.recorded:
            return False
        self.recorded.add(row)
        return True


# The torch.load call restoring a storage, while it restores it.
_loading: "contextvars.ContextVar[Optional[_Load]]" = contextvars.ContextVar(
    "TorchDevice_loading", default=None)

# Each storage a torch.load call restored off the host, with that call: its
# tensors are rebuilt after the restore, outside it.
_load_of: "weakref.WeakKeyDictionary[Any, _Load]" = (
    weakref.WeakKeyDictionary())


def _tag(obj: Any) -> Optional[str]:
    """The tag torch.save writes for the storage `obj`: "cpu" for one the
    program moved to the host (`.cpu()`, `.to("cpu")`), which mode
    "accelerate" keeps on the device, as CUDA would write it, so the
    checkpoint loads where the program meant it to (on the host, also in a
    process without TorchDevice or an MPS device).  Anything else: None,
    and torch's taggers name the device it is really on."""
    if (_patches.is_applied()
            and getattr(obj, _patches.STORAGE_MARK, None) is False
            and obj.device.type != "cpu"):
        return "cpu"
    return None


def _deserialize(obj: Any, location: str) -> Any:
    """The storage `obj` (read onto the CPU) moved where the policy sends
    `location`, or None to let torch's own deserializers decide."""
    if not _patches.is_applied() or not location.startswith(_TAGS):
        return None
    kind = location.split(":", 1)[0]
    if kind not in _TAGS:          # e.g. "cudaX": torch reports it
        return None
    # The policy without side effects: torch.device() here would record a
    # "torch.device" row at the user's torch.load line, a call the user's
    # code never made.
    target, _ = _tdcore.trace_plan(location)
    if target is None or target.type == kind:
        return None                            # native: torch's own path
    load = _loading.get()
    if load is None or load.first((location, str(target))):
        _tdcore.record("torch.load", "redirected", location, str(target))
    if obj.device != target:
        # what torch's own "mps" deserializer does
        obj = obj.mps() if target.type == "mps" else obj.to(device=target)
    # Loaded onto "cuda" / "mps", the tensors are on the accelerator for
    # the program: their moves copy as CUDA's do (docs/policy.md).
    return _tdcore.mark_accelerator(obj)


def restore_location_builder(original: Any) -> Any:
    """torch.serialization._get_restore_location, which torch.load calls
    once per call: the restore function it returns tells `_deserialize`
    and `_rebuild_tensor` which call they serve.  A torch.device the
    program built for "cuda" reads as the device really used to torch's
    own code, so `map_location=torch.device("cuda")` loads through the
    host's deserializer, past `_deserialize`; the storages it makes are
    marked as those of `map_location="cuda"` are."""
    @functools.wraps(original)
    def _get_restore_location(map_location: Any) -> Any:
        restore = original(map_location)
        accelerator = (isinstance(map_location, torch.device)
                       and _tdcore.device_intent(map_location)
                       == "accelerator")
        load = _Load()

        def restore_location(storage: Any, location: str) -> Any:
            token = _loading.set(load)
            try:
                result = restore(storage, location)
            finally:
                _loading.reset(token)
            if accelerator:
                result = _tdcore.mark_accelerator(result)
            if (isinstance(result, torch.UntypedStorage)
                    and result.device.type != "cpu"):
                _load_of[result] = load
            return result
        return restore_location
    return _get_restore_location


# Each float64 storage loaded onto a device without float64, once made
# float32 there: the tensors of a checkpoint that share a storage (views,
# tied weights) share its float32 copy.
_narrowed: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def rebuild_tensor_builder(original: Any) -> Any:
    """torch._utils._rebuild_tensor, through which torch.load makes each
    tensor: an empty tensor of the storage's dtype on the storage's device,
    then `set_` over the storage.  A float64 (complex128) storage loaded
    onto a device without float64 made that tensor float32 and read the
    float64 bytes as float32: garbage.  The values are made float32
    instead, once per storage (docs/policy.md, "float64 on MPS")."""
    # torch.empty as the factory wrappers run it, under the name the
    # program called: the report row and a TORCHDEVICE_FLOAT64=error
    # message say "torch.load", not a torch.empty the program never wrote.
    plain_empty = _patches.unwrapped(torch.empty)
    load_empty = _patches.factory("torch.load", _grammar.FACTORY)(plain_empty)

    @functools.wraps(original)
    def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any,
                        stride: Any) -> Any:
        untyped = _torch_compat.untyped_storage_of(storage)
        if (storage.dtype not in _grammar.WIDE_DTYPES
                or untyped.device.type in ("cpu", "meta")):
            return original(storage, storage_offset, size, stride)
        # The float64 rule decides, at the program's torch.load line: a
        # float32 tensor (reported as torch.load's), or TypeError under
        # TORCHDEVICE_FLOAT64=error; once per torch.load call and device.
        load = _load_of.get(untyped)
        key = (untyped.device, storage.dtype)
        made = load.dtypes.get(key) if load is not None else None
        if made is None:
            t = load_empty((0,), dtype=storage.dtype, device=untyped.device)
            if load is not None:
                load.dtypes[key] = t.dtype
        else:
            t = plain_empty((0,), dtype=made, device=untyped.device)
        if t.dtype != storage.dtype:
            narrowed = _narrowed.get(untyped)
            if narrowed is None:
                narrowed = _narrow(untyped, storage.dtype, t.dtype)
                _narrowed[untyped] = narrowed
            untyped = narrowed
        return t.set_(untyped, storage_offset, size, stride)
    return _rebuild_tensor


def _narrow(untyped: Any, wide: Any, narrow: Any) -> Any:
    """The storage's values as `narrow` on its device, element for element
    (so offsets and strides stay valid), converted on the host and marked
    as the storage was."""
    from . import cpu_override
    with cpu_override():        # the host, also in mode "accelerate"
        host = torch.empty((0,), dtype=wide, device="cpu")
        values = host.set_(untyped.cpu()).to(narrow)
    narrowed = values.to(untyped.device).untyped_storage()
    setattr(narrowed, _patches.LOWERED_MARK, True)
    place = getattr(untyped, _patches.STORAGE_MARK, None)
    if place is not None:
        setattr(narrowed, _patches.STORAGE_MARK, place)
    return narrowed


def on_apply() -> None:
    """Registers the tagger and the deserializer once per process; they do
    nothing while TorchDevice is disabled (the registry has no way to
    remove them)."""
    global _registered
    if not _registered:
        torch.serialization.register_package(PRIORITY, _tag, _deserialize)
        _registered = True


def on_restore() -> None:
    pass
