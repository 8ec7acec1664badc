"""End-to-end cost of TorchDevice on whole training steps, as ratios.

Two steps written the CUDA way (inputs made with device="cuda", the model's
own internal factory calls, torch.cuda.synchronize at the end):

- gpt2:  a GPT-2 forward + backward + AdamW step (transformers, tiny config,
         random weights; skipped when transformers is missing);
- mlp:   a small MLP training step (the one of examples/demo_neural_network.py).

Each step runs three ways in the same process, in interleaved repetitions
(the order rotates every repetition), and the median of the per-repetition
ratios against native is printed:

- native:      TorchDevice disabled, the same code with "cpu" (the device a
               "cuda" request lands on here) and torch.cpu.synchronize;
- TorchDevice: enabled, "cuda" requests, torch.cuda.synchronize;
- python:      TorchDevice disabled and a pure-Python wrapper of every
               function TorchDevice wraps, with the same policy (written
               here), installed instead: what a Python implementation of the
               same redirection costs.  The gain of the C hot path is the
               ratio of the two overheads.

Target for TorchDevice: ratio <= 1.02.  Not a test: timings are printed,
never asserted.  By default torch runs one intra-op thread and the clock is
the main thread's CPU time, so that other processes on a shared machine do
not swamp the few microseconds being measured (--threads, --clock wall).

    python benchmarks/end_to_end.py [--reps 11] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import TorchDevice
from TorchDevice import _patches, _tdcore

TARGET = 1.02

# ---- the pure-Python baseline: same policy, Python wrappers --------------


class PyPolicy:
    """The redirection policy of docs/policy.md in Python (the table of
    design §3), for the profile and mode in force."""

    def __init__(self, profile: str, mode: str) -> None:
        self.profile, self.mode = profile, mode
        self.override = False
        self.cpu = torch.device("cpu")
        self.accelerator = {"cuda": torch.device("cuda"),
                            "mps": torch.device("mps", 0),
                            "cpu": self.cpu}[profile]
        self._parsed: Dict[str, Optional[Tuple[str, int]]] = {}

    def parse(self, request: Any) -> Optional[Tuple[str, int]]:
        """(type, index) of a request; None where the policy has no say
        (torch then raises its own error for malformed input)."""
        if isinstance(request, torch.device):
            index = request.index
            return request.type, -1 if index is None else index
        if isinstance(request, str):
            try:
                return self._parsed[request]
            except KeyError:
                kind, colon, index = request.strip().partition(":")
                parsed: Optional[Tuple[str, int]] = None
                if not colon:
                    parsed = (kind, -1)
                elif index.lstrip("-").isdigit():
                    parsed = (kind, int(index))
                self._parsed[request] = parsed
                return parsed
        if isinstance(request, int) and not isinstance(request, bool):
            return "cuda", request
        return None

    def resolve(self, request: Any, none_policy: bool) -> Any:
        if request is None:
            if (not none_policy or self.override or self.profile == "cpu"
                    or self.mode != "accelerate"
                    or torch._C._len_torch_function_stack()):
                return None
            return self.accelerator
        parsed = self.parse(request)
        if parsed is None:
            return request
        kind, index = parsed
        if kind == "cpu":
            if index == -1 and isinstance(request, str) and request.endswith(
                    ":-1"):
                self.override = not self.override
                return self.cpu
            if self.override or self.mode != "accelerate":
                return self.cpu
            return self.accelerator
        if kind == "cuda":
            return request if self.profile == "cuda" else self.accelerator
        if kind == "mps":
            return request if self.profile == "mps" else self.accelerator
        return request


def _py_factory(orig: Callable[..., Any], policy: PyPolicy, pos: int,
                none_policy: bool) -> Callable[..., Any]:
    def factory(*args: Any, **kwargs: Any) -> Any:
        if "device" in kwargs:
            kwargs["device"] = policy.resolve(kwargs["device"], none_policy)
            if kwargs["device"] is None:
                del kwargs["device"]
        elif 0 <= pos < len(args):
            args = list(args)
            args[pos] = policy.resolve(args[pos], none_policy)
        elif none_policy:
            target = policy.resolve(None, True)
            if target is not None:
                kwargs["device"] = target
        return orig(*args, **kwargs)
    return factory


def _py_to(orig: Callable[..., Any], policy: PyPolicy) -> Callable[..., Any]:
    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], (str, torch.device, int)) \
                and not isinstance(args[0], bool):
            args = (policy.resolve(args[0], False),) + args[1:]
        elif "device" in kwargs:
            kwargs["device"] = policy.resolve(kwargs["device"], False)
        return orig(self, *args, **kwargs)
    return to


def _py_move(orig: Callable[..., Any], policy: PyPolicy, request: str,
             fallback: Callable[..., Any]) -> Callable[..., Any]:
    def move(self: Any, device: Any = None, *args: Any, **kwargs: Any) -> Any:
        wanted = request if device is None else device
        if isinstance(wanted, int) and request != "cuda":
            wanted = f"{request}:{wanted}"
        target = policy.resolve(wanted, False)
        parsed = policy.parse(wanted)
        if parsed is not None and parsed[0] == policy.profile:
            if device is None:
                return orig(self, *args, **kwargs)
            return orig(self, device, *args, **kwargs)
        kwargs.pop("memory_format", None)
        return fallback(self, target, *args, **kwargs)
    return move


def _py_numpy(orig: Callable[..., Any]) -> Callable[..., Any]:
    def numpy(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.device.type != "cpu":
            self = self.to("cpu")
        return orig(self, *args, **kwargs)
    return numpy


def _py_pin(orig: Callable[..., Any], policy: PyPolicy, is_pinned: bool
            ) -> Callable[..., Any]:
    def pin(self: Any, *args: Any, **kwargs: Any) -> Any:
        if policy.profile == "cuda":
            return orig(self, *args, **kwargs)
        return False if is_pinned else self
    return pin


def _py_synchronize(native: Callable[[], None]) -> Callable[..., None]:
    def synchronize(device: Any = None) -> None:
        native()
    return synchronize


@dataclass
class Entry:
    """One wrapped name: torch's original, TorchDevice's replacement, the
    Python wrapper, and how to build the latter around other callables."""
    owner: Any
    name: str
    original: Any
    torchdevice: Any
    python: Any
    build: Callable[[Any, Any], Any]      # (original, fallback) -> wrapper


class PythonWrappers:
    """Installs, in place of TorchDevice, a pure-Python wrapper of every
    function TorchDevice wraps with its C Wrapper type, built from
    TorchDevice's own patch table so that the two cover the same names."""

    def __init__(self) -> None:
        was = TorchDevice.is_enabled()
        TorchDevice.enable()
        settings = _tdcore.settings()
        self.policy = PyPolicy(settings["profile"], settings["mode"])
        self.entries: List[Entry] = []
        for owner, name, original, replacement in _patches.replaced():
            if not isinstance(replacement, _tdcore.Wrapper):
                continue                 # storages' __new__, masquerade
            build = self._builder(replacement)
            if build is not None:
                self.entries.append(Entry(
                    owner, name, original, replacement,
                    build(original, replacement.td_fallback), build))
        # The one torch.cuda function the workloads call.
        td_sync = torch.cuda.synchronize
        TorchDevice.disable()
        native = {"cpu": torch.cpu.synchronize,
                  "mps": getattr(torch.mps, "synchronize", None),
                  "cuda": torch.cuda.synchronize}[self.policy.profile]
        self.entries.append(Entry(
            torch.cuda, "synchronize", torch.cuda.synchronize, td_sync,
            _py_synchronize(native), lambda orig, _: _py_synchronize(orig)))
        self.native_sync = native
        if was:
            TorchDevice.enable()

    def _builder(self, w: Any) -> Optional[Callable[[Any, Any], Any]]:
        kind, policy = w.td_kind, self.policy
        if kind == _tdcore.KIND_FACTORY:
            pos, none_policy = (w.td_grammar.position,
                                 w.td_grammar.none_policy)
            return lambda orig, _: _py_factory(orig, policy, pos,
                                               none_policy)
        if kind == _tdcore.KIND_TO:
            return lambda orig, _: _py_to(orig, policy)
        if kind == _tdcore.KIND_MOVE:
            request = w.td_api.rsplit(".", 1)[1]
            return lambda orig, fallback: _py_move(orig, policy, request,
                                                   fallback)
        if kind == _tdcore.KIND_NUMPY:
            return lambda orig, _: _py_numpy(orig)
        if kind in (_tdcore.KIND_PIN_MEMORY, _tdcore.KIND_IS_PINNED):
            pinned = kind == _tdcore.KIND_IS_PINNED
            return lambda orig, _: _py_pin(orig, policy, pinned)
        return None

    def install(self) -> None:
        assert not TorchDevice.is_enabled()
        for e in self.entries:
            setattr(e.owner, e.name, e.python)

    def uninstall(self) -> None:
        for e in self.entries:
            setattr(e.owner, e.name, e.original)

    def __len__(self) -> int:
        return len(self.entries)


# ---- the workloads ----------------------------------------------------------


class Workload:
    """step(device, synchronize) runs one training step written the CUDA
    way; `steps` steps make one timed block."""
    name = ""
    steps = 1

    def step(self, device: str, synchronize: Callable[[], None]) -> None:
        raise NotImplementedError


class GPT2Step(Workload):
    name = "gpt2 fwd+bwd+AdamW"
    steps = 4

    def __init__(self) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=1024, n_positions=128, n_embd=128,
                            n_layer=2, n_head=4, bos_token_id=0,
                            eos_token_id=0)
        self.vocab = config.vocab_size
        self.model = GPT2LMHeadModel(config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def step(self, device: str, synchronize: Callable[[], None]) -> None:
        ids = torch.randint(0, self.vocab, (4, 64), device=device)
        loss = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                          labels=ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize()


class MLPStep(Workload):
    name = "mlp train step"
    steps = 200

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.x = torch.randn(2048, 3)
        self.y = (torch.sin(self.x[:, 0]) + 0.5 * self.x[:, 1] ** 2
                  - self.x[:, 2]).unsqueeze(1)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(3, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
            torch.nn.ReLU(), torch.nn.Linear(64, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def step(self, device: str, synchronize: Callable[[], None]) -> None:
        idx = torch.randint(0, self.x.shape[0], (128,), device=device)
        xb, yb = self.x[idx].to(device), self.y[idx].to(device)
        loss = torch.nn.functional.mse_loss(self.model(xb), yb)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        synchronize()


# ---- measurement ----------------------------------------------------------


def native_device() -> str:
    """Where a "cuda" request lands on this machine, spelled natively."""
    return {"cpu": "cpu", "mps": "mps", "cuda": "cuda"}[
        TorchDevice.hardware_profile()]


def native_sync() -> Callable[[], None]:
    return {"cpu": torch.cpu.synchronize,
            "mps": getattr(torch.mps, "synchronize", None),
            "cuda": torch.cuda.synchronize}[TorchDevice.hardware_profile()]


class Variant:
    def __init__(self, name: str, enter: Callable[[], None],
                 leave: Callable[[], None], device: str,
                 sync: Callable[[], Callable[[], None]]) -> None:
        self.name, self.enter, self.leave = name, enter, leave
        self.device, self.sync = device, sync


def variants(py: Optional[PythonWrappers]) -> List[Variant]:
    out = [
        Variant("native", TorchDevice.disable, lambda: None,
                native_device(), native_sync),
        Variant("TorchDevice", TorchDevice.enable, TorchDevice.disable,
                "cuda", lambda: torch.cuda.synchronize),
    ]
    if py is not None:
        out.append(Variant("python", lambda: (TorchDevice.disable(),
                                              py.install()),
                           py.uninstall, "cuda",
                           lambda: torch.cuda.synchronize))
    return out


CLOCKS = {"thread": time.thread_time, "process": time.process_time,
          "wall": time.perf_counter}
clock = time.thread_time


def time_block(work: Workload, v: Variant) -> float:
    """Seconds per step over one block, in the variant's state."""
    v.enter()
    try:
        sync = v.sync()
        work.step(v.device, sync)      # untimed: settles the state switch
        gc.collect()
        t0 = clock()
        for _ in range(work.steps):
            work.step(v.device, sync)
        return (clock() - t0) / work.steps
    finally:
        v.leave()


def measure(work: Workload, vs: List[Variant], reps: int
            ) -> Dict[str, Any]:
    for v in vs:                                 # warm-up, each state
        time_block(work, v)
    times: Dict[str, List[float]] = {v.name: [] for v in vs}
    for rep in range(reps):
        k = rep % len(vs)
        for v in vs[k:] + vs[:k]:
            times[v.name].append(time_block(work, v))
    native = times["native"]
    result: Dict[str, Any] = {
        "workload": work.name,
        "native_ms": statistics.median(native) * 1e3,
    }
    for v in vs[1:]:
        ratios = [t / n for t, n in zip(times[v.name], native)]
        result[f"{v.name}_ms"] = statistics.median(times[v.name]) * 1e3
        result[f"{v.name}_ratio"] = statistics.median(ratios)
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        result[f"{v.name}_ratio_iqr"] = [q1, q3]
    return result


Call = Tuple[Any, Tuple[Any, ...], Dict[str, Any]]


def record_calls(work: Workload, py: PythonWrappers) -> List[Tuple[Entry,
                                                                   Call]]:
    """The wrapped calls one step makes, with their arguments (recorded on
    the Python wrappers, each call's arguments copied as made)."""
    calls: List[Tuple[Entry, Call]] = []

    def recorder(e: Entry) -> Callable[..., Any]:
        def record(*a: Any, **k: Any) -> Any:
            calls.append((e, (None, a, dict(k))))
            return e.python(*a, **k)
        return record
    TorchDevice.disable()
    for e in py.entries:
        setattr(e.owner, e.name, recorder(e))
    try:
        work.step("cuda", torch.cuda.synchronize)
    finally:
        py.uninstall()
        TorchDevice.enable()
    return calls


def native_equivalent(e: Entry, call: Call) -> Call:
    """The native call the policy turns `call` into: the Python wrapper is
    built around a stub that captures what it would forward."""
    seen: List[Call] = []

    def capture(target: Any) -> Callable[..., Any]:
        def stub(*a: Any, **k: Any) -> None:
            seen.append((target, a, k))
        return stub
    fallback = getattr(e.torchdevice, "td_fallback", None)
    # torch.cuda.synchronize's native counterpart is the target's own
    # (None here, filled in by the caller).
    original = None if e.owner is torch.cuda else e.original
    e.build(capture(original), capture(fallback))(*call[1], **call[2])
    return seen[0]


def replay(calls: List[Call]) -> float:
    t0 = clock()
    for fn, a, k in calls:
        fn(*a, **k)
    return clock() - t0


def per_call_costs(work: Workload, py: PythonWrappers, reps: int,
                   loops: int = 200) -> Dict[str, Any]:
    """The intercepted calls of one step replayed alone, `loops` times per
    block, natively / through TorchDevice / through the Python wrappers,
    interleaved: nanoseconds per step of interception work."""
    recorded = record_calls(work, py)
    if py.native_sync is None:
        recorded = [(e, c) for e, c in recorded if e.name != "synchronize"]
    native = [native_equivalent(e, c) for e, c in recorded]
    native = [(py.native_sync if fn is None else fn, a, k)
              for fn, a, k in native]
    td = [(e.torchdevice, c[1], c[2]) for e, c in recorded]
    python = [(e.python, c[1], c[2]) for e, c in recorded]
    blocks = {"native": native * loops, "TorchDevice": td * loops,
              "python": python * loops}
    states = {"native": TorchDevice.disable, "TorchDevice": TorchDevice.enable,
              "python": TorchDevice.disable}
    times: Dict[str, List[float]] = {k: [] for k in blocks}
    names = list(blocks)
    for rep in range(reps + 1):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            states[name]()
            t = replay(blocks[name]) / loops
            if rep:                                  # rep 0 warms up
                times[name].append(t)
    TorchDevice.enable()
    med = {k: statistics.median(v) * 1e9 for k, v in times.items()}
    td_over = med["TorchDevice"] - med["native"]
    py_over = med["python"] - med["native"]
    return {"calls": len(recorded),
            "apis": sorted({f"{getattr(e.owner, '__name__', e.owner)}."
                            f"{e.name}" for e, _ in recorded}),
            "native_ns": med["native"], "torchdevice_ns": med["TorchDevice"],
            "python_ns": med["python"], "torchdevice_overhead_ns": td_over,
            "python_overhead_ns": py_over,
            "gain": py_over / td_over if td_over > 0 else float("inf")}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} "
            f"{platform.release()}; python {platform.python_version()}; "
            f"torch {torch.__version__}; torch threads "
            f"{torch.get_num_threads()}; profile "
            f"{TorchDevice.hardware_profile()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--only", choices=["gpt2", "mlp"])
    parser.add_argument("--no-python", action="store_true",
                        help="skip the pure-Python wrapper baseline")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="thread",
                        help="thread CPU time (default: robust on a shared "
                        "machine, exact with --threads 1), process CPU time "
                        "or wall time")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)

    print(f"machine: {machine()}")
    print(f"clock: {args.clock}; {args.reps} interleaved repetitions")
    py = None if args.no_python else PythonWrappers()
    works: List[Workload] = []
    if args.only in (None, "gpt2"):
        try:
            works.append(GPT2Step())
        except ImportError:
            print("transformers is not installed: gpt2 skipped")
    if args.only in (None, "mlp"):
        works.append(MLPStep())
    if py is not None:
        print(f"python baseline: {len(py)} pure-Python wrappers")

    results = []
    for work in works:
        r = measure(work, variants(py), args.reps)
        if py is not None:
            r["interception"] = per_call_costs(work, py, args.reps)
            r["intercepted_calls_per_step"] = r["interception"]["calls"]
        results.append(r)
    TorchDevice.enable()

    head = (f"{'step':<22}{'native ms':>10}{'TD ms':>9}{'TD ratio':>10}"
            f"{'target':>8}")
    if py is not None:
        head += f"{'py ms':>9}{'py ratio':>10}{'calls':>7}"
    print(head)
    for r in results:
        verdict = "ok" if r["TorchDevice_ratio"] <= TARGET else "MISS"
        line = (f"{r['workload']:<22}{r['native_ms']:>10.3f}"
                f"{r['TorchDevice_ms']:>9.3f}{r['TorchDevice_ratio']:>10.3f}"
                f"{'<=' + str(TARGET):>8} {verdict:<4}")
        if py is not None:
            line += (f"{r['python_ms']:>8.3f}{r['python_ratio']:>10.3f}"
                     f"{r['intercepted_calls_per_step']:>7}")
        print(line)
    print("spread of the per-repetition ratios (quartiles): " + "; ".join(
        f"{r['workload']}: TorchDevice {r['TorchDevice_ratio_iqr'][0]:.3f}"
        f"-{r['TorchDevice_ratio_iqr'][1]:.3f}"
        + (f", python {r['python_ratio_iqr'][0]:.3f}"
           f"-{r['python_ratio_iqr'][1]:.3f}" if py is not None else "")
        for r in results))
    if py is not None:
        print("\nthe intercepted calls of one step replayed alone (ns per "
              "step; overhead = minus native):")
        print(f"{'step':<22}{'calls':>6}{'native':>10}{'TD over':>10}"
              f"{'py over':>10}{'py/TD':>8}{'TD % of step':>14}")
        for r in results:
            c = r["interception"]
            share = c["torchdevice_overhead_ns"] / (r["native_ms"] * 1e6)
            print(f"{r['workload']:<22}{c['calls']:>6}{c['native_ns']:>10.0f}"
                  f"{c['torchdevice_overhead_ns']:>10.0f}"
                  f"{c['python_overhead_ns']:>10.0f}{c['gain']:>8.1f}"
                  f"{share * 100:>13.4f}%")
            print(f"{'':<22}{', '.join(c['apis'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "reps": args.reps,
                       "clock": args.clock, "results": results}, fh,
                      indent=2)


if __name__ == "__main__":
    sys.exit(main())
