"""Per-call overhead of each intercepted API: TorchDevice's C wrappers and a
pure-Python wrapper with the same policy, measured in one run and drawn as
a PNG (docs/performance_overhead.png).

For every case the same call is timed (CPU time of the calling thread, one
torch thread) natively (TorchDevice disabled, the
device a "cuda" request lands on), through TorchDevice, and through the
Python wrappers of benchmarks/end_to_end.py (installed in TorchDevice's
place), in interleaved repetitions; the medians are kept and the overhead
is the difference with native.  The Python column is shown only where the
Python wrappers cover the call, i.e. give the same answer as TorchDevice
(they cannot replace `torch.device`'s constructor, and they leave
`torch.cuda` alone but for synchronize).  Not a test: nothing is asserted.

    python benchmarks/plot_overhead.py [--reps 7] [--out docs/performance_overhead.png]
                                       [--json out.json] [--markdown]

Needs matplotlib for the PNG (pip install matplotlib); without it the
table is still printed.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

import TorchDevice

sys.path.insert(0, str(Path(__file__).resolve().parent))
import end_to_end  # noqa: E402  (same directory)

ROOT = Path(__file__).resolve().parent.parent
PROFILE = TorchDevice.hardware_profile()
NATIVE = {"cpu": "cpu", "mps": "mps", "cuda": "cuda"}[PROFILE]

Case = Tuple[str, Callable[[], Any], Callable[[], Any]]


def cases() -> List[Case]:
    """(label, CUDA-style call, native call doing the same work here)."""
    was = TorchDevice.is_enabled()
    TorchDevice.disable()
    t = torch.ones(4, device=NATIVE)
    lin = torch.nn.Linear(64, 64, device=NATIVE)
    cuda_obj, native_obj = torch.device("cuda"), torch.device(NATIVE)
    native_mod = {"cpu": torch.cpu, "mps": torch.mps,
                  "cuda": torch.cuda}[PROFILE]
    trivial = torch._C._get_cudnn_enabled     # a C call that does nothing
    current_stream = getattr(native_mod, "current_stream", trivial)
    if was:
        TorchDevice.enable()
    return [
        ("torch.device('cuda')", lambda: torch.device("cuda"),
         lambda: torch.device(NATIVE)),
        ("torch.zeros(4, device='cuda')", lambda: torch.zeros(4, device="cuda"),
         lambda: torch.zeros(4, device=NATIVE)),
        ("torch.zeros(4, device=<cuda obj>)",
         lambda: torch.zeros(4, device=cuda_obj),
         lambda: torch.zeros(4, device=native_obj)),
        ("torch.randn(4, device='cuda')", lambda: torch.randn(4, device="cuda"),
         lambda: torch.randn(4, device=NATIVE)),
        ("torch.arange(8, device='cuda')",
         lambda: torch.arange(8, device="cuda"),
         lambda: torch.arange(8, device=NATIVE)),
        ("torch.tensor([1.,2.], device='cuda')",
         lambda: torch.tensor([1.0, 2.0], device="cuda"),
         lambda: torch.tensor([1.0, 2.0], device=NATIVE)),
        ("torch.ones_like(t)", lambda: torch.ones_like(t),
         lambda: torch.ones_like(t)),
        ("t.to('cuda')", lambda: t.to("cuda"), lambda: t.to(NATIVE)),
        ("t.to(<cuda obj>)", lambda: t.to(cuda_obj),
         lambda: t.to(native_obj)),
        ("t.to(torch.float32)", lambda: t.to(torch.float32),
         lambda: t.to(torch.float32)),
        ("t.cuda()", lambda: t.cuda(), lambda: t.to(NATIVE)),
        ("t.cpu()", lambda: t.cpu(), lambda: t.to(NATIVE)),
        ("Linear(64,64).to('cuda')", lambda: lin.to("cuda"),
         lambda: lin.to(NATIVE)),
        ("Linear(64,64).cuda()", lambda: lin.cuda(), lambda: lin.to(NATIVE)),
        # Native counterparts are called through a lambda too, so that both
        # sides pay the same Python call.
        ("torch.cuda.is_available()", lambda: torch.cuda.is_available(),
         lambda: native_mod.is_available()),
        ("torch.cuda.device_count()", lambda: torch.cuda.device_count(),
         lambda: native_mod.device_count()),
        ("torch.cuda.synchronize()", lambda: torch.cuda.synchronize(),
         lambda: native_mod.synchronize()),
        ("torch.cuda.current_stream()", lambda: torch.cuda.current_stream(),
         lambda: current_stream()),
        ("torch.cuda.memory_allocated()",
         lambda: torch.cuda.memory_allocated(), lambda: trivial()),
    ]


def _answer(value: Any) -> Any:
    """What a call answered, for comparing the Python wrappers with
    TorchDevice (device and kind of the result, not its identity)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.device), value.dtype, tuple(value.shape))
    if isinstance(value, torch.nn.Module):
        return ("module", str(next(value.parameters()).device))
    if isinstance(value, torch.device):
        return ("device", str(value))
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    return type(value).__name__


def _state(name: str, py: end_to_end.PythonWrappers) -> None:
    """native: nothing installed; TorchDevice: enabled; python: the Python
    wrappers installed.  Always from a clean slate, so neither layer ever
    saves the other's wrappers as torch's originals."""
    TorchDevice.disable()
    py.uninstall()
    if name == "TorchDevice":
        TorchDevice.enable()
    elif name == "python":
        py.install()


def _per_call(fn: Callable[[], Any], number: int) -> float:
    """Seconds per call, in this thread's CPU time: other processes on a
    shared machine do not count (torch runs one intra-op thread here)."""
    return timeit.Timer(fn, timer=time.thread_time).timeit(number) / number


def _calibrate(fn: Callable[[], Any]) -> int:
    number = 200
    while _per_call(fn, number) * number < 0.01:        # ~10 ms blocks
        number *= 2
    return number


def measure(reps: int) -> List[Dict[str, Any]]:
    py = end_to_end.PythonWrappers()
    results = []
    for label, cuda_call, native_call in cases():
        answers: Dict[str, Any] = {}
        calls = {"native": native_call, "TorchDevice": cuda_call,
                 "python": cuda_call}
        for name in ("TorchDevice", "python"):
            _state(name, py)
            try:
                answers[name] = _answer(cuda_call())
            except Exception as exc:           # not covered by Python
                answers[name] = f"raises {type(exc).__name__}"
        covered = answers["python"] == answers["TorchDevice"]
        if not covered:
            del calls["python"]
        _state("native", py)
        number = _calibrate(native_call)
        times: Dict[str, List[float]] = {k: [] for k in calls}
        order = list(calls)
        for rep in range(reps):
            k = rep % len(order)
            for name in order[k:] + order[:k]:
                _state(name, py)
                gc.collect()
                times[name].append(_per_call(calls[name], number) * 1e9)
        med = {k: statistics.median(v) for k, v in times.items()}
        row: Dict[str, Any] = {
            "api": label, "native_ns": med["native"],
            "torchdevice_ns": med["TorchDevice"],
            "torchdevice_overhead_ns": med["TorchDevice"] - med["native"],
            "python_ns": med.get("python"),
            "python_overhead_ns": (med["python"] - med["native"]
                                   if covered else None),
        }
        results.append(row)
    _state("TorchDevice", py)
    return results


def table(results: List[Dict[str, Any]]) -> str:
    lines = ["| intercepted call | native ns | TorchDevice ns | overhead ns "
             "| pure-Python ns | overhead ns | Python / C overhead |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r["python_overhead_ns"] is None:
            py, py_over, gain = "—", "—", "—"
        else:
            py = f"{r['python_ns']:.0f}"
            py_over = f"{r['python_overhead_ns']:.0f}"
            gain = (f"{r['python_overhead_ns'] / r['torchdevice_overhead_ns']:.1f}x"
                    if r["torchdevice_overhead_ns"] > 5 else "—")
        lines.append(f"| `{r['api']}` | {r['native_ns']:.0f} | "
                     f"{r['torchdevice_ns']:.0f} | "
                     f"{r['torchdevice_overhead_ns']:.0f} | {py} | {py_over} "
                     f"| {gain} |")
    return "\n".join(lines)


def plot(results: List[Dict[str, Any]], out: Path, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)")
        return False
    labels = [r["api"] for r in results][::-1]
    td_raw = [r["torchdevice_overhead_ns"] for r in results][::-1]
    td = [max(v, 1.0) for v in td_raw]
    pyv = [r["python_overhead_ns"] for r in results][::-1]
    y = list(range(len(labels)))
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(labels) + 1.6))
    h = 0.38
    ax.barh([i + h / 2 for i in y], td, height=h, color="#2b7bba",
            label="TorchDevice (C wrappers)")
    py_y = [i - h / 2 for i, v in zip(y, pyv) if v is not None]
    py_v = [max(v, 1.0) for v in pyv if v is not None]
    ax.barh(py_y, py_v, height=h, color="#e08a2c",
            label="pure-Python wrappers, same policy")
    def text(v: float) -> str:
        return f"{v:.0f}" if v >= 1 else f"{v:.0f} (no cost measurable)"
    for i, v, raw in zip(y, td, td_raw):
        ax.text(v * 1.08, i + h / 2, text(raw), va="center", fontsize=7)
    for i, v in zip(py_y, [p for p in pyv if p is not None]):
        ax.text(max(v, 1.0) * 1.08, i, text(v), va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8, family="monospace")
    ax.set_xlabel("overhead per call over native torch, ns (log scale;\n"
                  "differences under 1 ns, i.e. within noise, drawn at 1)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "docs" /
                                             "performance_overhead.png"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--from-json", help="plot saved results, no timing")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown")
    args = parser.parse_args()

    if args.from_json:
        with open(args.from_json) as fh:
            saved = json.load(fh)
        results, machine = saved["results"], saved["machine"]
    else:
        torch.set_num_threads(1)
        machine = end_to_end.machine()
        print(f"machine: {machine}")
        results = measure(args.reps)
    print(table(results) if args.markdown else "\n".join(
        f"{r['api']:<38}{r['native_ns']:>9.0f}{r['torchdevice_ns']:>9.0f}"
        f"{r['torchdevice_overhead_ns']:>8.0f}"
        + (f"{r['python_ns']:>9.0f}{r['python_overhead_ns']:>8.0f}"
           if r["python_overhead_ns"] is not None else f"{'-':>9}{'-':>8}")
        for r in results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "results": results}, fh, indent=2)
    short = machine.split(";")[0]
    if plot(results, Path(args.out),
            f"Per-call overhead of intercepted APIs ({short}, profile "
            f"{PROFILE})"):
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
