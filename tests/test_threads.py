"""Threads (docs/reliability.md, guarantee 4).

8 threads for 5 seconds create tensors on "cuda" (and other requests),
move them, open and close the scoped CPU override, record events and query
memory.  No crash, no exception, and every tensor lands where the pure
policy says for the state its thread saw: the scoped override belongs to
the thread that opened it (like torch.no_grad), so a thread's state is its
own innermost scope, or the process-wide value outside any scope.
"""
from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any, Callable, List, Optional

import pytest
import torch

import TorchDevice
from TorchDevice import _patches, _tdcore

THREADS = 8
SECONDS = 5.0
META = torch.device("meta")


@pytest.fixture
def fast_switching():
    """More thread switches per second: more interleavings to hit."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


@pytest.fixture
def simulated_mps_applied():
    """SimulatedMPS (conftest.simulated_mps), applied for the cpu profile
    first so that the rest of TorchDevice is built for this machine.
    Yields the native devices (native_devices)."""
    saved = TorchDevice.config()
    TorchDevice.disable()
    native = native_devices(META)
    _tdcore.configure("cpu", "accelerate", "downcast")
    _patches.apply(mps_device=META)
    _tdcore.configure("mps", "accelerate", "downcast")
    try:
        yield native
    finally:
        TorchDevice.disable()
        TorchDevice.enable()
        TorchDevice.configure(target=saved.target, mode=saved.mode,
                              float64=saved.float64)


def run_threads(work: Callable[[int, float], None], n: int = THREADS,
                seconds: float = SECONDS) -> List[str]:
    """Runs work(seed, deadline) in n threads started together; returns
    the failures they reported (exceptions included)."""
    failures: List[str] = []
    barrier = threading.Barrier(n)

    def body(seed: int) -> None:
        try:
            barrier.wait()
            work(seed, time.monotonic() + seconds)
        except BaseException as exc:   # noqa: BLE001 - reported below
            failures.append(f"thread {seed}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
        assert not t.is_alive(), "a worker thread hung"
    return failures


# ---- the scoped override is the thread's own ------------------------------

def test_scopes_of_two_threads_do_not_end_each_other(restore_config):
    """A opens a scope, B opens one, A closes: B still sees its own scope,
    and once both closed the process-wide value is what it was.  (With one
    process-wide value B lost its scope here and the override stayed on.)"""
    _tdcore.set_cpu_override(False)
    a_in, b_in, a_out = (threading.Event() for _ in range(3))
    seen = {}

    def a() -> None:
        with TorchDevice.cpu_override(True):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with TorchDevice.cpu_override(True):
            b_in.set()
            a_out.wait(10)
            seen["b inside its scope"] = _tdcore.get_cpu_override()
        seen["b after"] = _tdcore.get_cpu_override()

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"b inside its scope": True, "b after": False}
    assert _tdcore.get_cpu_override() is False


def test_other_threads_keep_the_process_wide_value(restore_config):
    _tdcore.set_cpu_override(False)
    seen = []
    with TorchDevice.cpu_override(True):
        t = threading.Thread(target=lambda: seen.append(
            _tdcore.get_cpu_override()))
        t.start()
        t.join()
        assert _tdcore.get_cpu_override() is True
    assert seen == [False]


def test_toggle_inside_a_scope_stays_in_the_scope(restore_config):
    _tdcore.set_cpu_override(False)
    with TorchDevice.cpu_override(True):
        torch.device("cpu:-1")
        assert _tdcore.get_cpu_override() is False
    assert _tdcore.get_cpu_override() is False
    torch.device("cpu:-1")                 # outside: process-wide
    assert _tdcore.get_cpu_override() is True


def test_many_threads_leave_the_override_as_it_was(restore_config,
                                                   fast_switching):
    _tdcore.set_cpu_override(False)

    def work(seed: int, deadline: float) -> None:
        for _ in range(300):
            with TorchDevice.cpu_override(True):
                time.sleep(0)
                assert _tdcore.get_cpu_override() is True
                with TorchDevice.cpu_override(False):
                    time.sleep(0)
                    assert _tdcore.get_cpu_override() is False
            assert _tdcore.get_cpu_override() is False

    assert run_threads(work, seconds=0) == []
    assert _tdcore.get_cpu_override() is False


# ---- 8 threads, 5 seconds ------------------------------------------------

# "mps" is left out: on SimulatedMPS it is kept, and this machine has none.
REQUESTS: List[Any] = [None, "cuda", "cuda:1", "cpu", 0, "meta", "cpu:0",
                       b"cuda"]


def norm(d: torch.device) -> tuple:
    """A tensor on "cpu:0" reports device cpu: compare type and, off the
    CPU, index."""
    return (d.type, None if d.type == "cpu" else d.index)


def expected(request: Any, override: bool, native: dict) -> torch.device:
    """Where the pure policy sends a request in the state a thread saw."""
    s = _tdcore.settings()
    req = request.decode() if isinstance(request, bytes) else request
    target = _tdcore.resolve(req, s["profile"], s["mode"], override)["target"]
    if target == "keep":
        return native[request]
    return native[target]


def make_stress(native: dict, marked: List[int], events: bool,
                lock: threading.Lock) -> Callable[[int, float], None]:
    def work(seed: int, deadline: float) -> None:
        rnd = random.Random(seed)
        with TorchDevice.cpu_override():
            src = torch.ones(3)        # on the host in every profile
        module = torch.nn.Linear(2, 2)
        calls = 0
        if events:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
        while time.monotonic() < deadline:
            scope: Optional[bool] = rnd.choice([None, True, False])
            if scope is None:
                override = _tdcore.get_cpu_override()
                ops(rnd, src, module, override)
            else:
                with TorchDevice.cpu_override(scope):
                    ops(rnd, src, module, scope)
            marked_call()
            calls += 1
            if events:
                start.record()
                torch.ones(64).sum()
                end.record()
                end.synchronize()
                if start.elapsed_time(end) < 0:
                    raise AssertionError("negative elapsed time")
                torch.cuda.memory_allocated()
                torch.cuda.max_memory_allocated()
                torch.cuda.mem_get_info()
        with lock:
            marked.append(calls)

    def ops(rnd: random.Random, src: torch.Tensor, module: torch.nn.Module,
            override: bool) -> None:
        for _ in range(4):
            r = rnd.choice(REQUESTS)
            want = expected(r, override, native)
            if r is None:
                got = torch.zeros(2).device
            else:
                got = torch.zeros(2, device=r).device
            check(got, want, "zeros", r, override)
            if r is not None:
                check(src.to(r).device, want, ".to", r, override)
                if not isinstance(r, bytes):
                    # The device really used (a device asked for as
                    # "cuda" reads "cuda" to the program).
                    d = torch.device(r)
                    check(torch.empty(0, device=d).device, want,
                          "torch.device", r, override)
        check(src.cuda().device, expected("cuda", override, native),
              ".cuda()", "cuda", override)
        check(src.cpu().device, expected("cpu", override, native), ".cpu()",
              "cpu", override)
        module.to("cuda")

    return work


def check(got: torch.device, want: torch.device, api: str, r: Any,
          override: bool) -> None:
    if norm(got) != norm(want):
        raise AssertionError(f"{api}({r!r}) with override={override}: "
                             f"{got} (policy: {want})")


def marked_call() -> None:
    torch.zeros(1, device="cuda")       # the report counts this line


def native_devices(stand_in: Optional[torch.device]) -> dict:
    """Devices as native torch builds them, keyed by request and by policy
    target.  Call with TorchDevice disabled."""
    assert not TorchDevice.is_enabled()
    out = {r: (torch.device(r) if r is not None else torch.device("cpu"))
           for r in REQUESTS if not isinstance(r, int)}
    out[0] = torch.device("cuda", 0)
    out.update(cpu=torch.device("cpu"), cuda=torch.device("cuda"),
               mps=stand_in)
    return out


def marked_count() -> int:
    line = marked_call.__code__.co_firstlineno + 1
    return sum(row["count"] for row in TorchDevice.report()
               if row["line"] == line and row["api"] == "torch.zeros"
               and row["file"].endswith("test_threads.py"))


def test_stress_cpu_profile(restore_config, fast_switching):
    """The machine's own profile, with events, memory queries and the
    report on: every redirected call at one line is counted once."""
    if _patches.detect_profile() != "cpu":
        pytest.skip("expectations written for the cpu profile")
    events = hasattr(torch.cuda, "Event")
    TorchDevice.disable()
    try:
        native = native_devices(None)
    finally:
        TorchDevice.enable()
    previous = _tdcore.get_report()
    _tdcore.set_report(True)
    TorchDevice.clear_report()
    marked: List[int] = []
    try:
        failures = run_threads(make_stress(native, marked, events,
                                           threading.Lock()))
        assert failures == []
        assert len(marked) == THREADS and sum(marked) > THREADS
        assert marked_count() == sum(marked)
    finally:
        _tdcore.set_report(previous)
        TorchDevice.clear_report()
    assert _tdcore.get_cpu_override() is False


def test_stress_simulated_mps(simulated_mps_applied, fast_switching):
    """SimulatedMPS: "cpu" and None go to the accelerator unless the
    thread's scope says otherwise, so the per-thread state is visible in
    every result."""
    native = simulated_mps_applied
    marked: List[int] = []
    failures = run_threads(make_stress(native, marked, False,
                                       threading.Lock()))
    assert failures == []
    assert _tdcore.get_cpu_override() is False
