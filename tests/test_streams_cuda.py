"""The CUDA backend (csrc/streams/backend_cuda.c): torch.mps events for MPS-written
code on NVIDIA, wrapping native torch.cuda events.

Tests marked `cuda` need an NVIDIA GPU and run in scripts/gpu_check.sh.
The others check the backend's wiring on any machine against
SimulatedCUDAEvents, a recording stand-in for torch.cuda's Event class
(named so: it fakes hardware this machine lacks, nothing else).
"""
from __future__ import annotations

import time

import pytest
import torch

import TorchDevice
from TorchDevice import _streams, _tdcore
from conftest import HAS_CUDA, run_python


# ---- wiring, on any machine ---------------------------------------------------

class SimulatedCUDAEvents:
    """A torch.cuda-like namespace: Event(enable_timing=, blocking=,
    interprocess=) with record(stream=None)/wait(stream=None)/query()/
    synchronize()/elapsed_time(end), and synchronize().  Host-clock timing;
    every call is logged so the test can see what the backend passed."""

    def __init__(self) -> None:
        log = self.log = []

        class Event:
            def __init__(self, enable_timing=False, blocking=False,
                         interprocess=False):
                log.append(("Event", enable_timing, blocking, interprocess))
                self.t = None

            def record(self, stream=None):
                log.append(("record", stream))
                self.t = time.perf_counter()

            def wait(self, stream=None):
                log.append(("wait", stream))

            def query(self):
                log.append(("query",))
                return True

            def synchronize(self):
                log.append(("event.synchronize",))

            def elapsed_time(self, end):
                log.append(("elapsed_time",))
                return (end.t - self.t) * 1e3

        self.Event = Event

    def synchronize(self):
        self.log.append(("synchronize",))


@pytest.fixture
def simulated_cuda():
    sim = SimulatedCUDAEvents()
    _streams.setup(cuda=sim)
    previous = _tdcore.streams_force_backend("cuda")
    try:
        yield sim
    finally:
        _tdcore.streams_force_backend(previous)
        _streams.setup()


@pytest.mark.skipif(HAS_CUDA, reason="uses the emulated torch.cuda names")
def test_cuda_backend_wraps_native_events(simulated_cuda):
    log = simulated_cuda.log
    e = _tdcore.Event(enable_timing=True, blocking=True)
    assert e._td_backend == "cuda"
    assert isinstance(e._td_native, simulated_cuda.Event)
    assert log[-1] == ("Event", True, True, False)
    e.record()                                # torch.cuda's current stream
    assert log[-1] == ("record", None)
    native_stream = object()                  # e.g. a torch.cuda.Stream
    e.record(native_stream)
    assert log[-1] == ("record", native_stream)
    e.wait(native_stream)
    assert log[-1] == ("wait", native_stream)
    assert e.query() is True
    f = _tdcore.Event(enable_timing=True)
    f.record()
    time.sleep(0.02)
    g = _tdcore.Event(enable_timing=True)
    g.record()
    ms = f.elapsed_time(g)
    # torch.mps.Event.elapsed_time waits for the end event: so does ours.
    assert log[-2:] == [("event.synchronize",), ("elapsed_time",)]
    # 20 ms slept: a loaded machine only adds to it (it measured 33 ms
    # beside another test run); milliseconds, not seconds or microseconds
    assert 15.0 <= ms < 5000.0, ms
    _tdcore.synchronize()
    assert log[-1] == ("synchronize",)
    assert "torch.mps.Event" in repr(e)


@pytest.mark.skipif(HAS_CUDA, reason="uses the emulated torch.cuda names")
def test_cuda_backend_checks_like_cuda(simulated_cuda):
    a, b = _tdcore.Event(), _tdcore.Event(enable_timing=True)
    with pytest.raises(RuntimeError, match="recorded before"):
        b.elapsed_time(_tdcore.Event(enable_timing=True))
    a.record()
    b.record()
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        a.elapsed_time(b)
    assert not any(entry[0] == "elapsed_time" for entry in simulated_cuda.log)


def test_mps_patch_set_for_profile_cuda():
    table = _streams._mps_patches()
    targets = {(p.owner.__name__, p.name) for p in table}
    assert ("torch.mps", "Event") in targets
    assert ("torch.mps.event", "Event") in targets
    for p in table:
        if p.name == "Event":
            assert p.build(None) is _tdcore.MpsEvent
        else:                                 # newer torch: mps streams
            assert p.build(None) is getattr(torch.cuda, p.name)


# ---- on an NVIDIA GPU (scripts/gpu_check.sh) ---------------------------------

@pytest.mark.cuda
def test_torch_cuda_stays_native_on_profile_cuda():
    assert TorchDevice.hardware_profile() == "cuda"
    assert torch.cuda.Event is _streams._CUDA_EVENT
    assert torch.cuda.Stream is _streams._CUDA_STREAM
    assert "record_stream" not in torch.Tensor.__dict__


@pytest.mark.cuda
def test_mps_event_is_ours_on_the_cuda_backend():
    e = torch.mps.Event(enable_timing=True)
    assert isinstance(e, torch.mps.Event)
    assert e._td_backend == "cuda"
    assert isinstance(e._td_native, torch.cuda.Event)
    e.record()
    e.synchronize()
    assert e.query() is True


@pytest.mark.cuda
def test_mps_event_timing_of_a_gpu_matmul_matches_native_cuda_events():
    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(4096, 4096, device="cuda")
    for _ in range(3):
        a @ b                                  # warm-up (cuBLAS handles)
    torch.cuda.synchronize()
    ratios = []
    for _ in range(5):
        mps_start = torch.mps.Event(enable_timing=True)
        mps_end = torch.mps.Event(enable_timing=True)
        cuda_start = torch.cuda.Event(enable_timing=True)
        cuda_end = torch.cuda.Event(enable_timing=True)
        mps_start.record()
        cuda_start.record()
        for _ in range(10):
            a @ b
        cuda_end.record()
        mps_end.record()
        torch.cuda.synchronize()
        native_ms = cuda_start.elapsed_time(cuda_end)
        ours_ms = mps_start.elapsed_time(mps_end)
        assert native_ms > 1.0, native_ms       # real GPU work was timed
        ratios.append(ours_ms / native_ms)
    ratios.sort()
    assert abs(ratios[len(ratios) // 2] - 1.0) <= 0.10, ratios


@pytest.mark.cuda
def test_generic_mps_stream_and_event_land_on_the_gpu():
    s = torch.Stream("mps")
    e = torch.Event(device="mps", enable_timing=True)
    assert type(s) is torch.Stream and type(e) is torch.Event
    assert s.device.type == "cuda"
    e.record(s)
    e.synchronize()


@pytest.mark.cuda
def test_forced_cpu_target_on_a_gpu_machine_emulates_cuda_streams():
    proc = run_python("""
        import time, torch, TorchDevice
        assert TorchDevice.hardware_profile() == "cpu"
        e = torch.cuda.Event(enable_timing=True)
        f = torch.cuda.Event(enable_timing=True)
        assert e._td_backend == "cpu"
        e.record(); time.sleep(0.05); f.record()
        print(round(e.elapsed_time(f)))
    """, env={"TORCHDEVICE_TARGET": "cpu"})
    assert proc.returncode == 0, proc.stderr
    assert abs(int(proc.stdout.split()[-1]) - 50) <= 5, proc.stdout
