"""Attention kernels a program picks for CUDA, where "cuda" is not CUDA.

``with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):`` (and the older
``torch.backends.cuda.sdp_kernel(...)``, which goes through it) restricts
``F.scaled_dot_product_attention`` to the kernels named.  A GPU has them
all; the CPU has only its own flash attention and the math kernel, MPS and
other accelerators the math kernel.  A choice that names none of the
device's kernels makes every attention call in it fail ("No viable backend
for scaled_dot_product_attention was found").  So where "cuda" lands on
another device, such a choice gets that device's kernels added (they
compute the same attention), with a ``redirected`` report row at the
``with`` line; a choice that names one of them is kept as it is.
torch.compile reaches the same function (dynamo calls it when it traces
the ``with``).  The flags ``torch.backends.cuda.enable_*_sdp()`` set one
by one are left alone (docs/policy.md, "Attention kernels").
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, List, Tuple

from . import _patches, _tdcore, _torch_compat

_API = "torch.nn.attention.sdpa_kernel"


def device_kernels(device_type: str) -> Tuple[str, ...]:
    """The SDPBackend names that have a kernel on `device_type`."""
    if device_type == "cuda":
        return ()               # all of them: nothing to add
    if device_type == "cpu":
        return ("FLASH_ATTENTION", "MATH")
    return ("MATH",)


def _names(backends: List[Any]) -> List[str]:
    return [getattr(b, "name", str(b)) for b in backends]


def _build(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _sdpa_kernel(backends: Iterable[Any], *args: Any,
                     **kwargs: Any) -> Any:
        if _patches.is_applied():
            backends = _with_device_kernels(backends)
        return original(backends, *args, **kwargs)
    return _sdpa_kernel


def _with_device_kernels(backends: Iterable[Any]) -> Iterable[Any]:
    from torch.nn.attention import SDPBackend
    kernels = device_kernels(_patches.landed_type())
    asked = list(backends) if isinstance(backends, (list, tuple, set)) \
        else [backends]
    names = _names(asked)
    # No kernel at all fails on CUDA too.
    if not kernels or not names or any(name in kernels for name in names):
        return backends
    chosen = asked + [getattr(SDPBackend, k) for k in kernels]
    _tdcore.record(_API, "redirected", ", ".join(names),
                   ", ".join(_names(chosen)))
    return chosen


def patches() -> List[Any]:
    from ._patches import Patch
    import torch.nn.attention as attention
    if _torch_compat.get("sdpa_kernel_flags") is None:
        return []
    return [Patch(attention, "_sdpa_kernel", _build)]
