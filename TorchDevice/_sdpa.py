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
the ``with``).  The same holds for the flags a program sets one by one,
``torch.backends.cuda.enable_*_sdp()``: a call after which no kernel of
the device is on turns that device's kernels on (docs/policy.md,
"Attention kernels").
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


def _kernels_to_add(names: List[str]) -> Tuple[str, ...]:
    """The device's kernels where the kernels chosen (`names`) include
    none of them; () where they include one, or are none at all (which
    fails on CUDA too)."""
    kernels = device_kernels(_patches.landed_type())
    if not names or any(name in kernels for name in names):
        return ()
    return kernels


def _with_device_kernels(backends: Iterable[Any]) -> Iterable[Any]:
    from torch.nn.attention import SDPBackend
    asked = list(backends) if isinstance(backends, (list, tuple, set)) \
        else [backends]
    names = _names(asked)
    kernels = _kernels_to_add(names)
    if not kernels:
        return backends
    chosen = asked + [getattr(SDPBackend, k) for k in kernels]
    _tdcore.record(_API, "redirected", ", ".join(names),
                   ", ".join(_names(chosen)))
    return chosen


# torch.backends.cuda's switch for each kernel, and its reading.
_SWITCHES = {
    "FLASH_ATTENTION": ("enable_flash_sdp", "flash_sdp_enabled"),
    "EFFICIENT_ATTENTION": ("enable_mem_efficient_sdp",
                            "mem_efficient_sdp_enabled"),
    "MATH": ("enable_math_sdp", "math_sdp_enabled"),
    "CUDNN_ATTENTION": ("enable_cudnn_sdp", "cudnn_sdp_enabled"),
}


def _switch_builder(name: str) -> Callable[[Any], Any]:
    def build(original: Callable[[bool], None]) -> Callable[[bool], None]:
        @functools.wraps(original)
        def switch(enabled: bool) -> None:
            original(enabled)
            if _patches.is_applied():
                _keep_a_device_kernel(name)
        return switch
    return build


def _keep_a_device_kernel(api: str) -> None:
    """After a program's switch: if kernels are on but none of the
    device's, turns the device's on, as the ``with`` form adds them.  None
    on at all fails on CUDA too, and may be a step on the way to the
    program's choice: left alone."""
    import torch
    cuda = torch.backends.cuda
    on = [k for k, (_, reading) in _SWITCHES.items()
          if getattr(cuda, reading, lambda: False)()]
    kernels = _kernels_to_add(on)
    if not kernels:
        return
    for kernel in kernels:
        # Ours, if patched: it finds a device kernel on and stops there.
        getattr(cuda, _SWITCHES[kernel][0])(True)
    _tdcore.record("torch.backends.cuda." + api, "redirected",
                   ", ".join(on), ", ".join(on + list(kernels)))


def patches() -> List[Any]:
    from ._patches import Patch
    import torch.backends.cuda as cuda
    import torch.nn.attention as attention
    table = [Patch(cuda, name, _switch_builder(name))
             for name, _ in _SWITCHES.values() if hasattr(cuda, name)]
    if _torch_compat.get("sdpa_kernel_flags") is not None:
        table.append(Patch(attention, "_sdpa_kernel", _build))
    return table
