"""Per-call overhead of TorchDevice's intercepted APIs, as ratios.

Each intercepted call (TorchDevice enabled, CUDA-style request) is compared
with the native torch call that produces the same result on this machine
(TorchDevice disabled, request for the device the redirect lands on), in the
same process, with interleaved repetitions; the median of the repetitions is
reported.  Not a test: timings are printed, never asserted.

    python benchmarks/overhead.py [--reps 15] [--moves copy|alias] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import timeit
from typing import Callable, Dict, List, Optional, Tuple

import torch

import TorchDevice

TARGET = TorchDevice.hardware_profile()            # the profile in force
# The device "cuda" lands on: cpu, mps, cuda, or the accelerator's own type
# (the simulated accelerator of make test-accel: ratios against native calls
# on that device).
NATIVE = TorchDevice.policy()["device"]


def cases() -> List[Tuple[str, Callable[[], object], Callable[[], object],
                          Optional[float]]]:
    """(name, intercepted call, native call, target ratio or None for rows
    shown for information)."""
    was = TorchDevice.is_enabled()
    TorchDevice.disable()
    # Built by native torch: a host tensor, one on the landing device, a
    # layer there, a real cuda device object for the intercepted call and
    # the landing device's for the native one.  Strings make torch parse on
    # every call; objects show the wrapper's own cost.
    host = torch.ones(4)
    dev = torch.ones(4, device=NATIVE)
    lin = torch.nn.Linear(256, 256, device=NATIVE)
    cuda_obj, native_obj = torch.device("cuda"), torch.device(NATIVE)
    if was:
        TorchDevice.enable()
    # Moves copy, as on CUDA (docs/policy.md): a host tensor moved to "cuda"
    # is a new tensor, whose native counterpart is a copy (explicit where
    # the landing device is the host); one already "on cuda" is moved by the
    # no-op torch makes natively.
    same = NATIVE == "cpu"
    acc = torch.ones(4, device="cuda") if was else dev
    home = acc.cpu()
    # What a device reads as (docs/policy.md): every device's `type`, str
    # and repr go through TorchDevice's getter; the one built for "cuda"
    # reads "cuda" to the program.
    asked = torch.device("cuda") if was else native_obj
    # One asked for with an index reads it (torch.device("cuda", 1).index is
    # 1); its native counterpart is the landing device's own index.
    asked_one = torch.device("cuda", 1) if was else native_obj
    return [
        ("torch.device('cuda')", lambda: torch.device("cuda"),
         lambda: torch.device(NATIVE), 1.5),
        ("torch.zeros(4, device='cuda')", lambda: torch.zeros(4, device="cuda"),
         lambda: torch.zeros(4, device=NATIVE), 1.05),
        ("torch.zeros(4, device=<obj>)",
         lambda: torch.zeros(4, device=cuda_obj),
         lambda: torch.zeros(4, device=native_obj), None),
        ("host t.to('cuda') (copy)", lambda: host.to("cuda"),
         lambda: host.to(NATIVE, copy=same), 1.05),
        ("cuda t.to('cuda') (no-op)", lambda: acc.to("cuda"),
         lambda: dev.to(NATIVE), 1.05),
        ("cuda t.to(<obj>) (no-op)", lambda: acc.to(cuda_obj),
         lambda: dev.to(native_obj), None),
        ("cuda t.cpu() (copy)", lambda: acc.cpu(),
         lambda: dev.to("cpu", copy=same), None),
        # A host request copies whatever made the tensor (docs/policy.md):
        # against CUDA's no-op.
        ("host t.cpu() (copy; CUDA: no-op)", lambda: host.cpu(),
         lambda: host.cpu(), None),
        # ... unless a host request's move made it.
        ("t.cpu() of a .cpu() (no-op)", lambda: home.cpu(),
         lambda: host.cpu(), None),
        ("nn.Linear(256,256).to('cuda')", lambda: lin.to("cuda"),
         lambda: lin.to(NATIVE), 1.05),
        ("t.device.type", lambda: dev.device.type, lambda: dev.device.type,
         None),
        ("torch.device('cuda').type", lambda: asked.type,
         lambda: native_obj.type, None),
        ("str(torch.device('cuda'))", lambda: str(asked),
         lambda: str(native_obj), None),
        ("torch.device('cuda:1')", lambda: torch.device("cuda:1"),
         lambda: torch.device(NATIVE), None),
        ("torch.device('cuda', 1).index", lambda: asked_one.index,
         lambda: native_obj.index, None),
        # Under torch.set_default_device (set around each block in
        # measure()): "cuda" for the intercepted call, the landing device
        # for the native one.
        ("zeros(4) under default 'cuda'", lambda: torch.zeros(4),
         lambda: torch.zeros(4), None),
        ("t + t under default 'cuda'", lambda: dev + dev, lambda: dev + dev,
         None),
    ]


def _default_device_for(name: str, intercepted: bool) -> Optional[str]:
    if "under default" not in name:
        return None
    return "cuda" if intercepted else NATIVE


def timed(name: str, fn: Callable[[], object], number: int,
          intercepted: bool) -> float:
    device = _default_device_for(name, intercepted)
    if device is None:
        return per_call_ns(fn, number)
    torch.set_default_device(device)
    try:
        return per_call_ns(fn, number)
    finally:
        torch.set_default_device(None)


def per_call_ns(fn: Callable[[], object], number: int) -> float:
    return timeit.timeit(fn, number=number) / number * 1e9


def calibrate(fn: Callable[[], object]) -> int:
    number = 100
    while per_call_ns(fn, number) * number < 20e6:     # ~20 ms per block
        number *= 2
    return number


def measure(reps: int) -> List[Dict[str, object]]:
    results = []
    for name, intercepted, native, target in cases():
        TorchDevice.disable()
        number = calibrate(native)
        native_ns, td_ns = [], []
        for _ in range(reps):
            TorchDevice.disable()
            native_ns.append(timed(name, native, number, False))
            TorchDevice.enable()
            td_ns.append(timed(name, intercepted, number, True))
        ratios = [a / b for a, b in zip(td_ns, native_ns)]
        results.append({
            "api": name, "native_ns": statistics.median(native_ns),
            "torchdevice_ns": statistics.median(td_ns),
            "ratio": statistics.median(ratios), "target": target,
        })
    TorchDevice.enable()
    return results


def import_cost(runs: int = 7) -> float:
    """Milliseconds `import TorchDevice` adds on top of `import torch`, as a
    user sees it: with the bytecode cache that Python (or pip, at install)
    writes.  A first run writes it even where PYTHONDONTWRITEBYTECODE is
    set in the benchmark's own environment."""
    import os
    code = ("import time, torch; t = time.perf_counter(); import TorchDevice;"
            " print(time.perf_counter() - t)")
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONDONTWRITEBYTECODE"}
    samples = []
    for i in range(runs + 1):
        out = subprocess.run([sys.executable, "-c", code], check=True,
                             capture_output=True, text=True, env=env).stdout
        if i:                        # the first run fills the cache
            samples.append(float(out.strip()) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--moves", choices=("copy", "alias"),
                        help="TorchDevice's moves setting (default: as "
                             "configured, copy unless TORCHDEVICE_MOVES)")
    args = parser.parse_args()
    if args.moves:
        TorchDevice.configure(moves=args.moves)

    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{platform.system()} {platform.release()}; python "
          f"{platform.python_version()}; torch {torch.__version__}; "
          f"profile {TARGET} (lands on {NATIVE}), moves "
          f"{TorchDevice.policy()['moves']}")
    results = measure(args.reps)
    print(f"{'intercepted call':<32}{'native ns':>11}{'TD ns':>9}"
          f"{'ratio':>8}{'target':>8}")
    for r in results:
        if r["target"] is None:
            verdict, target = "", "-"
        else:
            verdict = "ok" if r["ratio"] <= r["target"] else "MISS"
            target = f"<={r['target']}"
        print(f"{r['api']:<32}{r['native_ns']:>11.0f}{r['torchdevice_ns']:>9.0f}"
              f"{r['ratio']:>8.3f}{target:>8} {verdict}")
    ms = import_cost()
    print(f"{'import TorchDevice after torch':<32}{ms:>11.1f} ms  "
          f"(target <= 30 ms) {'ok' if ms <= 30 else 'MISS'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"calls": results, "import_ms": ms}, fh, indent=2)


if __name__ == "__main__":
    main()
