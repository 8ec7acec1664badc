"""What the migration report costs: ns per intercepted call with the report
off and on, against native torch, all in the same run.

    python benchmarks/report_overhead.py [--repeat 100] [--number 1000]

"native" calls torch's originals (TorchDevice disabled) with the device the
policy would pick, so that the three columns do the same work; "off" is
TorchDevice enabled with logging and the report off (the default); "on"
records every call (TORCHDEVICE_REPORT).  The "on - off" column is the
price of recording; the target is at most 300 ns (docs/performance.md).

A second table does the same for the device queries the masquerade answers
and records (profiles cpu and mps): there "native" is a trivial C call of
torch (torch._C._get_cudnn_enabled), the reference of
benchmarks/overhead_cuda.py, since torch's own queries answer something
else here.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Callable, Dict, List, Tuple

import torch

import TorchDevice
from TorchDevice import _report, _tdcore


def _loops(dev: str, n: int) -> Dict[str, Callable[[], None]]:
    """Each case calls the API n times from a loop in this file (the user
    site), so the frame walk stops at the first frame, as in user code."""
    t = torch.ones(4)

    def device() -> None:
        for _ in range(n):
            torch.device(dev)

    def zeros() -> None:
        for _ in range(n):
            torch.zeros(4, device=dev)

    def tensor_to() -> None:
        for _ in range(n):
            t.to(dev)

    def tensor_cuda() -> None:
        if dev == "cuda":
            for _ in range(n):
                t.cuda()
        else:   # native: where .cuda() lands, asked for directly
            for _ in range(n):
                t.to(dev)

    return {"torch.device": device, "torch.zeros": zeros,
            "Tensor.to": tensor_to, "Tensor.cuda": tensor_cuda}


native_target = "cpu"


def _set_mode(mode: str) -> None:
    if mode == "native":
        TorchDevice.disable()
        return
    TorchDevice.enable()
    _tdcore.set_report(mode == "on")


def measure(number: int, repeat: int) -> List[Tuple[str, float, float, float]]:
    """Short bursts of each mode, interleaved, best burst kept: on a shared
    machine the other load hits every mode alike and the minimum is the
    undisturbed cost."""
    global native_target
    native_target = TorchDevice.hardware_profile()
    if native_target == "mps":
        native_target = "mps:0"
    TorchDevice.configure(log_level=logging.WARNING, report=False)
    TorchDevice.clear_report()
    _report.ensure_site_rules()      # as when the report is turned on
    redirected = _loops("cuda", number)
    native = _loops(native_target, number)
    rows = []
    for name in redirected:
        n = number
        best = {"native": float("inf"), "off": float("inf"),
                "on": float("inf")}
        for _ in range(repeat):
            for mode in best:
                _set_mode(mode)
                fn = native[name] if mode == "native" else redirected[name]
                start = time.perf_counter_ns()
                fn()
                best[mode] = min(best[mode],
                                 (time.perf_counter_ns() - start) / n)
        _set_mode("off")
        rows.append((name, best["native"], best["off"], best["on"]))
    return rows


def _query_loops(n: int) -> Dict[str, Callable[[], None]]:
    """The masquerade's recorded queries, called from this file, and the
    baseline called the same way."""
    def loop(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                fn()
        return run
    acc = torch.accelerator
    base = torch._C._get_cudnn_enabled
    return {
        "baseline": loop(lambda: base()),
        "cuda.is_available": loop(lambda: torch.cuda.is_available()),
        "cuda.device_count": loop(lambda: torch.cuda.device_count()),
        "acc.is_available": loop(lambda: acc.is_available()),
        "acc.device_count": loop(lambda: acc.device_count()),
        "acc.current_acc": loop(lambda: acc.current_accelerator()),
    }


def measure_queries(number: int, repeat: int
                    ) -> List[Tuple[str, float, float, float]]:
    TorchDevice.configure(log_level=logging.WARNING, report=False)
    TorchDevice.clear_report()
    _report.ensure_site_rules()
    loops = _query_loops(number)
    baseline = loops.pop("baseline")
    rows = []
    for name, fn in loops.items():
        best = {"native": float("inf"), "off": float("inf"),
                "on": float("inf")}
        for _ in range(repeat):
            for mode in best:
                if mode != "native":
                    _tdcore.set_report(mode == "on")
                run = baseline if mode == "native" else fn
                start = time.perf_counter_ns()
                run()
                best[mode] = min(best[mode],
                                 (time.perf_counter_ns() - start) / number)
        _tdcore.set_report(False)
        rows.append((name, best["native"], best["off"], best["on"]))
    return rows


def _print(rows: List[Tuple[str, float, float, float]]) -> None:
    head = (f"{'call':18} {'native':>8} {'off':>8} {'on':>8} "
            f"{'off-nat':>8} {'on-off':>8}")
    print(head)
    for name, nat, off, on in rows:
        print(f"{name:18} {nat:8.0f} {off:8.0f} {on:8.0f} {off - nat:8.0f} "
              f"{on - off:8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=1000,
                    help="calls per burst")
    ap.add_argument("--repeat", type=int, default=100,
                    help="bursts per mode")
    args = ap.parse_args()
    rows = measure(args.number, args.repeat)
    print(f"torch {torch.__version__}, TorchDevice {TorchDevice.__version__}, "
          f"profile {TorchDevice.hardware_profile()}; 'cuda' requests vs "
          f"native '{native_target}'; best of {args.repeat} bursts of "
          f"{args.number}, ns per call")
    head = (f"{'call':14} {'native':>8} {'off':>8} {'on':>8} "
            f"{'off/nat':>8} {'on/nat':>8} {'on-off':>8}")
    print(head)
    for name, nat, off, on in rows:
        print(f"{name:14} {nat:8.0f} {off:8.0f} {on:8.0f} {off / nat:8.2f} "
              f"{on / nat:8.2f} {on - off:8.0f}")
    if TorchDevice.hardware_profile() != "cuda":
        print("masquerade queries (native: torch._C._get_cudnn_enabled via a "
              "lambda, as the queries are called here)")
        _print(measure_queries(args.number, args.repeat))
    TorchDevice.clear_report()


if __name__ == "__main__":
    main()
