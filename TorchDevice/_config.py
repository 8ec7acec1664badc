"""Configuration: environment variables and the Python API share one model."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Optional

PROFILES = ("cuda", "mps", "cpu")
MODES = ("accelerate", "cpu-stays-cpu")
FLOAT64 = ("downcast", "error")

ENV_TARGET = "TORCHDEVICE_TARGET"
ENV_MODE = "TORCHDEVICE_MODE"
ENV_FLOAT64 = "TORCHDEVICE_FLOAT64"
ENV_LOG_LEVEL = "TORCHDEVICE_LOG_LEVEL"


@dataclass(frozen=True)
class Config:
    """The settings in force.

    target: force the hardware profile ("cuda", "mps", "cpu"); None detects.
    mode: "accelerate" (None and "cpu" go to the accelerator too, the
        default) or "cpu-stays-cpu" (only accelerator requests move).
    float64: on MPS, "downcast" float64 requests to float32 (logged) or
        raise an "error".
    log_level: level of the "TorchDevice" logger; INFO or lower logs each
        new redirected call site.
    """

    target: Optional[str] = None
    mode: str = "accelerate"
    float64: str = "downcast"
    log_level: int = logging.WARNING

    def validated(self) -> "Config":
        if self.target is not None and self.target not in PROFILES:
            raise ValueError(
                f"target must be one of {PROFILES} or None, not {self.target!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.float64 not in FLOAT64:
            raise ValueError(
                f"float64 must be one of {FLOAT64}, not {self.float64!r}")
        return self

    def with_changes(self, **changes: object) -> "Config":
        if "log_level" in changes:
            changes["log_level"] = parse_level(changes["log_level"])
        return replace(self, **changes).validated()  # type: ignore[arg-type]


def parse_level(value: object) -> int:
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


def from_environment(env: Optional[dict] = None) -> Config:
    """Reads TORCHDEVICE_* variables; an invalid value is a ValueError that
    names the variable."""
    env = os.environ if env is None else env
    values: dict = {}
    for var, field in ((ENV_TARGET, "target"), (ENV_MODE, "mode"),
                       (ENV_FLOAT64, "float64")):
        raw = env.get(var, "").strip().lower()
        if raw:
            values[field] = raw
    raw_level = env.get(ENV_LOG_LEVEL, "").strip()
    try:
        if raw_level:
            values["log_level"] = parse_level(raw_level)
        return Config(**values).validated()
    except ValueError as exc:
        raise ValueError(f"invalid TORCHDEVICE_* environment: {exc}") from None
