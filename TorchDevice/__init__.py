"""TorchDevice: PyTorch code written for one accelerator runs unmodified on
whatever hardware is present.

Importing the package enables it::

    import TorchDevice          # before or after `import torch`
    x = torch.zeros(3, device="cuda")   # lands on mps / cpu when no CUDA

Public API: enable(), disable(), is_enabled(), configure(), config(),
cpu_override(), report(), hardware_profile(), and the TorchDevice device
class (``from TorchDevice import TorchDevice``).
"""
from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from typing import Any, Dict, Iterator, List, Optional

import torch  # noqa: F401  (TorchDevice patches torch; import it first)

from . import (_capabilities, _config, _exit, _fallback, _log, _masquerade,
               _mismatch, _patches,
               _report, _tdcore)
from ._config import Config
from ._device import TorchDevice

__all__ = [
    "TorchDevice", "Config", "enable", "disable", "is_enabled", "configure",
    "config", "cpu_override", "report", "clear_report", "hardware_profile",
    "policy", "explain",
]
__version__ = "0.1.0"

_lock = threading.RLock()
_config_now: Config = Config()


def _effective_profile(cfg: Config) -> str:
    detected = _patches.detect_profile()
    if cfg.target is None:
        return detected
    if cfg.target not in _patches.available_profiles():
        raise ValueError(
            f"target {cfg.target!r} is not available on this machine "
            f"(detected hardware: {detected}; usable targets: "
            f"{', '.join(_patches.available_profiles())})")
    return cfg.target


def _push_config(cfg: Config) -> None:
    profile = _effective_profile(cfg)
    record = _capabilities.record_for(profile, cfg.capabilities)
    if cfg.capabilities is not None and record.name != cfg.capabilities:
        _capabilities.say_not_applied(cfg.capabilities, profile)
    _tdcore.configure(profile, cfg.mode, cfg.float64,
                      device_float64=record.float64)
    if not record.float64:
        # The first float64 made float32 is said at the user's line even
        # with the report off, so the core must know the user's frames.
        _report.ensure_site_rules()
    _log.apply_level(cfg.log_level)
    _report.activate(cfg.report)
    _sync_recording()
    _tdcore.set_move_copies(cfg.moves == "copy")
    _masquerade.set_keep_float16(cfg.keep_float16)
    _masquerade.configure(cfg.cuda_truthful, cfg.truth_for,
                          cfg.device_count, cfg.announce)


def _sync_recording() -> None:
    """Recording is on while the report needs it or the "TorchDevice"
    logger is enabled for INFO, however logging was configured.  Runs at
    each configuration change and after every change of logging's levels
    (_log.watch_configuration); takes no lock of ours, since logging may
    call it while holding its own."""
    logged = _log.wants_records()
    if logged:
        _log.ensure_handler()
    recording = _report.needs_recording() or logged
    if recording:
        _report.ensure_site_rules()
    _tdcore.set_report(recording)
    _sync_fallback()


def _sync_fallback() -> None:
    """The host-fallback count (TorchDevice/_fallback.py) watches torch's
    fallback warnings while TorchDevice is enabled, records, and the
    device may fall back; otherwise `warnings` is left as it was."""
    _fallback.sync(_patches.is_applied() and _tdcore.get_report()
                   and _capabilities.current().host_fallback)


def _logging_changed() -> None:
    _sync_recording()
    if _patches.is_applied():
        _masquerade.push_logging()


def configure(**changes: Any) -> Config:
    """Changes settings at run time: target, mode, float64, log_level,
    report (False, True, or a JSON path), cuda_truthful, truth_for, moves,
    announce, device_count, keep_float16, capabilities
    (docs/configuration.md).

    Unknown or invalid values raise ValueError and change nothing.
    """
    global _config_now
    with _lock:
        unknown = set(changes) - set(Config.__dataclass_fields__)
        if unknown:
            raise TypeError(f"configure() got unknown settings {sorted(unknown)}")
        new = _config_now.with_changes(**changes)
        profile_changes = (
            _effective_profile(new) != _effective_profile(_config_now)
            or new.announce != _config_now.announce
            or new.keep_float16 != _config_now.keep_float16
            or new.capabilities != _config_now.capabilities
            or (new.mode != _config_now.mode
                and _patches.landed_type() != "cpu"))
        _config_now = new
        if profile_changes and _patches.is_applied():
            # Which torch.cuda / torch.mps names are replaced depends on the
            # profile and the kind announced, the AMP tables on both, and
            # the host legacy types on the mode where "cpu" may leave the
            # host: re-apply the whole table.
            _patches.restore()
            _push_config(new)
            _patches.apply()
            _sync_fallback()
        else:
            _push_config(new)
        _forget_compiled_code()
        return new


def _forget_compiled_code() -> None:
    """Code compiled by torch.compile baked in the policy it was traced
    under; after a change it must be traced again."""
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()


def config() -> Config:
    """The settings in force."""
    return _config_now


def hardware_profile() -> str:
    """The profile in force: "cuda", "mps", "accelerator" or "cpu"."""
    return _tdcore.settings()["profile"]


def policy() -> Dict[str, Any]:
    """The policy in force (profile, mode, float64, cpu_override, moves),
    the device type accelerator requests land on ("device": "cuda", "mps",
    "xpu", ..., "cpu") and the capability record in force
    ("capabilities")."""
    settings = _tdcore.settings()
    settings["device"] = _patches.device_type_of(settings["profile"])
    settings["capabilities"] = _capabilities.record_for(
        settings["profile"], _config_now.capabilities).name
    return settings


def enable() -> None:
    """Installs every replacement.  Calling it again changes nothing."""
    with _lock:
        _push_config(_config_now)
        _patches.apply()
        _sync_fallback()
        if _tdcore.settings()["profile"] in ("mps", "accelerator"):
            # backward runs on autograd's device threads there
            _exit.guard(always=False)


def disable() -> None:
    """Restores every replaced attribute and slot to torch's original."""
    with _lock:
        _patches.restore()
        _fallback.sync(False)


def is_enabled() -> bool:
    return _patches.is_applied()


@contextlib.contextmanager
def cpu_override(on: bool = True) -> Iterator[None]:
    """Scoped CPU override: inside, None and "cpu" stay on the CPU (accelerator
    requests are still honoured); the previous state returns on exit, also
    when the body raises.  The scope belongs to the calling thread (like
    torch.no_grad): other threads keep the process-wide setting."""
    previous = _tdcore.swap_scoped_cpu_override(1 if on else 0)
    try:
        yield
    finally:
        _tdcore.swap_scoped_cpu_override(previous)


def report() -> List[Dict[str, Any]]:
    """Every recorded call site, sorted by file and line: dicts with file,
    line, function, api, what, from, to, count (docs/report.md).

    Recording is on while the report is on (TORCHDEVICE_REPORT,
    configure(report=...)) or the log level is INFO or lower."""
    return _report.rows()


def explain(exc: BaseException) -> Optional[str]:
    """For a device-mismatch error that TorchDevice's redirection can have
    caused (mode "accelerate"): adds a note to `exc` naming the failing
    line, the devices of the tensors there, the lines TorchDevice sent to
    the accelerator (with the report on) and what avoids it, and returns
    it; likewise for torch's "without overflow" error where a number only
    float64 holds meets a tensor TorchDevice made float32 on a device
    without float64, and for an operation such a device refuses because
    its result would be float64 (a float64 host tensor with no dimensions
    meeting a device tensor; "unsupported operand" from an operator); None
    otherwise.  Uncaught errors get the note by
    themselves; this is for programs (and notebooks) that catch them
    (docs/policy.md)."""
    return _mismatch.explain(exc)


def clear_report() -> None:
    _tdcore.clear_records()


def _initial_config() -> Config:
    try:
        return _config.from_environment()
    except ValueError as exc:
        warnings.warn(f"TorchDevice: {exc}; using defaults", RuntimeWarning,
                      stacklevel=3)
        return Config()


_config_now = _initial_config()
_log.watch_configuration(_logging_changed)
try:
    _effective_profile(_config_now)
except ValueError as exc:
    warnings.warn(f"TorchDevice: {exc}; using the detected hardware",
                  RuntimeWarning, stacklevel=2)
    _config_now = _config_now.with_changes(target=None)
enable()
