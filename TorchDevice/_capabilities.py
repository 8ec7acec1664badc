"""Capability records: what the device really used computes and needs, as
data (docs/hardware.md, "Capability records").

Code paths read a record's fields, never a profile's name: the float64
policy, the autocast dtypes, bfloat16, the stream/event backend, the memory
counters and the fallback variable the launcher sets.  Profiles cpu, cuda
and mps have their own record; profile accelerator (whatever
``torch.accelerator`` names when there is neither CUDA nor MPS) has the
generic one, or another one named by ``TORCHDEVICE_CAPABILITIES`` (the
simulated accelerator of the tests runs with MPS's, so that MPS's code paths
run with real tensors on any machine).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Optional, Set, Tuple

ENV = "TORCHDEVICE_CAPABILITIES"


@dataclass(frozen=True)
class Capabilities:
    """One kind of device, as TorchDevice uses it.

    name: the record's name ("cpu", "cuda", "mps", "accelerator").
    float64: the device computes float64; where not, a float64 request that
        lands there follows TORCHDEVICE_FLOAT64 (float32, or an error).
    bfloat16: the device computes bfloat16; None: ask the device (macOS 14
        or newer for MPS, the device module's is_bf16_supported()).
    float16_autocast: what CUDA's float16 autocast becomes: "float16"
        (kept) or "host" (bfloat16 where the CPU computes it, else float32).
    events: the stream/event backend (docs/streams.md): "host" (host
        clock), "metal" (one queue, torch.mps-style events), "cuda"
        (native CUDA events) or "device" (the device's torch.Event).
    fallback_variable: set to "1" by ``python -m TorchDevice run`` before
        torch loads, so that operators the device lacks run on the host
        (MPS: PYTORCH_ENABLE_MPS_FALLBACK); None: nothing to set.
    memory: where torch.cuda's memory statistics come from: "process" (the
        process's resident memory), "sampled" (the device's counters, peaks
        the maximum of the samples: MPS keeps none) or "device" (the
        device's counters and its own peaks).
    host_fallback: the device may run operators it lacks on the host with
        torch's "will fall back to run on the CPU" warning, which the report
        counts per operator and call site (docs/report.md); False: nothing
        is installed to watch for it.
    """

    name: str
    float64: bool
    bfloat16: Optional[bool]
    float16_autocast: str
    events: str
    fallback_variable: Optional[str]
    memory: str
    host_fallback: bool


RECORDS: Dict[str, Capabilities] = {
    "cpu": Capabilities(name="cpu", float64=True, bfloat16=True,
                        float16_autocast="host", events="host",
                        fallback_variable=None, memory="process",
                        host_fallback=False),
    "cuda": Capabilities(name="cuda", float64=True, bfloat16=None,
                         float16_autocast="float16", events="cuda",
                         fallback_variable=None, memory="device",
                         host_fallback=False),
    "mps": Capabilities(name="mps", float64=False, bfloat16=None,
                        float16_autocast="float16", events="metal",
                        fallback_variable="PYTORCH_ENABLE_MPS_FALLBACK",
                        memory="sampled", host_fallback=True),
    "accelerator": Capabilities(name="accelerator", float64=True,
                                bfloat16=None, float16_autocast="float16",
                                events="device", fallback_variable=None,
                                memory="device", host_fallback=True),
}

NAMES = tuple(RECORDS)


def record_for(profile: str, override: Optional[str] = None) -> Capabilities:
    """The record of `profile`; on profile accelerator, `override` (a name
    of RECORDS, TORCHDEVICE_CAPABILITIES) replaces the generic one.  Other
    profiles keep their own: their device is known."""
    if profile == "accelerator" and override:
        return RECORDS[override]
    return RECORDS[profile]


_said: Set[Tuple[str, str]] = set()


def say_not_applied(override: str, profile: str) -> None:
    """A record asked for and not used is said once per (record, profile):
    a program run with TORCHDEVICE_CAPABILITIES=mps where no accelerator
    is present would otherwise look tested on MPS's rules."""
    if (override, profile) in _said:
        return
    _said.add((override, profile))
    logging.getLogger("TorchDevice").warning(
        "TorchDevice: capability record %r not applied: it applies on "
        "profile accelerator only, and this process runs on profile %r "
        "with that profile's own record (docs/configuration.md)",
        override, profile)


def current() -> Capabilities:
    """The record in force (the profile and configuration now)."""
    from . import _config_now, _tdcore
    return record_for(_tdcore.settings()["profile"],
                      _config_now.capabilities)
