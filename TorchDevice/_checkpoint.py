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

Saving is untouched: tensors are tagged with the device they really are on,
so a checkpoint written under TorchDevice loads in a process without it.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import torch

from . import _patches, _tdcore

PRIORITY = 17
_TAGS = ("cuda", "mps")

_registered = False


def _tag(obj: Any) -> Optional[str]:
    return None        # torch's taggers name the real device


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
    _tdcore.record("torch.load", "redirected", location, str(target))
    if obj.device != target:
        # what torch's own "mps" deserializer does
        obj = obj.mps() if target.type == "mps" else obj.to(device=target)
    # Loaded onto "cuda" / "mps", the tensors are on the accelerator for
    # the program: their moves copy as CUDA's do (docs/policy.md).
    return _tdcore.mark_accelerator(obj)


def restore_location_builder(original: Any) -> Any:
    """torch.serialization._get_restore_location: a torch.device the program
    built for "cuda" reads as the device really used to torch's own code, so
    `map_location=torch.device("cuda")` loads through the host's
    deserializer, past `_deserialize`; the storages it makes are marked as
    those of `map_location="cuda"` are."""
    @functools.wraps(original)
    def _get_restore_location(map_location: Any) -> Any:
        restore = original(map_location)
        if (not isinstance(map_location, torch.device)
                or _tdcore.device_intent(map_location) != "accelerator"):
            return restore

        def restore_location(storage: Any, location: str) -> Any:
            return _tdcore.mark_accelerator(restore(storage, location))
        return restore_location
    return _get_restore_location


def on_apply() -> None:
    """Registers the deserializer once per process; it does nothing while
    TorchDevice is disabled (the registry has no way to remove one)."""
    global _registered
    if not _registered:
        torch.serialization.register_package(PRIORITY, _tag, _deserialize)
        _registered = True


def on_restore() -> None:
    pass
