"""Automatic mixed precision for the device really used (docs/masquerade.md,
"AMP").

``torch.autocast("cuda")``, ``torch.amp.GradScaler("cuda")`` and the
autocast state functions take a device *type*.  Where the policy redirects
that type (``"cuda"`` on profiles cpu and mps, ``"mps"`` on profiles cpu
and cuda), the replacements below call torch's own with the type really
used, and autocast gets a dtype that device computes well:

* ``float32`` stays ``float32`` (CUDA autocast accepts it and then computes
  in float32; torch's CPU autocast would refuse it and disable itself, so the
  region is opened with a dtype it accepts and then given float32, which its
  kernels honour: the numbers are those of plain float32);
* ``bfloat16`` stays ``bfloat16`` where the device computes it, else
  ``float32``;
* ``float16`` (CUDA's default) becomes what the device computes fastest
  without losing range: on the CPU ``bfloat16`` where it has bfloat16
  arithmetic, ``float32`` elsewhere; on MPS and CUDA ``float16``.
  ``TORCHDEVICE_KEEP_FLOAT16=1`` keeps ``float16`` everywhere.

Every change of dtype is recorded (report ``dtype`` row) and logged at INFO.

The replacements are plain Python functions with torch's names, docs and
signatures (``functools.wraps``), so ``torch.compile`` inlines them: the
type table is a module global that dynamo reads (and guards on), and the
originals they call are torch's own, which dynamo already knows.
"""
from __future__ import annotations

import functools
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from . import _capabilities, _tdcore, _torch_compat

# Device type the program names -> device type that runs it; filled by
# install() from the policy.  Empty while TorchDevice is disabled.
_TYPES: Dict[str, str] = {}
# Requested autocast dtype -> the one used, per program device type.
_DTYPES: Dict[str, Dict[Any, Any]] = {}
# Autocast's default dtype for each program device type (CUDA and MPS:
# float16), or what the program set with torch.set_autocast_dtype.
_DEFAULTS: Dict[str, Any] = {}
# Dtypes torch's autocast accepts on each real device type.
_ACCEPTED: Dict[str, Tuple[Any, ...]] = {}

_originals: Dict[str, Any] = {}
_built: Dict[str, Any] = {}


# ---- what float16 becomes -------------------------------------------------


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("flags", "features")):
                    return line.split(":", 1)[1]
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                                 capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return ""
        return "bf16" if out.stdout.strip() == "1" else ""
    return ""


def cpu_has_bfloat16(flags: Optional[str] = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware (x86: AVX512-BF16 or
    AMX-BF16; Arm: the BF16 extension)."""
    words = set((_cpu_flags() if flags is None else flags).split())
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def float16_choice(target: str, keep: bool, bf16_fast: bool,
                   bf16_ok: bool = True,
                   record: Optional[_capabilities.Capabilities] = None) -> Any:
    """What CUDA's float16 autocast becomes on `target` (docs/policy.md):
    its capability record says (by default the record of that device
    type's own profile)."""
    record = record or _record_of(target)
    if keep or record.float16_autocast == "float16":
        return torch.float16
    return torch.bfloat16 if bf16_fast and bf16_ok else torch.float32


def _record_of(target: str) -> _capabilities.Capabilities:
    return _capabilities.RECORDS.get(target,
                                     _capabilities.RECORDS["accelerator"])


def dtype_table(target: str, keep_float16: bool, bf16_fast: bool,
                bf16_ok: bool,
                record: Optional[_capabilities.Capabilities] = None
                ) -> Dict[Any, Any]:
    """Requested autocast dtype -> dtype used on `target`."""
    record = record or _record_of(target)
    table = {
        torch.float32: torch.float32,
        torch.bfloat16: torch.bfloat16 if bf16_ok else torch.float32,
        torch.float16: float16_choice(target, keep_float16, bf16_fast,
                                      bf16_ok, record),
    }
    if not record.float64:
        table[torch.float64] = torch.float32   # e.g. MPS has none
    return table


# ---- the replacements -----------------------------------------------------


def _record(api: str, what: str, source: Any, target: Any,
            obj: Any = None) -> None:
    """A call-site record (when recording is on; never while compiling).
    Recording is on whenever the log shows INFO, and a record is logged
    once per call site: an autocast region entered at every training step
    logs one line.  `obj`, the instance being built, names the API the
    program wrote: torch.cuda.amp's autocast and GradScaler are subclasses
    whose __init__ calls torch.amp's with "cuda", and a row saying
    `torch.autocast` at a line that says `torch.cuda.amp.autocast` sends
    the reader looking for a call that is not there."""
    if _tdcore.get_report() and not torch.compiler.is_compiling():
        # A program's own subclass is named after its torch base.
        for cls in type(obj).__mro__ if obj is not None else ():
            if cls.__module__.startswith("torch."):
                if cls.__module__.startswith("torch.cuda.amp."):
                    api = "torch.cuda.amp." + cls.__name__
                break
        _tdcore.record(api, what, str(source), str(target))


def _redirected(device_type: Any) -> Optional[str]:
    if type(device_type) is not str:
        return None
    return _TYPES.get(device_type)


def _autocast_init(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, device_type: str, dtype: Any = None,
                 enabled: bool = True,
                 cache_enabled: Optional[bool] = None) -> None:
        target = _redirected(device_type)
        if target is None:
            original(self, device_type, dtype, enabled, cache_enabled)
            return
        want = _DEFAULTS.get(device_type) if dtype is None else dtype
        used = _DTYPES[device_type].get(want, want)
        accepted = _ACCEPTED.get(target)
        if accepted is None or used in accepted:
            original(self, target, used, enabled, cache_enabled)
        else:
            # float32 on the CPU: open the region with a dtype its autocast
            # accepts, then compute in float32 (its kernels honour it).
            original(self, target, accepted[0], enabled, cache_enabled)
            self.fast_dtype = used
        _record("torch.autocast", "redirected", device_type, target, self)
        if used is not want and enabled:
            # A disabled region computes in the program's dtypes.
            _record("torch.autocast", "dtype", want, used, self)
    return __init__


def _scaler_init(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, device: str = "cuda", init_scale: float = 2.0**16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        target = _redirected(device)
        if target is not None:
            _record("torch.amp.GradScaler", "redirected", device, target,
                    self)
        original(self, device if target is None else target, init_scale,
                 growth_factor, backoff_factor, growth_interval, enabled)
    return __init__


def _is_enabled(original: Callable[..., bool]) -> Callable[..., bool]:
    @functools.wraps(original)
    def is_autocast_enabled(*args: Any, **kwargs: Any) -> bool:
        if not args and not kwargs:
            # No argument means CUDA's state.
            target = _TYPES.get("cuda")
            return original() if target is None else original(target)
        if args:
            target = _redirected(args[0])
            if target is not None:
                args = (target,) + args[1:]
        elif "device_type" in kwargs:
            target = _redirected(kwargs["device_type"])
            if target is not None:
                kwargs = dict(kwargs, device_type=target)
        return original(*args, **kwargs)
    return is_autocast_enabled


def _first_arg(original: Callable[..., Any]) -> Callable[..., Any]:
    """set_autocast_enabled(device_type, enabled), and its older form
    set_autocast_enabled(enabled), which sets CUDA's."""
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        if "device_type" not in kwargs and (
                (len(args) == 1 and not isinstance(args[0], str))
                or (not args and "enabled" in kwargs)):
            target = _TYPES.get("cuda")
            if target is not None:
                enabled = args[0] if args else kwargs["enabled"]
                _enabled_outside_a_region("cuda", target, enabled)
                return original(target, enabled)
            return original(*args, **kwargs)
        if args:
            target = _redirected(args[0])
            if target is not None:
                _enabled_outside_a_region(
                    args[0], target,
                    args[1] if len(args) > 1 else kwargs.get("enabled"))
                args = (target,) + args[1:]
        elif "device_type" in kwargs:
            target = _redirected(kwargs["device_type"])
            if target is not None:
                _enabled_outside_a_region(kwargs["device_type"], target,
                                          kwargs.get("enabled"))
                kwargs = dict(kwargs, device_type=target)
        return original(*args, **kwargs)
    return call


# The real type's autocast dtype before set_autocast_enabled switched a
# redirected type's autocast on outside a region, to be set back when it
# switches it off.
_SAVED: Dict[str, Any] = {}


def _enabled_outside_a_region(source: str, target: str, enabled: Any) -> None:
    """Autocast switched on with no region computes in the program type's
    dtype on CUDA (float16, or what the program set), which becomes what
    the table says; the real type's own default (the CPU's bfloat16) is not
    it.  The real type's dtype is set back when autocast is switched off."""
    if type(enabled) is not bool or torch.compiler.is_compiling():
        return
    on = _originals["is_autocast_enabled"](target)
    if enabled and not on:
        _SAVED[target] = _originals["get_autocast_dtype"](target)
        want = _DEFAULTS.get(source)
        _originals["set_autocast_dtype"](target,
                                         _DTYPES[source].get(want, want))
    elif not enabled and on and target in _SAVED:
        _originals["set_autocast_dtype"](target, _SAVED.pop(target))


def _default_dtype(device_type: str, api: str) -> Any:
    """What a region of `device_type` opened without a dtype computes in,
    the getters' answer outside a region.  Where that is not what the
    program's device type computes in (CUDA's float16), the answer is a
    dtype row at the caller's line, as the region's would be: code that
    hands the answer on, `autocast("cuda", dtype=get_autocast_gpu_dtype())`
    as mmengine writes it, asks for the new dtype itself, so its region
    has no row to show the change."""
    want = _DEFAULTS.get(device_type)
    used = _DTYPES[device_type].get(want, want)
    if used is not want:
        _record(api, "dtype", want, used)
    return used


def _get_dtype(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_autocast_dtype(*args: Any, **kwargs: Any) -> Any:
        device_type = args[0] if args else kwargs.get("device_type")
        target = _redirected(device_type)
        if target is None:
            return original(*args, **kwargs)
        if _originals["is_autocast_enabled"](target):
            return original(target)      # inside a region: its dtype
        return _default_dtype(device_type, "torch.get_autocast_dtype")
    return get_autocast_dtype


def _set_dtype(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def set_autocast_dtype(*args: Any, **kwargs: Any) -> Any:
        device_type = args[0] if args else kwargs.get("device_type")
        dtype = args[1] if len(args) > 1 else kwargs.get("dtype")
        target = _redirected(device_type)
        if target is None:
            return original(*args, **kwargs)
        table = _DTYPES[device_type]
        meant = _DEFAULTS.get(device_type)
        # Inside a region the dtype set is the region's: on CUDA its
        # __exit__ sets back the dtype it found, so it is not the program's
        # default afterwards (torch.compile saves and restores the dtype
        # around every graph; inside a bfloat16 region that once made every
        # later default region bfloat16).  Outside, setting back what
        # get_autocast_dtype answers keeps what the program meant: storing
        # the answer would turn CUDA's float16 into the target's dtype for
        # good (keep_float16 then ignored, the rewrite no longer reported).
        if (not _originals["is_autocast_enabled"](target)
                and dtype is not table.get(meant, meant)):
            _DEFAULTS[device_type] = dtype
        used = table.get(dtype, dtype)
        if used is not dtype:
            _record("torch.set_autocast_dtype", "dtype", dtype, used)
        return original(target, used)
    return set_autocast_dtype


def _deprecated(name: str, instead: str) -> None:
    """torch's warning for its deprecated name, at the caller's line."""
    warnings.warn(f"{name} is deprecated. Please use {instead} instead.",
                  DeprecationWarning, stacklevel=3)


def _gpu_dtype_getter(original: Callable[..., Any]) -> Callable[..., Any]:
    """torch.get_autocast_gpu_dtype(): CUDA's autocast dtype, deprecated for
    get_autocast_dtype("cuda"), whose answer it gives."""
    @functools.wraps(original)
    def get_autocast_gpu_dtype() -> Any:
        if not torch.compiler.is_compiling():   # dynamo folds torch's
            _deprecated("torch.get_autocast_gpu_dtype()",
                        "torch.get_autocast_dtype('cuda')")
        target = _TYPES.get("cuda")
        if target is None or _originals["is_autocast_enabled"](target):
            return replacement("get_autocast_dtype")("cuda")
        return _default_dtype("cuda", "torch.get_autocast_gpu_dtype")
    return get_autocast_gpu_dtype


def _gpu_dtype_setter(original: Callable[..., Any]) -> Callable[..., Any]:
    """torch.set_autocast_gpu_dtype(dtype): set_autocast_dtype("cuda", dtype)
    under its deprecated name."""
    @functools.wraps(original)
    def set_autocast_gpu_dtype(dtype: Any) -> Any:
        if not torch.compiler.is_compiling():
            _deprecated("torch.set_autocast_gpu_dtype(dtype)",
                        "torch.set_autocast_dtype('cuda', dtype)")
        return replacement("set_autocast_dtype")("cuda", dtype)
    return set_autocast_gpu_dtype


def _cast_builder(original: Callable[..., Any]) -> Callable[..., Any]:
    """torch.amp.autocast_mode._cast(value, device_type, dtype), what
    custom_fwd(cast_inputs=...) and torch.cuda.amp's _cast call: it casts
    the floating tensors on `device_type`.  Where that type is redirected
    the tensors are on the device really used, and the dtype becomes what
    autocast's would there."""
    @functools.wraps(original)
    def _cast(value: Any, device_type: str, dtype: Any) -> Any:
        target = _redirected(device_type)
        if target is not None:
            dtype = _DTYPES[device_type].get(dtype, dtype)
            device_type = target
        return original(value, device_type, dtype)
    return _cast


# ---- installation -----------------------------------------------------------


def _capture() -> None:
    if _originals:
        return
    from torch.amp import autocast_mode, grad_scaler
    _originals.update({
        "autocast.__init__": autocast_mode.autocast.__dict__["__init__"],
        "GradScaler.__init__": grad_scaler.GradScaler.__dict__["__init__"],
        "is_autocast_enabled": torch.is_autocast_enabled,
        "get_autocast_dtype": torch.get_autocast_dtype,
        "set_autocast_dtype": torch.set_autocast_dtype,
        "set_autocast_enabled": torch.set_autocast_enabled,
    })
    # Deprecated names a later torch may drop.
    _originals.update({name: getattr(torch, name) for name in GPU_NAMES
                       if hasattr(torch, name)})
    cast = _torch_compat.get("amp_cast")
    if cast is not None:
        _originals["_cast"] = cast


_BUILDERS: Dict[str, Callable[[Any], Any]] = {
    "autocast.__init__": _autocast_init,
    "GradScaler.__init__": _scaler_init,
    "is_autocast_enabled": _is_enabled,
    "get_autocast_dtype": _get_dtype,
    "set_autocast_dtype": _set_dtype,
    "set_autocast_enabled": _first_arg,
    "get_autocast_gpu_dtype": _gpu_dtype_getter,
    "set_autocast_gpu_dtype": _gpu_dtype_setter,
    "_cast": _cast_builder,
}

# CUDA's own names for its autocast state, replaced where "cuda" is
# redirected.
GPU_NAMES = ("get_autocast_gpu_dtype", "set_autocast_gpu_dtype")


def replacement(name: str) -> Any:
    """The replacement for torch's `name` (built once)."""
    _capture()
    fn = _built.get(name)
    if fn is None:
        fn = _built[name] = _BUILDERS[name](_originals[name])
    return fn


def replacements() -> List[Any]:
    """Every replacement this torch has an original for."""
    _capture()
    return [replacement(name) for name in _BUILDERS if name in _originals]


def has_cast() -> bool:
    """Whether this torch has the private _cast that custom_fwd calls."""
    _capture()
    return "_cast" in _originals and \
        _torch_compat.get("amp_cast") is not None


def redirected_types(profile: str) -> Dict[str, str]:
    """Program device type -> real one, as the policy redirects devices."""
    from . import _patches
    table: Dict[str, str] = {}
    for kind in ("cuda", "mps"):
        if kind == profile:
            continue
        res = _tdcore.resolve(kind, profile)
        if res["target"] != "keep":
            table[kind] = (_patches.device_type_of(profile)
                           if res["target"] == "accel" else res["target"])
    return table


def _accepted_by(device_type: str) -> Optional[Tuple[Any, ...]]:
    """The dtypes torch's autocast accepts on a device type, where it
    refuses others (torch/amp/autocast_mode.py): the CPU's, MPS's and XPU's
    lists, a PrivateUse1 backend's get_amp_supported_dtype(); None: any
    floating dtype (CUDA's)."""
    if device_type in ("cpu", "xpu"):
        return (torch.bfloat16, torch.float16)
    if device_type == "mps":
        return (torch.float16, torch.bfloat16)
    if device_type == "cuda":
        return None
    try:
        module = torch.get_device_module(device_type)
    except (RuntimeError, ValueError, AttributeError):
        return None
    supported = getattr(module, "get_amp_supported_dtype", None)
    return tuple(supported()) if supported is not None else None


def install(profile: str, keep_float16: bool,
            bf16_ok: bool = True) -> None:
    """Fills the tables the replacements read (at every enable)."""
    _capture()
    _TYPES.clear()
    _DTYPES.clear()
    _ACCEPTED.clear()
    _TYPES.update(redirected_types(profile))
    record = _capabilities.current()
    bf16_fast = cpu_has_bfloat16() if record.float16_autocast == "host" \
        else True
    for source, target in _TYPES.items():
        _DTYPES[source] = dtype_table(target, keep_float16, bf16_fast,
                                      bf16_ok, record)
        _DEFAULTS.setdefault(source, torch.float16)
    for target in set(_TYPES.values()):
        accepted = _accepted_by(target)
        if accepted is not None:
            _ACCEPTED[target] = accepted


def on_apply() -> None:
    """Called at the end of _patches.apply(): install() has run already
    (from the masquerade's patch entries)."""


def on_restore() -> None:
    """Called by _patches.restore(): a replacement captured before (``from
    torch import is_autocast_enabled``) is torch's own again."""
    _TYPES.clear()
    _SAVED.clear()


def settings() -> Dict[str, Any]:
    """What each program device type's autocast dtypes become."""
    return {source: {str(k): str(v) for k, v in table.items()}
            for source, table in _DTYPES.items() if source in _TYPES}

