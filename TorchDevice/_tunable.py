"""torch.cuda.tunable (TunableOp) where "cuda" is not CUDA
(docs/masquerade.md, "Flags and tools").

TunableOp chooses, for each GEMM shape, the fastest of the implementations
CUDA's (or ROCm's) BLAS libraries offer, and keeps its choices in a CSV
file.  Where "cuda" is not CUDA, a GEMM runs in the device's own library,
which offers one implementation: there is nothing to choose between, so
nothing is tuned, no result changes, and no results file is written or
used.  On a torch built without CUDA every one of these calls raises
(``torch._C`` has no ``_cuda_tunableop_*``), so a CUDA program that turns
TunableOp on stops at that line.  Here the switches remember what they
were set to, starting where CUDA starts (its ``PYTORCH_TUNABLEOP_*``
environment variables), and answer it back.
"""
from __future__ import annotations

import glob
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

import torch

from . import _patches

_LOCK = threading.Lock()


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value == "1"


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default


def _initial() -> Dict[str, Any]:
    """CUDA's starting values: off, tuning on once enabled, 30 ms or 100
    iterations per solution."""
    return {
        "enabled": _env_flag("PYTORCH_TUNABLEOP_ENABLED", False),
        "tuning": _env_flag("PYTORCH_TUNABLEOP_TUNING", True),
        "record_untuned": _env_flag("PYTORCH_TUNABLEOP_RECORD_UNTUNED",
                                    False),
        "max_duration": _env_int("PYTORCH_TUNABLEOP_MAX_TUNING_DURATION_MS",
                                 30),
        "max_iterations": _env_int(
            "PYTORCH_TUNABLEOP_MAX_TUNING_ITERATIONS", 100),
        "filename": os.environ.get("PYTORCH_TUNABLEOP_FILENAME", ""),
        "rotating_kb": _env_int("PYTORCH_TUNABLEOP_ROTATING_BUFFER_SIZE",
                                -1) * 1024,
        "numerics": (False, 1e-5, 1e-5),
    }


_STATE: Dict[str, Any] = _initial()


def _set(key: str, value: Any, api: str) -> None:
    with _LOCK:
        _STATE[key] = value
    _patches.record_emulated("torch.cuda.tunable." + api)


def _l2_kb() -> int:
    return int(torch.cuda.get_device_properties(
        torch.cuda.current_device()).L2_cache_size) // 1024


def enable(val: bool = True) -> None:
    """Turn TunableOp on: GEMMs would be tuned; here one implementation
    runs them either way."""
    _set("enabled", bool(val), "enable")


def is_enabled() -> bool:
    return bool(_STATE["enabled"])


def tuning_enable(val: bool = True) -> None:
    _set("tuning", bool(val), "tuning_enable")


def tuning_is_enabled() -> bool:
    return bool(_STATE["tuning"])


def record_untuned_enable(val: bool = True) -> None:
    _set("record_untuned", bool(val), "record_untuned_enable")


def record_untuned_is_enabled() -> bool:
    return bool(_STATE["record_untuned"])


def set_max_tuning_duration(duration: int) -> None:
    _set("max_duration", int(duration), "set_max_tuning_duration")


def get_max_tuning_duration() -> int:
    return int(_STATE["max_duration"])


def set_max_tuning_iterations(iterations: int) -> None:
    _set("max_iterations", int(iterations), "set_max_tuning_iterations")


def get_max_tuning_iterations() -> int:
    return int(_STATE["max_iterations"])


def set_filename(filename: str, insert_device_ordinal: bool = False) -> None:
    """As on CUDA, the current device's ordinal replaces a ``%d`` in the
    name, or else goes before its last dot, or else at its end."""
    if not isinstance(filename, str):
        raise TypeError(f"set_filename(): filename must be str, not "
                        f"{type(filename).__name__}")
    if filename and insert_device_ordinal:
        ordinal = str(torch.cuda.current_device())
        if "%d" in filename:
            filename = filename.replace("%d", ordinal, 1)
        elif "." in filename:
            dot = filename.rindex(".")
            filename = filename[:dot] + ordinal + filename[dot:]
        else:
            filename += ordinal
    _set("filename", filename, "set_filename")


def get_filename() -> str:
    return str(_STATE["filename"])


def get_results() -> Tuple[Any, ...]:
    """No GEMM was tuned: there was one implementation to run it."""
    return ()


def get_validators() -> Tuple[Any, ...]:
    return ()


def read_file(filename: Optional[str] = None) -> bool:
    """A results file names choices among CUDA's BLAS implementations,
    which are not here: none is loaded, as CUDA loads none from a file
    another machine wrote (False)."""
    _patches.record_emulated("torch.cuda.tunable.read_file")
    return False


def set_rotating_buffer_size(buffer_size: int) -> None:
    """In MB; below zero, the size of the device's L2 cache."""
    _set("rotating_kb", int(buffer_size) * 1024,
         "set_rotating_buffer_size")


def get_rotating_buffer_size() -> int:
    """In KB, as torch's."""
    size = int(_STATE["rotating_kb"])
    return _l2_kb() if size < 0 else size


def set_numerical_check_tolerances(enable: bool, atol: float = 1e-5,
                                   rtol: float = 1e-5) -> None:
    _set("numerics", (bool(enable), float(atol), float(rtol)),
         "set_numerical_check_tolerances")


def _open_untuned(filename: str) -> None:
    """A file of untuned GEMMs must be there to be read, as on CUDA; what it
    lists has nothing to be tuned against here."""
    with open(filename):
        pass


def tune_gemm_in_file(filename: str) -> None:
    """Offline tuning of the GEMMs a file recorded: the same checks as on
    CUDA, then nothing to choose between for each one."""
    if not is_enabled():
        raise AssertionError("TunableOp is not enabled")
    if not tuning_is_enabled():
        raise AssertionError("Tuning is not enabled")
    _open_untuned(filename)
    _patches.record_emulated("torch.cuda.tunable.tune_gemm_in_file")


def mgpu_tune_gemm_in_file(filename_pattern: str, num_gpus: int) -> None:
    total = torch.cuda.device_count()
    if not 1 <= num_gpus <= total:
        raise AssertionError(
            f"num_gpus must be between 1 and {total}, got {num_gpus}")
    for name in glob.glob(filename_pattern):
        _open_untuned(name)
    _patches.record_emulated("torch.cuda.tunable.mgpu_tune_gemm_in_file")


_NAMES = (
    "enable", "is_enabled", "tuning_enable", "tuning_is_enabled",
    "record_untuned_enable", "record_untuned_is_enabled",
    "set_max_tuning_duration", "get_max_tuning_duration",
    "set_max_tuning_iterations", "get_max_tuning_iterations",
    "set_filename", "get_filename", "get_results", "get_validators",
    "read_file", "set_rotating_buffer_size", "get_rotating_buffer_size",
    "set_numerical_check_tolerances", "tune_gemm_in_file",
    "mgpu_tune_gemm_in_file",
)


def patches() -> List[Any]:
    """Each of torch.cuda.tunable's functions that torch has, replaced by
    the one above (only where torch.cuda is emulated: _cuda_tools decides
    that for all of CUDA's switches)."""
    import torch.cuda.tunable as tunable
    from ._patches import Patch
    ours = globals()
    return [Patch(tunable, name, lambda orig, value=ours[name]: value)
            for name in _NAMES if hasattr(tunable, name)]
