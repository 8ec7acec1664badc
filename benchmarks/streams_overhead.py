"""Cost of TorchDevice's emulated CUDA streams and events, as ratios.

Each emulated call is compared, in the same process and with interleaved
repetitions, with the closest native operation on this machine: torch's
generic stream/event objects for the landing device (profile cpu / mps), the
host clock for a CPU-backend record(), torch.mps.Event for the Metal backend.
The median of the repetitions is printed; nothing is asserted.  On profile
cuda torch.cuda is native and there is nothing to compare.

    python benchmarks/streams_overhead.py [--reps 9] [--number 20000]
"""
from __future__ import annotations

import argparse
import statistics
import time
import timeit
from typing import Callable, List, Tuple

import torch

import TorchDevice


def cases(profile: str) -> List[Tuple[str, Callable[[], object],
                                      Callable[[], object], str]]:
    native_dev = "mps" if profile == "mps" else "cpu"
    event = torch.cuda.Event(enable_timing=True)
    stream = torch.cuda.Stream()
    rows = [
        ("torch.cuda.Event()", torch.cuda.Event,
         lambda: torch.Event(native_dev), f"torch.Event('{native_dev}')"),
        ("torch.cuda.Stream()", torch.cuda.Stream,
         lambda: torch.Stream(native_dev), f"torch.Stream('{native_dev}')"),
        ("torch.cuda.current_stream()", torch.cuda.current_stream,
         lambda: torch.Stream(native_dev), f"torch.Stream('{native_dev}')"),
    ]
    if profile == "mps":
        native_event = torch.mps.Event(enable_timing=True)
        rows.append(("Event.record()", event.record, native_event.record,
                     "torch.mps.Event.record()"))
    else:
        rows.append(("Event.record()", event.record, time.perf_counter_ns,
                     "time.perf_counter_ns()"))
    rows.append(("Event.record(stream)", lambda: event.record(stream),
                 time.perf_counter_ns, "time.perf_counter_ns()"))

    def context() -> None:
        with torch.cuda.stream(stream):
            pass

    def python_context() -> None:
        with _Nothing():
            pass

    rows.append(("with torch.cuda.stream(s)", context, python_context,
                 "an empty Python context manager"))
    return rows


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    profile = TorchDevice.hardware_profile()
    print(f"profile {profile}, torch {torch.__version__}")
    if profile == "cuda":
        print("torch.cuda is native on this profile: nothing to compare")
        return
    print(f"{'emulated call':<30} {'ns':>8} {'native':>8} {'ratio':>6}  "
          "native reference")
    for name, ours, native, label in cases(profile):
        ours_ns, native_ns = [], []
        for _ in range(args.reps):
            ours_ns.append(timeit.timeit(ours, number=args.number)
                           / args.number * 1e9)
            native_ns.append(timeit.timeit(native, number=args.number)
                             / args.number * 1e9)
        o, n = statistics.median(ours_ns), statistics.median(native_ns)
        print(f"{name:<30} {o:8.0f} {n:8.0f} {o / n:6.2f}  {label}")


if __name__ == "__main__":
    main()
