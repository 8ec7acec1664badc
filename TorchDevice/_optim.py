"""Optimizers built with ``capturable=True``, where "cuda" is not CUDA.

``capturable=True`` keeps an optimizer's step count and bias corrections
in tensors on the parameters' device, so that ``step()`` never reads a
value back to the host (what CUDA graph capture needs).  torch allows it
only on the device types in ``_get_capturable_supported_devices()``: CUDA,
XPU, HPU, XLA and the PrivateUse1 backend, not the CPU or MPS.  A CUDA
program that asks for it then fails at its first ``step()`` where "cuda"
lands on either ("params and state_steps must be on supported devices").

The tensor-valued path is plain tensor arithmetic and computes on every
device, so on every profile but cuda the device type "cuda" lands on is
added to that list, in each optimizer module that imported the function
(docs/policy.md, "Optimizers with capturable=True").  The program then
takes the same path it takes on CUDA.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, List

import torch

from . import _patches, _tdcore, _torch_compat


def _with_landed(devices: List[str]) -> List[str]:
    if _patches.is_applied():
        landed = _patches.landed_type()
        if landed not in devices:
            return devices + [landed]
    return devices


def _build(original: Callable[..., List[str]]) -> Callable[..., List[str]]:
    # Optimizers scripted by torch (torch.distributed.optim) compile their
    # callees, this one too: TorchScript compiles torch's original and
    # leaves out the branch for Python (its check is for eager steps).
    def _get_capturable_supported_devices(supports_xla: bool = True
                                          ) -> List[str]:
        devices = original(supports_xla)
        if not torch.jit.is_scripting():
            devices = _with_landed(devices)
        return devices
    _get_capturable_supported_devices.__doc__ = original.__doc__
    return _get_capturable_supported_devices


def patches() -> List[Any]:
    from ._patches import Patch
    original = _torch_compat.get("capturable_devices")
    if original is None or _tdcore.settings()["profile"] == "cuda":
        return []
    # Each optimizer module holds its own reference (``from .optimizer
    # import _get_capturable_supported_devices``); torch.optim imports them
    # all, so the set is complete once torch.optim is.
    import torch.optim  # noqa: F401
    owners = [module for name, module in sorted(sys.modules.items())
              if name.startswith("torch.optim.") and module is not None
              and getattr(module, "_get_capturable_supported_devices",
                          None) is original]
    return [Patch(module, "_get_capturable_supported_devices", _build)
            for module in owners]
