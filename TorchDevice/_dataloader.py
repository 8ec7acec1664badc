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

import torch.utils.data._utils.worker as _worker

from . import _tdcore

_original_loop = _worker._worker_loop


def worker_loop(*args: Any, **kwargs: Any) -> Any:
    """torch.utils.data's worker loop, with the CPU override on."""
    _tdcore.set_cpu_override(True)
    return _original_loop(*args, **kwargs)


worker_loop.__wrapped__ = _original_loop  # type: ignore[attr-defined]


def patches() -> List[Any]:
    from ._patches import Patch
    return [Patch(_worker, "_worker_loop", lambda orig: worker_loop)]
