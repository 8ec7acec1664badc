"""DataLoader worker processes stay on the CPU.

A worker is a child process that only prepares host data; MPS and CUDA
contexts do not survive ``fork`` and a worker that allocates on the
accelerator competes with the training process for it.  So TorchDevice turns
the CPU override on in every worker before the user's dataset code runs:
factories without a device (or with "cpu") stay on the host there, whatever
the mode.  The loop function torch starts workers with is replaced by one
that does this and then runs torch's own; it is a module-level function, so
``spawn`` and ``forkserver`` workers pickle it by reference (and importing
it there enables TorchDevice in the child, with the parent's environment).

Pinned memory: on the cpu profile there is nothing to pin, so
``Tensor.pin_memory`` is the identity and ``is_pinned`` is False (the core's
PIN_MEMORY wrapper), ``.cuda(non_blocking=True)`` is an ordinary redirected
move, and the DataLoader, which asks torch.accelerator as torch's own code
(told the truth), does not pin either: ``pin_memory=True`` behaves the same
at every level.  torch's warning that "no accelerator is found" would
contradict what the program was told (CUDA is available), so while
TorchDevice is enabled on that profile that one warning is filtered
(docs/compile-checkpoints-distributed.md).
"""
from __future__ import annotations

import warnings
from typing import Any, List, Optional, Tuple

from . import _tdcore, _torch_compat

# torch's loop, found when the patch table is built.
_original_loop: Any = None


def worker_loop(*args: Any, **kwargs: Any) -> Any:
    """torch.utils.data's worker loop, with the CPU override on."""
    _tdcore.set_cpu_override(True)
    assert _original_loop is not None    # only installed when found
    return _original_loop(*args, **kwargs)


def patches() -> List[Any]:
    from ._patches import Patch
    worker = _torch_compat.get("worker_loop_module")
    if worker is None or not _torch_compat.has("worker_loop"):
        return []

    def build(original: Any) -> Any:
        global _original_loop
        _original_loop = original
        worker_loop.__wrapped__ = original  # type: ignore[attr-defined]
        return worker_loop
    return [Patch(worker, "_worker_loop", build)]


# The one torch warning that contradicts the announced device, by message
# and by the module that issues it (warnings.filters entry, or None).
_PIN_MESSAGE = r"'pin_memory' argument is set as true but no accelerator"
_PIN_MODULE = r"torch\.utils\.data\.dataloader\Z"
_pin_filter: Optional[Tuple[Any, ...]] = None


def on_apply() -> None:
    """Filters torch's "no accelerator is found" pinning warning on the cpu
    profile (MPS and CUDA have an accelerator: torch's messages stay)."""
    global _pin_filter
    if _pin_filter is not None or _tdcore.settings()["profile"] != "cpu":
        return
    warnings.filterwarnings("ignore", message=_PIN_MESSAGE,
                            category=UserWarning, module=_PIN_MODULE)
    _pin_filter = warnings.filters[0]


def on_restore() -> None:
    global _pin_filter
    if _pin_filter is None:
        return
    try:
        warnings.filters.remove(_pin_filter)
        warnings._filters_mutated()   # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        pass    # the application reset the filters itself
    _pin_filter = None
