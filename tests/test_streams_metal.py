"""The Metal backend (csrc/streams/backend_metal.c) against SimulatedMetal.

No Apple hardware is available to this project, so the backend is handed a
simulated torch.mps instead of the real one: SimulatedMetal has one command
queue that a worker thread drains (as Metal's GPU does, asynchronously to
Python) and events that are markers stamped with the queue's clock when the
worker reaches them.  That clock is the simulated GPU's own: it advances by
the time each kernel says it takes, never by the host's, so a loaded test
machine changes no answer; a test holds the queue busy with a kernel that
ends only when the test lets it (`hold`), not with a sleep.  Everything on our side of the seam is the code that
runs on a Mac: the C types, the backend, the ops tuple built by
TorchDevice._streams.setup().  What the real torch.mps does with those calls
was not run (see docs/streams.md).

In `make test-accel` the Metal backend is also the one in use, over the
simulated accelerator's own events (tests/test_streams.py); SimulatedMetal
stays here because that device works synchronously and could not show
timing that comes from a queue, or a query that answers "busy".
"""
from __future__ import annotations

import collections
import queue
import threading
import time

import pytest
import torch

from TorchDevice import _streams, _tdcore
from conftest import ACCEL, HAS_CUDA

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="torch.cuda is native on profile cuda")

# Where the Metal backend's work runs: MPS, or the accelerator whose
# capability record is MPS's (profile accelerator).
METAL_DEVICE = str(ACCEL) if ACCEL is not None else "mps:0"


class SimulatedMetalEvent:
    """torch.mps.Event's interface: Event(enable_timing), record(), wait(),
    query(), synchronize(), elapsed_time(end) in milliseconds."""
    sim: "SimulatedMetal"

    def __init__(self, enable_timing: bool = False) -> None:
        self.enable_timing = enable_timing
        self.done = threading.Event()
        self.stamp = None
        self.sim.calls["Event"] += 1

    def record(self) -> None:
        self.sim.calls["record"] += 1
        self.done.clear()
        self.sim.queue.put(("mark", self))

    def wait(self) -> None:
        self.sim.calls["wait"] += 1
        self.sim.queue.put(("wait", self))

    def query(self) -> bool:
        self.sim.calls["query"] += 1
        return self.done.is_set()

    def synchronize(self) -> None:
        self.sim.calls["event.synchronize"] += 1
        self.done.wait(30)

    def elapsed_time(self, end: "SimulatedMetalEvent") -> float:
        self.sim.calls["elapsed_time"] += 1
        if not (self.done.is_set() and end.done.is_set()):
            raise RuntimeError("SimulatedMetal: events not completed")
        return (end.stamp - self.stamp) * 1e3


class SimulatedMetal:
    """A torch.mps stand-in with an asynchronous command queue."""

    def __init__(self) -> None:
        self.queue: "queue.Queue" = queue.Queue()
        self.calls: collections.Counter = collections.Counter()
        self.clock = 0.0          # the simulated GPU's time, in seconds
        self.Event = type("Event", (SimulatedMetalEvent,), {"sim": self})
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            kind, item = self.queue.get()
            if kind == "stop":
                self.queue.task_done()
                return
            if kind == "kernel":
                seconds, gate = item
                if gate is not None:
                    gate.wait(30)
                self.clock += seconds
            elif kind == "mark":
                item.stamp = self.clock
                item.done.set()
            elif kind == "wait":
                # One queue: everything before this point already ran.
                assert item.done.is_set()
            self.queue.task_done()

    def submit(self, seconds: float) -> None:
        """Enqueues a kernel that takes `seconds` of the GPU's time."""
        self.queue.put(("kernel", (seconds, None)))

    def hold(self, seconds: float) -> threading.Event:
        """Enqueues a kernel that takes `seconds` of the GPU's time and
        keeps the queue busy until the returned gate is set."""
        gate = threading.Event()
        self.queue.put(("kernel", (seconds, gate)))
        return gate

    def synchronize(self) -> None:
        self.calls["synchronize"] += 1
        self.queue.join()

    def close(self) -> None:
        self.queue.put(("stop", None))
        self._worker.join(10)


def _eventually(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.001)
    return False


def _fresh_current_stream() -> None:
    """This thread's current Metal stream becomes the default stream of the
    backends now set up: a stream keeps the backend objects it was made
    with, and a context left earlier pinned the previous default one (on
    profile accelerator with MPS's record Metal is the backend in use)."""
    torch.cuda.set_stream(torch.cuda.default_stream())


@pytest.fixture
def metal():
    sim = SimulatedMetal()
    _streams.setup(metal=sim)
    previous = _tdcore.streams_force_backend("metal")
    _fresh_current_stream()
    try:
        yield sim
    finally:
        _streams.setup()
        if "metal" in _tdcore.streams_info()["ready"]:
            _fresh_current_stream()
        _tdcore.streams_force_backend(previous)
        sim.close()


def test_backend_and_device(metal):
    e, s = torch.cuda.Event(), torch.cuda.Stream()
    assert e._td_backend == s._td_backend == "metal"
    assert isinstance(e._td_native, metal.Event)
    # (torch.device("mps") itself is redirected on this profile.)
    assert str(s.device) == METAL_DEVICE \
        == str(torch.cuda.current_stream().device)
    assert _tdcore.streams_info()["active"] == "metal"
    assert metal.calls["Event"] == 1


def test_timing_comes_from_the_queue_not_the_host(metal):
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    gate = metal.hold(0.05)
    end.record()
    # The records returned while the queue is still busy: nothing waited.
    assert end.query() is False
    gate.set()
    # elapsed_time waits for `end` itself (no synchronize before it).
    ms = start.elapsed_time(end)
    assert ms == pytest.approx(50.0)         # the queue's 50 ms, not the host's
    assert metal.calls["event.synchronize"] >= 1


def test_query_and_synchronize_follow_the_queue(metal):
    e = torch.cuda.Event()
    assert e.query() is True                 # never recorded: done
    gate = metal.hold(0.2)
    e.record()
    s = torch.cuda.current_stream()
    assert e.query() is False and s.query() is False
    gate.set()
    torch.cuda.synchronize()
    assert metal.calls["synchronize"] == 1
    assert e.query() is True
    # A stream is asked with a marker that has to pass through the queue
    # itself, so an idle stream answers True once the marker went through.
    assert _eventually(s.query)
    metal.submit(0.05)
    s.synchronize()
    assert _eventually(s.query)
    metal.submit(0.05)
    e.record()
    e.synchronize()
    assert e.query() is True


def test_waits_record_markers_on_the_one_queue(metal):
    a, b = torch.cuda.Stream(), torch.cuda.Stream()
    never = torch.cuda.Event()
    never.wait(a)                            # unrecorded: nothing to wait for
    assert metal.calls["wait"] == 0
    a.wait_stream(b)
    assert metal.calls["record"] == 1 and metal.calls["wait"] == 1
    ev = b.record_event()
    a.wait_event(ev)
    assert metal.calls["record"] == 2 and metal.calls["wait"] == 2
    torch.cuda.synchronize()


def test_streams_and_contexts_on_metal(metal):
    s = torch.cuda.Stream(priority=-2)
    with torch.cuda.stream(s):
        assert torch.cuda.current_stream() == s
        e = torch.cuda.Event(enable_timing=True)
        e.record()
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    f = torch.cuda.Event(enable_timing=True)
    f.record(s)
    assert e.elapsed_time(f) >= 0.0


def test_backends_do_not_mix(metal):
    metal_event = torch.cuda.Event()
    _tdcore.streams_force_backend("cpu")
    cpu_stream = torch.cuda.Stream()
    cpu_event = torch.cuda.Event(enable_timing=True)
    _tdcore.streams_force_backend("metal")
    with pytest.raises(RuntimeError, match="backend"):
        metal_event.record(cpu_stream)
    timed = torch.cuda.Event(enable_timing=True)
    timed.record()
    cpu_event.record(cpu_stream)
    with pytest.raises(RuntimeError, match="different backends"):
        timed.elapsed_time(cpu_event)


def test_misuse_is_checked_before_the_backend(metal):
    a = torch.cuda.Event()
    b = torch.cuda.Event(enable_timing=True)
    a.record()
    b.record()
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        a.elapsed_time(b)
    assert metal.calls["elapsed_time"] == 0


def test_setup_without_metal_refuses_clearly():
    # The backends handed no Metal objects (on profile accelerator with
    # MPS's record, setup() hands it the device's).
    _tdcore.streams_setup(record_stream=_streams._RECORD_STREAM,
                          generic_stream=torch.Stream,
                          generic_event=torch.Event)
    previous = _tdcore.streams_force_backend("metal")
    try:
        with pytest.raises(RuntimeError, match="metal backend is not set up"):
            torch.cuda.Event()
    finally:
        _streams.setup()
        _tdcore.streams_force_backend(previous)
