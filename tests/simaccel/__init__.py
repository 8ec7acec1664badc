"""The simulated accelerator, "simaccel": a real second device on any CPU machine.

Test infrastructure, never installed with TorchDevice.  torch's PrivateUse1
backend, renamed "simaccel", whose memory is host memory and whose operators
run torch's CPU kernels; see tests/simaccel/README.md.

    import simaccel                       # tests/ is on sys.path under pytest
    reason = simaccel.try_load(build=True)  # None once the device exists
    x = torch.ones(3, device="simaccel")

Loading is idempotent and process-wide: it loads the built library, renames
PrivateUse1 to "simaccel", registers `torch.simaccel` and the generated
`Tensor.simaccel()`, `Module.simaccel()`, `Tensor.is_simaccel` methods, and
applies the SIMACCEL_* environment settings.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from . import _build

NAME = "simaccel"

# Operators MPS lacked in recent releases (reported as NotImplementedError
# on the MPS operator coverage tracker for torch 2.6 to 2.8), named as they
# reach a backend.  A name without an overload means every overload.
DEFAULT_UNSUPPORTED_OPS = (
    "aten::linalg_qr.out",
    "aten::logspace.out",
    "aten::max_pool3d_with_indices",
    "aten::grid_sampler_3d",
)
# Operators MPS always runs on the CPU with its warning (its MPSFallback list).
DEFAULT_CPU_ONLY_OPS = (
    "aten::linalg_svd",
    "aten::linalg_svd.U",
    "aten::embedding_renorm_",
    "aten::col2im",
    "aten::upsample_nearest3d.vec",
)

_ON = ("1", "true", "yes", "on")
_lock = threading.Lock()
_loaded = False
_failure: str | None = None
_mps_rules = False
_unsupported: tuple[str, ...] = DEFAULT_UNSUPPORTED_OPS
_cpu_only: tuple[str, ...] = DEFAULT_CPU_ONLY_OPS


class Unavailable(RuntimeError):
    """The simulated accelerator cannot be loaded here; str() says why."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _ON


def _env_ops(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = os.environ.get(name)
    if value is None:
        return default
    return tuple(part.strip() for part in value.split(",") if part.strip())


def is_loaded() -> bool:
    return _loaded


def load(*, build: bool = False) -> None:
    """Makes the "simaccel" device exist in this process (idempotent).

    build=True first builds or refreshes the library (minutes, once);
    otherwise a missing or stale build is an error.  Raises Unavailable
    with the reason when the device cannot be had.
    """
    global _loaded, _failure
    with _lock:
        if _loaded:
            return
        try:
            _load(build)
        except Unavailable as exc:
            _failure = str(exc)
            raise
        _loaded = True
        _failure = None


def try_load(*, build: bool = False) -> str | None:
    """load(), returning None on success or the reason it failed."""
    try:
        load(build=build)
    except Unavailable as exc:
        return str(exc)
    return None


def real_accelerator() -> str | None:
    """The type of the accelerator torch itself found (CUDA, MPS, ...), or
    None.  Asked of torch's C function, which TorchDevice does not answer
    for: on a CPU-only machine TorchDevice tells the program CUDA is there."""
    import torch

    ask = getattr(torch._C, "_accelerator_getAccelerator", None)
    found = ask() if ask is not None else None
    if found is None or found.type in ("privateuseone", NAME):
        return None
    # A build for an accelerator names it where none is present (a CUDA
    # build of torch on a machine without a GPU): no device, none there.
    count = getattr(torch._C, "_accelerator_hooks_device_count", None)
    if count is not None and count() == 0:
        return None
    return found.type


def _load(build: bool) -> None:
    import torch

    taken = torch._C._get_privateuse1_backend_name()
    if taken not in ("privateuseone", NAME):
        raise Unavailable(f"torch's PrivateUse1 backend is already taken by {taken!r}")
    real = real_accelerator()
    if real is not None:
        # torch keeps one accelerator per process: with a second one its
        # autograd engine finds no stream for CUDA's tensors (an internal
        # assert) and an int device names the wrong kind (seen on an H200).
        raise Unavailable(f"this machine has a real accelerator ({real}); the simulated "
                          "one stands in only where there is none")
    if build:
        try:
            _build.build()
        except RuntimeError as exc:
            raise Unavailable(f"the simulated accelerator could not be built: {exc}") from exc
    stale = _build.stale_reason()
    if stale is not None:
        raise Unavailable(stale)
    try:
        torch.ops.load_library(str(_build.library_path()))
    except (OSError, RuntimeError) as exc:
        raise Unavailable(f"the simulated accelerator's library did not load: {exc}") from exc

    from . import _device

    # Resolved once, now: torch.ops builds an operator's Python object on
    # first use, through torch.jit's private builtins table, which a
    # program (or a test of missing private names) may have removed later.
    for op in ("device_count", "default_generator", "memory_stats",
               "reset_peak_memory_stats", "reset_accumulated_memory_stats",
               "fallback_enabled", "set_fallback_enabled", "set_mps_rules",
               "set_op_lists"):
        getattr(torch.ops.simaccel, op)

    if taken != NAME:
        torch.utils.rename_privateuse1_backend(NAME)
    if not hasattr(torch, NAME):
        torch._register_device_module(NAME, _device)
    if not hasattr(torch.Tensor, NAME):
        torch.utils.generate_methods_for_privateuse1_backend(
            for_tensor=True, for_module=True, for_packed_sequence=True, for_storage=True)

    global _unsupported, _cpu_only
    _unsupported = _normalise(_env_ops("SIMACCEL_UNSUPPORTED_OPS", DEFAULT_UNSUPPORTED_OPS))
    _cpu_only = _normalise(_env_ops("SIMACCEL_CPU_ONLY_OPS", DEFAULT_CPU_ONLY_OPS))
    mps_rules = _env_flag("SIMACCEL_MPS_RULES")
    # Behaving like MPS, the device also reads MPS's own variable, which
    # TorchDevice's launcher sets for a device with MPS's capability record.
    torch.ops.simaccel.set_fallback_enabled(
        _env_flag("SIMACCEL_ENABLE_FALLBACK")
        or (mps_rules and _env_flag("PYTORCH_ENABLE_MPS_FALLBACK")))
    _apply_mps_rules(mps_rules)


def _require() -> None:
    if not _loaded:
        raise Unavailable(_failure or "the simulated accelerator is not loaded (simaccel.load())")


# ------------------------------------------------------- "behave like MPS"

def _normalise(names: Iterable[str]) -> tuple[str, ...]:
    """'aten::op.overload' or 'op' -> 'op.overload' / every overload of 'op'."""
    import torch

    out: list[str] = []
    for raw in names:
        name = raw.strip().removeprefix("aten::")
        base, _, overload = name.partition(".")
        packet = getattr(torch.ops.aten, base, None)
        if packet is None or not hasattr(packet, "overloads"):
            raise ValueError(f"simaccel: no operator aten::{name}")
        if overload:
            if overload not in packet.overloads():
                raise ValueError(f"simaccel: no operator aten::{name}")
            candidates = [base if overload == "default" else name]
        else:
            candidates = [base if o == "default" else f"{base}.{o}" for o in packet.overloads()]
        out.extend(c for c in candidates if c not in out)
    return tuple(out)


# torch's own code that avoids float64 on MPS by naming MPS: printing a
# tensor (torch._tensor_str.tensor_totype) and GradScaler.unscale_ (its
# inverse scale).  While the device refuses float64 it is named there too,
# or those would raise where they work on MPS.
_torch_totype: Any = None
_torch_unscale: Any = None


def _printing_totype(t: Any) -> Any:
    """torch._tensor_str.tensor_totype: torch prints MPS (and XPU without
    float64) tensors through float32."""
    import torch

    if t.device.type == NAME:
        return t.to(dtype=torch.float)
    return _torch_totype(t)


def _unscale(self: Any, optimizer: Any) -> Any:
    """GradScaler.unscale_: torch takes the inverse of the scale in float64
    except on MPS.  Taken on a host copy of the scale here (the same value:
    the scale is a power of two); the gradients stay on the device."""
    import torch

    # A disabled scaler never made its scale: torch's own returns at once.
    scale = getattr(self, "_scale", None)
    if scale is None or scale.device.type != NAME:
        return _torch_unscale(self, optimizer)
    # The copy by torch's own operator: a program's `.cpu()` may be
    # redirected (TorchDevice sends "cpu" to the accelerator by default).
    self._scale = torch.ops.aten._to_copy.default(scale, device="cpu")
    try:
        return _torch_unscale(self, optimizer)
    finally:
        self._scale = scale


def _apply_mps_rules(enabled: bool) -> None:
    import torch
    import torch._tensor_str as tensor_str
    from torch.amp import grad_scaler

    global _mps_rules, _torch_totype, _torch_unscale
    torch.ops.simaccel.set_mps_rules(enabled)
    if enabled:
        torch.ops.simaccel.set_op_lists(list(_unsupported), list(_cpu_only))
    else:
        torch.ops.simaccel.set_op_lists([], [])
    if _torch_totype is None:
        _torch_totype = tensor_str.tensor_totype
        _torch_unscale = grad_scaler.GradScaler.unscale_
    tensor_str.tensor_totype = _printing_totype if enabled else _torch_totype
    grad_scaler.GradScaler.unscale_ = _unscale if enabled else _torch_unscale
    _mps_rules = enabled


def set_mps_rules(enabled: bool) -> None:
    """The "behave like MPS" switch (SIMACCEL_MPS_RULES=1 at load time).

    On: float64 tensors are refused on the device with MPS's TypeError;
    unsupported_ops() raise NotImplementedError as on MPS unless
    set_fallback_enabled(True); cpu_only_ops() run on the host with MPS's
    fallback warning.
    """
    _require()
    with _lock:
        _apply_mps_rules(bool(enabled))


def mps_rules() -> bool:
    return _mps_rules


def set_unsupported_ops(names: Iterable[str]) -> None:
    """Operators that behave as missing on MPS (SIMACCEL_UNSUPPORTED_OPS,
    comma-separated, at load time).  "aten::op.overload", or "aten::op" for
    every overload; "aten::" may be left out.  ValueError for unknown ones."""
    _require()
    global _unsupported
    with _lock:
        _unsupported = _normalise(names)
        _apply_mps_rules(_mps_rules)


def unsupported_ops() -> tuple[str, ...]:
    return tuple(f"aten::{n}" for n in _unsupported)


def set_cpu_only_ops(names: Iterable[str]) -> None:
    """Operators MPS always runs on the CPU with a warning
    (SIMACCEL_CPU_ONLY_OPS at load time); names as for set_unsupported_ops."""
    _require()
    global _cpu_only
    with _lock:
        _cpu_only = _normalise(names)
        _apply_mps_rules(_mps_rules)


def cpu_only_ops() -> tuple[str, ...]:
    return tuple(f"aten::{n}" for n in _cpu_only)


def set_fallback_enabled(enabled: bool) -> None:
    """Our PYTORCH_ENABLE_MPS_FALLBACK (SIMACCEL_ENABLE_FALLBACK=1 at load
    time): unsupported operators run on the host with a UserWarning."""
    _require()
    import torch

    torch.ops.simaccel.set_fallback_enabled(bool(enabled))


def fallback_enabled() -> bool:
    _require()
    import torch

    return bool(torch.ops.simaccel.fallback_enabled())


# The fallback warning, for whoever counts fallbacks per operator: group 1
# is the operator ("aten::name" or "aten::name.overload").
FALLBACK_WARNING_PATTERN = (r"The operator '([^']+)' is not currently supported on the "
                            r"simaccel backend and will fall back to run on the CPU\.")


def memory_stats(device: int = 0) -> dict[str, int]:
    """Bytes and blocks the device allocator counts: current, peak, total
    allocated and total freed."""
    _require()
    import torch

    values = list(torch.ops.simaccel.memory_stats(device))
    keys = [f"{kind}.{field}" for kind in ("bytes", "blocks")
            for field in ("current", "peak", "allocated", "freed")]
    return dict(zip(keys, values))
