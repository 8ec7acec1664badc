#!/usr/bin/env python
"""Reference leaks and memory growth of every intercepted call kind.

For each kind (factory, Tensor.to / .cuda, torch.device, torch.cuda query,
event record/elapsed, error paths, the report path, the SimulatedMPS float64
paths) this warms up, then makes CALLS intercepted calls and reports:

* the change of sys.getrefcount of every argument and of the objects
  _tdcore hands back (the target devices, dtypes, wrappers): must be 0;
* the change of sys.getallocatedblocks() (live Python objects): must stay
  under a fixed tolerance, independent of CALLS, so that one leaked object
  per call (or per thousand calls) shows;
* the RSS growth (psutil): must stay under 1 MB.

    python scripts/leak_full.py               # 1,000,000 calls per kind
    python scripts/leak_full.py --calls 20000 --kind factory

tests/test_leaks.py runs the same kinds with fewer calls in CI.  Kinds whose
API does not exist in this build (torch.cuda emulation, events) are skipped
and say so.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil
import torch

import TorchDevice
from TorchDevice import _patches, _tdcore

BLOCK_TOLERANCE = 200        # pymalloc blocks; independent of the count
RSS_LIMIT = 1 << 20          # 1 MB
# Under scripts/sanitize.sh, PYTHONMALLOC=malloc leaves no pymalloc blocks to
# count and ASan's quarantine holds freed memory: only reference counts are
# measured there.
SANITIZED = bool(os.environ.get("TORCHDEVICE_SANITIZER"))


def fresh(text: str) -> str:
    """A str object of our own: an interned literal such as "cuda" is
    shared with the whole interpreter and its count moves with it."""
    return "".join(list(text))


@dataclass
class Kind:
    name: str
    # -> (one round of calls, objects whose refcounts must not move[,
    #     a function that undoes the setup])
    setup: Callable[[], Tuple[Any, ...]]


@dataclass
class Result:
    kind: str
    calls: int
    refcount_delta: Dict[str, int] = field(default_factory=dict)
    blocks_delta: int = 0
    rss_delta: int = 0
    seconds: float = 0.0
    skipped: Optional[str] = None
    first: Optional[str] = None      # a first measurement that failed

    @property
    def ok(self) -> bool:
        return self.skipped is not None or (
            not any(self.refcount_delta.values())
            and (SANITIZED or (self.blocks_delta < BLOCK_TOLERANCE
                               and self.rss_delta < RSS_LIMIT)))

    def line(self) -> str:
        if self.skipped:
            return f"{self.kind:<16} skipped: {self.skipped}"
        bad = {k: v for k, v in self.refcount_delta.items() if v}
        return (f"{self.kind:<16} {self.calls:>9} calls  "
                f"refcount deltas {bad or 'none'}  "
                f"blocks {self.blocks_delta:+d}  "
                f"rss {self.rss_delta / 1024:+.0f} KiB  "
                f"{self.seconds:.1f}s  {'ok' if self.ok else 'LEAK'}"
                + (f"  (first measurement: {self.first.split(None, 1)[1]})"
                   if self.first else ""))


# ---- the workloads ------------------------------------------------------
# Each setup returns (one round of calls, objects whose refcounts must not
# move[, undo]).  A round makes ROUND_CALLS[kind] intercepted calls.

def _targets() -> List[Any]:
    """What _tdcore hands back: its target devices and dtypes."""
    return [torch.device("cuda"), torch.device("cpu"), torch.float32,
            torch.float64]


def factory_setup():
    cuda = fresh("cuda")
    # A second index: redirected off NVIDIA; on a GPU, CUDA's own, which
    # exists only where there are two.
    real = _patches.detect_profile() == "cuda"
    cuda1 = fresh("cuda:1" if not real or torch.cuda.device_count() > 1
                  else "cuda:0")
    raw = bytes(bytearray(b"cuda"))
    dev = torch.device("cuda", 0) if TorchDevice.is_enabled() else None
    f32 = torch.float32
    zeros, empty, tensor = torch.zeros, torch.empty, torch.tensor
    data = [1.0, 2.0]

    def round_() -> None:
        zeros(2, device=cuda)
        zeros(2, device=cuda1, dtype=f32)
        zeros(2, device=dev)
        empty(3)                       # None: the policy's default row
        empty(1, device=0)             # a bare ordinal
        tensor(data, device=cuda)
        torch.ones(2, 2, device=cuda, requires_grad=False)
        torch.arange(3, device=raw)
    return round_, [cuda, cuda1, raw, dev, f32, zeros, empty, tensor, data,
                    *_targets()]


def to_setup():
    t = torch.ones(4)
    m = torch.nn.Linear(2, 2)
    cuda, cpu = fresh("cuda"), fresh("cpu")
    dev = torch.device("cuda")
    f32 = torch.float32

    def round_() -> None:
        t.to(cuda)
        t.to(dev, f32)
        t.to(device=cuda, dtype=f32, non_blocking=True)
        t.to(cpu)
        t.cuda()
        t.cuda(0, non_blocking=True)
        t.cpu()
        t.numpy()
        m.to(cuda)
        m.cuda()
    return round_, [t, m, cuda, cpu, dev, f32, *_targets()]


def device_setup():
    cuda, toggle, mps = fresh("cuda"), fresh("cpu:-1"), fresh("mps")
    gen = torch.Generator

    def round_() -> None:
        torch.device(cuda)
        torch.device(cuda, 1)
        torch.device(mps)
        torch.device(0)
        torch.device(toggle)       # toggles the override on ...
        torch.device(toggle)       # ... and off again
        torch.device(type="cuda", index=2)
        gen(device=cuda)
    return round_, [cuda, toggle, mps, gen, *_targets()]


def error_setup():
    t = torch.ones(2)
    bad = [fresh("cuda:-1"), fresh("bogus"), fresh("cuda:01"),
           fresh(" cuda"), fresh("cpu:-2"), 1.5, -1, []]

    def round_() -> None:
        for b in bad:
            try:
                torch.zeros(1, device=b)
            except (RuntimeError, TypeError):
                pass
            try:
                t.to(b)
            except (RuntimeError, TypeError):
                pass
            try:
                torch.device(b)
            except (RuntimeError, TypeError):
                pass
    return round_, [t, *bad, *_targets()]


def report_setup():
    """Recording on: the same call sites hit again and again only count
    (the masquerade's recorded queries included, where it is installed)."""
    from TorchDevice import _report
    previous = _tdcore.get_report()
    _report.ensure_site_rules()
    _tdcore.set_report(True)
    cuda = fresh("cuda")
    t = torch.ones(2)
    masquerade = TorchDevice.hardware_profile() != "cuda"

    def round_() -> None:
        torch.zeros(1, device=cuda)
        torch.device(cuda)
        t.to(cuda)
        t.cuda()
        if masquerade:
            torch.cuda.is_available()
            torch.cuda.device_count()
            torch.accelerator.is_available()
            torch.accelerator.current_accelerator()
    return round_, [cuda, t, *_targets()], \
        lambda: _tdcore.set_report(previous)


def cuda_query_setup():
    c = torch.cuda
    needed = ("is_available", "device_count", "current_device",
              "get_device_name", "get_device_properties",
              "memory_allocated", "max_memory_allocated", "synchronize")
    missing = [n for n in needed if not hasattr(c, n)]
    if missing or not isinstance(c.is_available(), bool):
        raise LookupError(f"torch.cuda lacks {missing}")
    if _patches.detect_profile() != "cuda" and not c.is_available():
        raise LookupError("torch.cuda is not emulated in this build")

    def round_() -> None:
        c.is_available()
        c.device_count()
        c.current_device()
        c.get_device_name(0)
        c.get_device_properties(0)
        c.memory_allocated()
        c.max_memory_allocated()
        c.synchronize()
    return round_, [c, *_targets()]


def event_setup():
    c = torch.cuda
    if not hasattr(c, "Event"):
        raise LookupError("torch.cuda.Event is missing")
    start = c.Event(enable_timing=True)
    end = c.Event(enable_timing=True)
    start.record()
    end.record()
    end.synchronize()
    start.elapsed_time(end)            # raises if events are not emulated

    def round_() -> None:
        start.record()
        end.record()
        end.synchronize()
        start.elapsed_time(end)
        end.query()
    return round_, [start, end, *_targets()]


def simulated_mps_setup():
    """SimulatedMPS (meta stands in for the MPS device): the float64
    downcast and the float64 error path that TorchDevice raises itself."""
    saved = _tdcore.settings()
    TorchDevice.disable()
    _patches.apply(mps_device=torch.device("meta"))
    f64 = torch.float64
    t = torch.ones(2)
    cuda, cpu = fresh("cuda"), fresh("cpu")

    def round_() -> None:
        _tdcore.configure("mps", "accelerate", "downcast")
        torch.zeros(2, dtype=f64)
        t.to(cuda, f64)
        _tdcore.configure("mps", "accelerate", "error")
        try:
            torch.zeros(2, device=cuda, dtype=f64)
        except TypeError:
            pass
        try:
            t.to(cpu, dtype=f64)
        except TypeError:
            pass

    def restore() -> None:
        TorchDevice.disable()
        TorchDevice.enable()
        _tdcore.configure(saved["profile"], saved["mode"], saved["float64"])
    return round_, [f64, t, cuda, cpu, torch.float32], restore


KINDS = [
    Kind("factory", factory_setup),
    Kind("to", to_setup),
    Kind("torch.device", device_setup),
    Kind("errors", error_setup),
    Kind("report", report_setup),
    Kind("cuda-query", cuda_query_setup),
    Kind("event", event_setup),
    Kind("simulated-mps", simulated_mps_setup),
]
ROUND_CALLS = {"factory": 8, "to": 10, "torch.device": 8, "errors": 24,
               "report": 4, "cuda-query": 8, "event": 5,
               "simulated-mps": 4}


def measure(kind: Kind, calls: int, warmup: int = 2000) -> Result:
    """One measurement; where it fails, a second one decides.  A leak grows
    at every call, so it fails both; something else allocating once in the
    window (a log record, a cache of torch's, another thread) does not
    come back."""
    result = Result(kind.name, calls)
    try:
        round_, watched, *undo = kind.setup()
    except LookupError as exc:
        result.skipped = str(exc)
        return result
    try:
        per_round = ROUND_CALLS[kind.name]
        rounds = max(1, calls // per_round)
        result.calls = rounds * per_round
        for _ in range(max(1, warmup // per_round)):
            round_()
        _measure_rounds(result, round_, watched, rounds)
        if not result.ok:
            first = result.line()
            _measure_rounds(result, round_, watched, rounds)
            result.first = first
    finally:
        for restore in undo:
            restore()
        _tdcore.set_cpu_override(False)
    return result


def _measure_rounds(result: Result, round_: Callable[[], None],
                    watched: List[Any], rounds: int) -> None:
    names = [f"{i}:{type(o).__name__}" for i, o in enumerate(watched)]
    gc.collect()
    proc = psutil.Process()
    before_refs = [sys.getrefcount(o) for o in watched]
    before_blocks = sys.getallocatedblocks()
    before_rss = proc.memory_info().rss
    start = time.perf_counter()
    for _ in range(rounds):
        round_()
    result.seconds = time.perf_counter() - start
    gc.collect()
    after_rss = proc.memory_info().rss
    after_blocks = sys.getallocatedblocks()
    after_refs = [sys.getrefcount(o) for o in watched]
    result.refcount_delta = {n: a - b for n, a, b in
                             zip(names, after_refs, before_refs)}
    result.blocks_delta = after_blocks - before_blocks
    result.rss_delta = after_rss - before_rss


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000,
                        help="intercepted calls per kind")
    parser.add_argument("--kind", action="append",
                        choices=[k.name for k in KINDS])
    args = parser.parse_args(argv)
    failed = False
    for kind in KINDS:
        if args.kind and kind.name not in args.kind:
            continue
        res = measure(kind, args.calls)
        print(res.line(), flush=True)
        failed |= not res.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
