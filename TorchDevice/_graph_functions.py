"""Torch functions a CUDA-graph capture must compute as CUDA does.

Some of torch's composite functions read a value back to the host on the
CPU (and on any device but CUDA and MPS) where CUDA's version reads
nothing: ``one_hot(x, num_classes=n)`` checks ``x.min()`` and ``x.max()``
on the host except on CUDA, which leaves the bounds to the scatter
kernel's own check.  Composite functions are split into their parts before
the capture's dispatch mode sees them, so the capture would see those reads
and refuse them (docs/masquerade.md, "CUDA graphs"), though the program's
block is legal on CUDA.  During a capture this mode computes them as CUDA
does.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch.overrides import TorchFunctionMode

_one_hot = torch.nn.functional.one_hot


def _one_hot_as_cuda(input: torch.Tensor, num_classes: int = -1) -> Any:
    tensor = input
    if (num_classes == -1 or not isinstance(tensor, torch.Tensor)
            or tensor.dtype != torch.long or tensor.numel() == 0):
        # Inferring the classes reads the maximum on CUDA too; the rest are
        # torch's own errors or read nothing.
        return _one_hot(tensor, num_classes)
    if num_classes < 1:
        raise RuntimeError("num_classes should be positive")
    zeros = torch.zeros((*tensor.shape, num_classes), dtype=torch.long,
                        device=tensor.device)
    # Out of place, so the result is right at capture as well as at replay;
    # an index out of range fails in scatter, as CUDA's device assert does.
    return zeros.scatter(-1, tensor.unsqueeze(-1), 1)


_AS_CUDA: Dict[Any, Callable[..., Any]] = {_one_hot: _one_hot_as_cuda}


class CaptureFunctions(TorchFunctionMode):
    """Active while a capture is underway on this thread."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: Optional[dict] = None) -> Any:
        as_cuda = _AS_CUDA.get(func)
        if as_cuda is not None:
            return as_cuda(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
