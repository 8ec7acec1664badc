"""Configuration: environment variables and the Python API share one model."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Optional, Tuple, Union

PROFILES = ("cuda", "mps", "accelerator", "cpu")
MODES = ("accelerate", "cpu-stays-cpu")
FLOAT64 = ("downcast", "error")
MOVES = ("copy", "alias")
ANNOUNCE = ("cuda", "mps")

ENV_TARGET = "TORCHDEVICE_TARGET"
ENV_MODE = "TORCHDEVICE_MODE"
ENV_FLOAT64 = "TORCHDEVICE_FLOAT64"
ENV_LOG_LEVEL = "TORCHDEVICE_LOG_LEVEL"
ENV_REPORT = "TORCHDEVICE_REPORT"
ENV_CUDA_TRUTHFUL = "TORCHDEVICE_CUDA_TRUTHFUL"
ENV_TRUTH_FOR = "TORCHDEVICE_TRUTH_FOR"
ENV_MOVES = "TORCHDEVICE_MOVES"
ENV_ANNOUNCE = "TORCHDEVICE_ANNOUNCE"
ENV_DEVICE_COUNT = "TORCHDEVICE_DEVICE_COUNT"
ENV_KEEP_FLOAT16 = "TORCHDEVICE_KEEP_FLOAT16"
ENV_CAPABILITIES = "TORCHDEVICE_CAPABILITIES"
# The capability records (TorchDevice/_capabilities.py, docs/hardware.md).
CAPABILITIES = ("cpu", "cuda", "mps", "accelerator")

_TRUE = ("1", "true", "on", "yes")
_BOOLS = _TRUE + ("0", "false", "off", "no")


@dataclass(frozen=True)
class Config:
    """The settings in force.

    target: force the hardware profile ("cuda", "mps", "accelerator",
        "cpu"); None detects.
    mode: "cpu-stays-cpu" (the default: only accelerator requests move)
        or "accelerate" (no device and "cpu" go to the accelerator too).
    float64: on a device without float64 (MPS; its capability record),
        "downcast" float64 requests to float32 (logged) or raise an "error".
    log_level: level of the "TorchDevice" logger; INFO or lower logs each
        new redirected call site.  None (the default) leaves the logger to
        the standard `logging` configuration: whatever makes the logger
        "TorchDevice" enabled for INFO (its own level, a parent's, the
        root's through logging.basicConfig) turns logging and recording on.
    report: False (off), True (a table of call sites on stderr at exit) or
        a path: the table plus a JSON file there ("{pid}" in it is replaced
        by the process id).  See docs/report.md.
    cuda_truthful: torch.cuda.is_available() tells everyone the truth
        (docs/masquerade.md); by default it is True under the masquerade
        except for torch's own modules and the truth_for packages.
    truth_for: package names (e.g. "accelerate") whose modules are always
        told the truth by torch.cuda.is_available().
    moves: "copy" (a move between host and accelerator returns a new tensor,
        as on CUDA, also where both land on the same device) or "alias"
        (such a move returns the tensor itself: faster, not CUDA's
        semantics).  See docs/policy.md.
    announce: the accelerator kind user code is told about on a machine
        with neither CUDA nor MPS: "cuda" or "mps" (for MPS-written code).
    device_count: devices torch.cuda shows (all the one device really
        present); None: the launcher's LOCAL_WORLD_SIZE, else 1.
    keep_float16: CUDA's float16 autocast stays float16 on the CPU (by
        default it becomes bfloat16 or float32, docs/policy.md).
    capabilities: on profile accelerator, the capability record the device
        is used with ("mps", "cuda", "cpu", "accelerator"); None: the
        generic one (docs/hardware.md).  Other profiles keep their own.
    """

    target: Optional[str] = None
    mode: str = "cpu-stays-cpu"
    float64: str = "downcast"
    log_level: Optional[int] = None
    report: Union[bool, str] = False
    cuda_truthful: bool = False
    truth_for: Tuple[str, ...] = ()
    moves: str = "copy"
    announce: str = "cuda"
    device_count: Optional[int] = None
    keep_float16: bool = False
    capabilities: Optional[str] = None

    def validated(self) -> "Config":
        if self.target is not None and self.target not in PROFILES:
            raise ValueError(
                f"target must be one of {PROFILES} or None, not {self.target!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.float64 not in FLOAT64:
            raise ValueError(
                f"float64 must be one of {FLOAT64}, not {self.float64!r}")
        if not isinstance(self.report, (bool, str)) or self.report == "":
            raise ValueError(
                f"report must be True, False or a file path, not "
                f"{self.report!r}")
        if not isinstance(self.cuda_truthful, bool):
            raise ValueError(
                f"cuda_truthful must be True or False, not "
                f"{self.cuda_truthful!r}")
        if not (isinstance(self.truth_for, tuple)
                and all(isinstance(p, str) and p for p in self.truth_for)):
            raise ValueError(
                f"truth_for must be package names, not {self.truth_for!r}")
        if self.moves not in MOVES:
            raise ValueError(f"moves must be one of {MOVES}, not {self.moves!r}")
        if self.announce not in ANNOUNCE:
            raise ValueError(
                f"announce must be one of {ANNOUNCE}, not {self.announce!r}")
        if self.device_count is not None and not (
                type(self.device_count) is int and self.device_count >= 1):
            raise ValueError(
                f"device_count must be a positive int or None, not "
                f"{self.device_count!r}")
        if self.capabilities is not None \
                and self.capabilities not in CAPABILITIES:
            raise ValueError(
                f"capabilities must be one of {CAPABILITIES} or None, not "
                f"{self.capabilities!r}")
        if not isinstance(self.keep_float16, bool):
            raise ValueError(
                f"keep_float16 must be True or False, not "
                f"{self.keep_float16!r}")
        return self

    def with_changes(self, **changes: object) -> "Config":
        if "log_level" in changes:
            changes["log_level"] = parse_level(changes["log_level"])
        if isinstance(changes.get("truth_for"), (str, list, set)):
            changes["truth_for"] = parse_names(changes["truth_for"])
        if isinstance(changes.get("report"), os.PathLike):
            changes["report"] = os.fspath(changes["report"])  # type: ignore
        return replace(self, **changes).validated()  # type: ignore[arg-type]


def parse_level(value: object) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().upper()
        if text.isdigit():
            return int(text)
        level = logging.getLevelName(text)
        if isinstance(level, int):
            return level
    raise ValueError(f"unknown log level {value!r}")


def parse_report(raw: str) -> Union[bool, str]:
    """TORCHDEVICE_REPORT: empty/0/false/off/no, 1/true/on/yes, or a path
    for the JSON file."""
    text = raw.strip()
    if text.lower() in ("", "0", "false", "off", "no"):
        return False
    if text.lower() in ("1", "true", "on", "yes"):
        return True
    return text


def parse_names(value: object) -> Tuple[str, ...]:
    """"a, b" or ["a", "b"] -> ("a", "b")."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(p).strip() for p in items  # type: ignore[union-attr]
                 if str(p).strip())


def from_environment(env: Optional[dict] = None) -> Config:
    """Reads TORCHDEVICE_* variables; an invalid value is a ValueError that
    names the variable."""
    env = os.environ if env is None else env
    values: dict = {}
    for var, field in ((ENV_TARGET, "target"), (ENV_MODE, "mode"),
                       (ENV_FLOAT64, "float64"), (ENV_MOVES, "moves"),
                       (ENV_ANNOUNCE, "announce"),
                       (ENV_CAPABILITIES, "capabilities")):
        raw = env.get(var, "").strip().lower()
        if raw:
            values[field] = raw
    raw_level = env.get(ENV_LOG_LEVEL, "").strip()
    try:
        if raw_level:
            values["log_level"] = parse_level(raw_level)
        values["report"] = parse_report(env.get(ENV_REPORT, ""))
        for var, field in ((ENV_CUDA_TRUTHFUL, "cuda_truthful"),
                           (ENV_KEEP_FLOAT16, "keep_float16")):
            flag = env.get(var, "").strip().lower()
            if flag:
                if flag not in _BOOLS:
                    raise ValueError(f"{var} must be 1 or 0, not {flag!r}")
                values[field] = flag in _TRUE
        count = env.get(ENV_DEVICE_COUNT, "").strip()
        if count:
            if not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"{ENV_DEVICE_COUNT} must be a positive integer, not "
                    f"{count!r}")
            values["device_count"] = int(count)
        values["truth_for"] = parse_names(env.get(ENV_TRUTH_FOR, ""))
        return Config(**values).validated()
    except ValueError as exc:
        raise ValueError(f"invalid TORCHDEVICE_* environment: {exc}") from None
