"""MPS's tool calls where "mps" is not MPS: the Instruments profiler
hooks (``torch.mps.profiler``) and the macOS version queries
(``torch.backends.mps.is_macos_or_newer``), docs/masquerade.md,
"Reverse direction".

A program written for a Mac calls these to profile its GPU work or to
choose what the GPU can do (bfloat16 needs macOS 14); transformers'
``is_torch_bf16_gpu_available()`` asks ``is_macos_or_newer(14, 0)`` once
MPS says it is there.  Without MPS each raises ("Cannot execute ...
without MPS backend"), so such a program stops where MPS is announced
(profile cuda; profile cpu with ``announce=mps``) or where it names MPS
itself.  Here the profiler hooks do what they do on a Mac with no
Instruments session recording: nothing that changes a result (report row
``emulated``); the version queries, asked only where MPS is announced,
answer for the device that stands in for the GPU, which computes every
dtype a recent macOS gives MPS.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator, List

import torch

from . import _patches, _tdcore

_MODES = ("interval", "event", "interval,event")


def _check_mode(mode: Any) -> None:
    # torch lower-cases the mode and Metal refuses any other: so do we.
    if not isinstance(mode, str) \
            or mode.lower().replace(" ", "") not in _MODES:
        raise RuntimeError(f"Invalid OS Signpost tracing mode: {mode!r} "
                           f"(expected one of {', '.join(_MODES)})")


def start(mode: str = "interval", wait_until_completed: bool = False
          ) -> None:
    """torch.mps.profiler.start: no signposts are recorded here."""
    _check_mode(mode)
    _patches.record_emulated("torch.mps.profiler.start", "mps")


def stop() -> None:
    """torch.mps.profiler.stop."""
    _patches.record_emulated("torch.mps.profiler.stop", "mps")


@contextlib.contextmanager
def profile(mode: str = "interval", wait_until_completed: bool = False
            ) -> Iterator[None]:
    """torch.mps.profiler.profile: start() and stop() around the block."""
    start(mode, wait_until_completed)
    try:
        yield
    finally:
        stop()


def is_metal_capture_enabled() -> bool:
    """No Metal frame capture here (MTL_CAPTURE_ENABLED means nothing)."""
    return False


def is_capturing_metal() -> bool:
    return False


@contextlib.contextmanager
def metal_capture(fname: str) -> Iterator[None]:
    """torch.mps.profiler.metal_capture: the block runs, nothing is
    captured (no .gputrace is written)."""
    _patches.record_emulated("torch.mps.profiler.metal_capture", "mps")
    yield
    # What torch.mps.synchronize() reaches: torch.cuda's where CUDA is
    # announced (torch.mps's actions are torch's there until the program
    # asks for "mps").
    from ._masquerade import announced
    if "cuda" in announced():
        torch.cuda.synchronize()
    else:
        torch.mps.synchronize()


# Cached as torch's own are (lru_cache): code that calls their
# cache_clear(), or reads __wrapped__ as dynamo does of is_available, finds
# the same attributes.
@functools.lru_cache(maxsize=None)
def is_macos_or_newer(major: int, minor: int) -> bool:
    """torch.backends.mps.is_macos_or_newer where MPS is announced but not
    there: True (torch's own modules, told MPS is not there, never ask)."""
    return True


@functools.lru_cache(maxsize=None)
def is_macos13_or_newer(minor: int = 0) -> bool:
    return True


def patches() -> List[Any]:
    from ._masquerade import announced
    from ._patches import Patch
    hardware = _tdcore.settings()["profile"]
    if hardware == "mps":
        return []
    import torch.backends.mps as backends_mps
    import torch.mps.profiler as mps_profiler
    table = [Patch(mps_profiler, name, lambda orig, f=func: f)
             for name, func in (("start", start), ("stop", stop),
                                ("profile", profile),
                                ("is_metal_capture_enabled",
                                 is_metal_capture_enabled),
                                ("is_capturing_metal", is_capturing_metal),
                                ("metal_capture", metal_capture))]
    if "mps" in announced(hardware):
        table += [Patch(backends_mps, "is_macos_or_newer",
                        lambda orig: is_macos_or_newer),
                  Patch(backends_mps, "is_macos13_or_newer",
                        lambda orig: is_macos13_or_newer)]
    return table

