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

Pinned memory needs no help: ``Tensor.pin_memory`` is already the identity
where there is no accelerator (the core's PIN_MEMORY wrapper), and
``.cuda(non_blocking=True)`` is an ordinary redirected move.
"""
from __future__ import annotations

from typing import Any, List

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
