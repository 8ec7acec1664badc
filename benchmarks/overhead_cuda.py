"""Per-call cost of the CUDA masquerade's hottest replacements.

For torch.cuda.is_available(), device_count() and memory_allocated(), and
torch.accelerator's is_available(), device_count() and
current_accelerator(), it prints nanoseconds per call under TorchDevice
(logging and report off) beside a trivial native C
call of torch (torch._C._get_cudnn_enabled, a function that returns a bool)
measured in the same run, and torch's own function for comparison (with
TorchDevice disabled; on a machine without CUDA it answers False/0 without
doing any work).  Target: within 100 ns of the baseline each.  Not a test:
timings are printed, never asserted.

    python benchmarks/overhead_cuda.py [--reps 11] [--number 200000]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import timeit
from typing import Callable, Dict, List, Tuple

import torch

import TorchDevice


def per_call_ns(fn: Callable[[], object], number: int, reps: int) -> float:
    timer = timeit.Timer("f()", globals={"f": fn})
    return statistics.median(timer.repeat(reps, number)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()

    names = ("cuda.is_available", "cuda.device_count",
             "cuda.memory_allocated", "accelerator.is_available",
             "accelerator.device_count", "accelerator.current_accelerator")

    def lookup(name: str) -> Callable[[], object]:
        space, fn = name.split(".")
        return getattr(getattr(torch, space), fn)
    TorchDevice.disable()
    native: Dict[str, Callable[[], object]] = {n: lookup(n) for n in names}
    TorchDevice.enable()
    ours = {n: lookup(n) for n in names}
    baseline_fn = torch._C._get_cudnn_enabled

    rows: List[Tuple[str, float, float]] = []
    base_runs = []
    for name in names:
        # Interleave baseline and replacement so drift hits both.
        base_runs.append(per_call_ns(baseline_fn, args.number, args.reps))
        rows.append((name, per_call_ns(ours[name], args.number, args.reps),
                     per_call_ns(native[name], args.number, args.reps)))
    base = statistics.median(base_runs)
    print(f"profile {TorchDevice.hardware_profile()}, "
          f"torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}")
    print(f"baseline torch._C._get_cudnn_enabled(): {base:7.1f} ns/call")
    print(f"{'torch.<name>()':36} {'TorchDevice':>12} {'- baseline':>11} "
          f"{'torch native':>13}")
    for name, ns, nat in rows:
        print(f"{name + '()':36} {ns:9.1f} ns {ns - base:8.1f} ns "
              f"{nat:10.1f} ns")
    print("memory_allocated on the CPU reads the resident set at most every "
          "50 us (docs/masquerade.md).")


if __name__ == "__main__":
    main()
