"""Activation checkpointing's random state on the device "cuda" lands on.

torch.utils.checkpoint recomputes a checkpointed block in the backward pass
and, with ``preserve_rng_state=True`` (its default), replays the random
state the forward pass started from, so that dropout draws the same mask
twice.  It saves the device's state only where the device's module says it
is initialised (``torch.cuda._initialized``); ``torch.mps`` and the module
of a PrivateUse1 backend have no such attribute, so their state is not
saved, the recomputation draws a new dropout mask, and the gradients belong
to a forward pass that never happened, without an error.  A CUDA program
whose "cuda" lands on such a device computed other gradients than on CUDA.

So where "cuda" lands on a device whose module lacks it, checkpoint is
handed that module with what it asks of torch.cuda: ``_initialized``, and
``device(index)`` (a no-op where the module has no device context: MPS has
one device).  The random state itself is the device's own
(``get_rng_state`` / ``set_rng_state``).  Profiles cuda and cpu are left as
they are (CUDA's module has the attribute; the host's state is always
saved).  docs/policy.md, "Random numbers in recomputed blocks".
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, List

from . import _patches, _tdcore, _torch_compat


class _StashingModule:
    """A device module as torch.utils.checkpoint reads torch.cuda."""

    _initialized = True

    def __init__(self, module: Any) -> None:
        self._module = module

    def device(self, index: Any) -> Any:
        context = getattr(self._module, "device", None)
        if callable(context):
            return context(index)
        return contextlib.nullcontext()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _stashes_without_help(module: Any) -> bool:
    return hasattr(module, "_initialized") or not (
        hasattr(module, "get_rng_state") and hasattr(module, "set_rng_state"))


def _device_module_builder(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _get_device_module(device: Any = "cuda") -> Any:
        module = original(device)
        if (device == _patches.landed_type()
                and not _stashes_without_help(module)):
            return _StashingModule(module)
        return module
    return _get_device_module


def patches() -> List[Any]:
    # Asked for on every profile, so that a torch without the name is
    # reported wherever it is.
    if _torch_compat.get("checkpoint_device_module") is None:
        return []
    if _tdcore.settings()["profile"] in ("cuda", "cpu"):
        return []
    import torch.utils.checkpoint as checkpoint
    return [_patches.Patch(checkpoint, "_get_device_module",
                           _device_module_builder)]
