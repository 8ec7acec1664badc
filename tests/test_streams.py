"""torch.cuda streams and events on this machine's profile: on profile cpu
the CPU backend of csrc/streams/stream.c, csrc/streams/event.c and
csrc/streams/backend_cpu.c; on profile accelerator the backend its
capability record names (the simulated accelerator with MPS's record: the
Metal backend over the device's torch.Event); reached the way user code
reaches it, through torch.cuda.*."""
from __future__ import annotations

import pickle
import re
import threading
import time

import pytest
import torch

import TorchDevice
from TorchDevice import _capabilities, _streams, _tdcore
from conftest import ACCEL, CUDA_BUILD, HAS_CUDA, ROOT, TARGET, run_python

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="torch.cuda is native on profile cuda "
    "(tests/test_streams_cuda.py covers that profile)")

# The backend of new streams and events, as the capability record in force
# names it (its "host" backend is called "cpu").
BACKEND = {"host": "cpu"}.get(_capabilities.current().events,
                              _capabilities.current().events)


def _timed_pair(body):
    """(event ms, host ms measured just outside the two records)."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    body()
    end.record()
    t1 = time.perf_counter()
    end.synchronize()
    return start.elapsed_time(end), (t1 - t0) * 1e3


# ---- types --------------------------------------------------------------------

def test_instances_of_the_torch_cuda_names():
    event = torch.cuda.Event()
    stream = torch.cuda.Stream()
    assert isinstance(event, torch.cuda.Event)
    assert isinstance(stream, torch.cuda.Stream)
    assert isinstance(torch.cuda.current_stream(), torch.cuda.Stream)
    assert isinstance(torch.cuda.ExternalStream(1234), torch.cuda.Stream)
    assert isinstance(torch.cuda.stream(stream), torch.cuda.StreamContext)
    # torch.cuda.streams is where torch defines them; both names agree.
    assert torch.cuda.streams.Event is torch.cuda.Event
    assert torch.cuda.streams.Stream is torch.cuda.Stream
    assert event._td_backend == stream._td_backend == BACKEND


def test_classes_captured_before_import_still_construct():
    proc = run_python("""
        import torch
        from torch.cuda import Event, Stream
        native = Event.__dict__["__new__"], Stream.__dict__["__new__"]
        import TorchDevice
        e, f = Event(enable_timing=True), Event(enable_timing=True)
        e.record(); f.record()
        assert e.elapsed_time(f) >= 0
        s = Stream()
        assert s == Stream(stream_id=s.stream_id) and s != Stream()
        TorchDevice.disable()
        print("restored:", (Event.__dict__["__new__"],
                            Stream.__dict__["__new__"]) == native)
        try:
            Event()
        except RuntimeError as exc:
            print("native:", exc)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "restored: True" in proc.stdout
    if not CUDA_BUILD:      # a CPU build's torch.cuda.Event is a dummy
        assert "native: Tried to instantiate dummy base class" in proc.stdout


def test_subclasses_work_as_with_cuda():
    class Tagged(torch.cuda.Stream):
        tag = "mine"

    s = Tagged(priority=-1)
    assert isinstance(s, torch.cuda.Stream) and s.tag == "mine"
    assert s.priority == -1
    with torch.cuda.stream(s):
        assert torch.cuda.current_stream() is s


# ---- events -------------------------------------------------------------------

def test_event_pair_around_a_50ms_sleep():
    # A sleep never ends early, and a loaded machine only lengthens it:
    # the pair measures at least the sleep, and never more than the host
    # saw from outside the two records (no bound that a stall could break).
    ms, host_ms = _timed_pair(lambda: time.sleep(0.05))
    assert 49.9 <= ms <= host_ms + 0.01, (ms, host_ms)


def test_event_pair_around_a_matmul_on_cuda():
    a = torch.randn(384, 384, device="cuda")
    b = torch.randn(384, 384, device="cuda")
    best = None
    for _ in range(3):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        for _ in range(20):
            c = a @ b
        end.record()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        ms, host_ms = start.elapsed_time(end), (t1 - t0) * 1e3
        assert 0.0 < ms <= host_ms + 0.01, (ms, host_ms)
        best = max(best or 0.0, ms / host_ms)
    # The records sit right around the work: nearly all the host time.
    assert best >= 0.5, best
    assert c.shape == (384, 384)


def test_event_state_query_device_repr():
    e = torch.cuda.Event()
    assert e.query() is True                  # CUDA: unrecorded is done
    assert e.device is None and e.cuda_event == 0
    assert "uninitialized" in repr(e)
    e.record()
    assert e.device == torch.empty(0, device="cuda").device
    assert e.cuda_event != 0 and e.query() is True
    e.synchronize()
    e.wait()
    e.wait(torch.cuda.Stream())
    # The event's id in hexadecimal (the format was printed verbatim).
    assert re.fullmatch(r"<torch\.cuda\.Event 0x[0-9a-f]+ \(TorchDevice, "
                        r"\w+ backend\)>", repr(e)), repr(e)
    assert int(repr(e).split()[1], 16) == e.cuda_event


def test_event_record_on_explicit_and_current_stream():
    s = torch.cuda.Stream()
    e = torch.cuda.Event(enable_timing=True)
    e.record(s)
    f = s.record_event(torch.cuda.Event(enable_timing=True))
    assert f.query() and e.elapsed_time(f) >= 0.0
    g = s.record_event()
    assert isinstance(g, torch.cuda.Event) and g.cuda_event != 0
    with torch.cuda.stream(s):
        h = torch.cuda.Event(enable_timing=True)
        h.record(stream=None)
    assert e.elapsed_time(h) >= 0.0


def test_misuse_raises_cudas_exception_types():
    plain = torch.cuda.Event()
    timed = torch.cuda.Event(enable_timing=True)
    timed2 = torch.cuda.Event(enable_timing=True)
    with pytest.raises(RuntimeError, match="recorded before"):
        timed.elapsed_time(timed2)
    plain.record()
    timed.record()
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        plain.elapsed_time(timed)
    with pytest.raises(RuntimeError, match="recorded before"):
        timed.elapsed_time(timed2)
    with pytest.raises(TypeError):
        timed.elapsed_time(5)
    with pytest.raises(TypeError):
        timed.record(5)
    with pytest.raises(TypeError):
        timed.record(torch.cuda.Stream(), torch.cuda.Stream())
    with pytest.raises(TypeError):
        timed.record(strem=None)
    with pytest.raises(TypeError):
        torch.cuda.Stream().wait_event("event")
    with pytest.raises(TypeError):
        torch.cuda.Stream().wait_stream(timed)
    with pytest.raises(ValueError, match="cuda device"):
        torch.cuda.Stream(device="cpu")
    with pytest.raises(ValueError, match="cuda device"):
        torch.cuda.current_stream("mps")
    with pytest.raises(TypeError):
        torch.cuda.Stream(priority="high")
    with pytest.raises(TypeError):
        torch.cuda.ExternalStream("0x10")
    # torch.cuda.set_stream / StreamContext fail on attribute access.
    with pytest.raises(AttributeError):
        torch.cuda.set_stream(5)
    with pytest.raises(AttributeError):
        torch.cuda.stream("side")
    with pytest.raises(RuntimeError, match="IPC"):
        timed.ipc_handle()
    with pytest.raises(RuntimeError, match="IPC"):
        torch.cuda.Event.from_ipc_handle(0, b"")
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(timed)
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(torch.cuda.Stream())


def test_interprocess_and_blocking_flags_are_accepted():
    e = torch.cuda.Event(enable_timing=False, blocking=True, interprocess=True)
    e.record()
    e.synchronize()
    assert e.query()


# ---- streams ------------------------------------------------------------------

def test_stream_values_equality_hash_and_fields():
    s = torch.cuda.Stream()
    t = torch.cuda.Stream()
    assert s != t and s == s
    same = torch.cuda.Stream(stream_id=s.stream_id, device_index=0,
                             device_type=s.device_type)
    assert same == s and hash(same) == hash(s) and same is not s
    assert len({s, same, t}) == 2
    assert s != "stream" and not (s == 1)
    d = torch.cuda.default_stream()
    assert d.stream_id == 0 and d == torch.cuda.default_stream(0)
    assert s.device == torch.empty(0, device="cuda").device
    assert s.device_index == 0 and s.priority == 0
    assert s.cuda_stream == s.stream_id
    assert torch.cuda.ExternalStream(77) == torch.cuda.ExternalStream(77)
    assert torch.cuda.ExternalStream(77) != torch.cuda.ExternalStream(78)
    assert torch.cuda.get_stream_from_external(77) == \
        torch.cuda.ExternalStream(77)
    assert torch.cuda.ExternalStream(77).cuda_stream == 77


def test_stream_device_type_is_its_device_s():
    """`device_type` is the c10 type of the device the work runs on, as
    torch's own stream of that device has it (torch rebuilds a stream from
    it), for every backend set up here.  It was read from a table of three
    by the backend's position: past its end for the "device" backend, and
    MPS's for the Metal backend on an accelerator."""
    for backend in _tdcore.streams_info()["ready"]:
        previous = _tdcore.streams_force_backend(backend)
        try:
            s = torch.cuda.Stream()
            own = torch.Stream(device=s.device)
            assert type(own) is torch.Stream, backend
            assert s.device_type == own.device_type, backend
            assert torch.cuda.current_stream().device_type == own.device_type
        finally:
            _tdcore.streams_force_backend(previous)


def test_priority_is_clamped_to_cudas_range():
    assert torch.cuda.Stream.priority_range() == (0, -3)
    assert torch.cuda.Stream(priority=-1).priority == -1
    assert torch.cuda.Stream(priority=-100).priority == -3
    assert torch.cuda.Stream(priority=7).priority == 0
    assert torch.cuda.Stream(priority=2**80).priority == 0


def test_stream_methods():
    s, other = torch.cuda.Stream(), torch.cuda.Stream()
    assert s.query() is True
    s.synchronize()
    s.wait_stream(other)
    s.wait_event(other.record_event())
    ev = torch.cuda.Event()
    assert s.record_event(ev) is ev and ev.cuda_event != 0


def test_current_stream_accepts_cuda_device_arguments():
    cur = torch.cuda.current_stream()
    for device in (None, 0, -1, "cuda", "cuda:0", "cuda:1",
                   torch.device("cuda")):
        assert torch.cuda.current_stream(device) == cur
        assert torch.cuda.current_stream(device=device) == cur
    torch.cuda.synchronize()
    torch.cuda.synchronize(0)
    torch.cuda.synchronize("cuda")


# ---- current stream, contexts, threads ---------------------------------------

def test_stream_contexts_nest_and_restore():
    default = torch.cuda.current_stream()
    assert default == torch.cuda.default_stream()
    a, b = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(a) as entered:
        assert entered is None                 # as torch.cuda's StreamContext
        assert torch.cuda.current_stream() == a
        with torch.cuda.stream(b):
            assert torch.cuda.current_stream() == b
            with torch.cuda.stream(None):       # a no-op
                assert torch.cuda.current_stream() == b
        assert torch.cuda.current_stream() == a
    assert torch.cuda.current_stream() == default


def test_stream_context_restores_when_the_body_raises():
    s = torch.cuda.Stream()
    before = torch.cuda.current_stream()
    with pytest.raises(KeyError):
        with torch.cuda.stream(s):
            assert torch.cuda.current_stream() == s
            raise KeyError("boom")
    assert torch.cuda.current_stream() == before
    with pytest.raises(ZeroDivisionError):
        with torch.cuda.StreamContext(s):
            1 / 0
    assert torch.cuda.current_stream() == before


def test_with_stream_object_nests_even_with_itself():
    s, t = torch.cuda.Stream(), torch.cuda.Stream()
    before = torch.cuda.current_stream()
    with s as entered:
        assert entered is s and torch.cuda.current_stream() == s
        with t:
            with s:
                assert torch.cuda.current_stream() == s
            assert torch.cuda.current_stream() == t
        assert torch.cuda.current_stream() == s
    assert torch.cuda.current_stream() == before


def test_set_stream():
    s = torch.cuda.Stream()
    before = torch.cuda.current_stream()
    try:
        torch.cuda.set_stream(s)
        assert torch.cuda.current_stream() is s
        torch.cuda.set_stream(None)            # no-op, as in torch
        assert torch.cuda.current_stream() is s
    finally:
        torch.cuda.set_stream(before)
    assert torch.cuda.current_stream() == before


def test_eight_threads_keep_their_own_current_stream():
    n = 8
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def worker(i):
        try:
            mine = torch.cuda.Stream()
            starts_on_default = (torch.cuda.current_stream()
                                 == torch.cuda.default_stream())
            with torch.cuda.stream(mine):
                barrier.wait()                  # all threads inside at once
                seen = []
                for _ in range(50):
                    seen.append(torch.cuda.current_stream() == mine)
                    time.sleep(0)
                barrier.wait()
            after = torch.cuda.current_stream() == torch.cuda.default_stream()
            results[i] = (starts_on_default, all(seen), after,
                          mine.stream_id)
        except BaseException as exc:           # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(r[:3] == (True, True, True) for r in results), results
    assert len({r[3] for r in results}) == n
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


# ---- record_stream, generic torch.Stream / torch.Event -----------------------

def test_record_stream_with_emulated_and_native_streams():
    x = torch.ones(4, device="cuda")
    assert x.record_stream(torch.cuda.Stream()) is None
    assert x.record_stream(torch.cuda.current_stream()) is None
    # Anything else is torch's business, with torch's error.
    with pytest.raises(Exception) as ours:
        x.record_stream(None)
    with pytest.raises(Exception) as native:
        torch._C.TensorBase.record_stream(x, None)
    assert type(ours.value) is type(native.value)


def test_setup_again_while_enabled_keeps_torch_s_record_stream():
    """setup() runs again while TorchDevice is enabled (tests hand the
    backends simulated devices): it handed our own record_stream as torch's,
    which then called itself (RecursionError)."""
    _streams.setup()
    x = torch.ones(4, device="cuda")
    with pytest.raises(Exception) as ours:
        x.record_stream(None)
    with pytest.raises(Exception) as native:
        torch._C.TensorBase.record_stream(x, None)
    assert type(ours.value) is type(native.value)


def test_generic_torch_stream_and_event_for_cuda():
    s = torch.Stream("cuda")
    e = torch.Event(device="cuda", enable_timing=True)
    f = torch.Event("cuda", enable_timing=True)
    assert isinstance(s, torch.cuda.Stream)
    assert isinstance(e, torch.cuda.Event)
    e.record(s)
    f.record(s)
    assert e.elapsed_time(f) >= 0.0
    with torch.cuda.stream(torch.Stream(device="cuda:0", priority=-1)):
        assert torch.cuda.current_stream().priority == -1
    # Other devices stay torch's own objects.
    assert type(torch.Stream("cpu")) is torch.Stream
    assert type(torch.Event("cpu")) is torch.Event


def test_torch_stream_and_event_without_a_device_are_the_accelerators():
    """torch.Stream() and torch.Event() take the current accelerator, CUDA
    where the program was written.  Where "cuda" lands on the CPU torch has
    none, and gave a CPU stream and an event that cannot record ("cpu
    backend doesn't support events") while torch.accelerator says one is
    there.  The timing example of torch.accelerator.synchronize's
    docstring:"""
    start_event = torch.Event(enable_timing=True)
    end_event = torch.Event(enable_timing=True)
    start_event.record()
    tensor = torch.randn(100, device=torch.accelerator.current_accelerator())
    total = torch.sum(tensor)
    end_event.record()
    torch.accelerator.synchronize()
    assert start_event.elapsed_time(end_event) >= 0.0
    assert total.device == TARGET
    stream = torch.Stream()
    with stream:
        assert torch.accelerator.current_stream() == stream
        event = torch.Event()
        event.record(stream)
        stream.wait_event(event)
    assert event.query() and stream.query()
    if ACCEL is None:
        assert isinstance(stream, torch.cuda.Stream)
        assert isinstance(torch.Event(device=None), torch.cuda.Event)
    else:               # the accelerator's own, as torch gives
        assert type(stream) is torch.Stream
        assert stream.device.type == ACCEL.type


# ---- enable / disable, report -------------------------------------------------

def test_disable_restores_originals_and_enable_reapplies(restore_config):
    ours = torch.cuda.Event
    TorchDevice.disable()
    try:
        assert torch.cuda.Event is _streams._CUDA_EVENT
        assert torch.cuda.Stream is _streams._CUDA_STREAM
        assert torch.cuda.synchronize is _streams._CUDA_SYNCHRONIZE
        assert "record_stream" not in torch.Tensor.__dict__
        assert "__new__" in torch.cuda.streams.Event.__dict__
        assert _tdcore.streams_info()["generic_hooks"] is False
        with pytest.raises(RuntimeError):
            torch.Stream("cuda")            # torch's own answer again
    finally:
        TorchDevice.enable()
    assert torch.cuda.Event is ours
    assert _tdcore.streams_info()["generic_hooks"] is True


def test_objects_outlive_disable(restore_config):
    stream = torch.cuda.Stream()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record(stream)
    TorchDevice.disable()
    try:
        assert start.query() and stream.query()
        assert stream.record_event().query()
        end.record(stream)
        assert start.elapsed_time(end) >= 0.0
    finally:
        TorchDevice.enable()


def test_emulated_objects_are_reported(restore_config):
    TorchDevice.configure(log_level="INFO")
    TorchDevice.clear_report()
    torch.cuda.Event()
    torch.cuda.Stream()
    rows = [r for r in TorchDevice.report() if r["what"] == "emulated"]
    apis = {r["api"] for r in rows}
    assert {"torch.cuda.Event", "torch.cuda.Stream"} <= apis, rows
    assert all(r["from"] == "cuda" and r["to"] == TARGET.type for r in rows)
    assert all(r["file"] == __file__ for r in rows)


def test_synchronize_and_stream_queries_are_reported(restore_config):
    """The program's torch.cuda.synchronize() and current/default_stream()
    lines are emulated work too (docs/streams.md, "Report"); torch's own
    calls to them are not the program's to port."""
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    torch.cuda.synchronize()
    torch.cuda.current_stream()
    torch.cuda.default_stream()
    torch.cuda.synchronize()
    rows = {r["api"]: r for r in TorchDevice.report()}
    for api in ("torch.cuda.synchronize", "torch.cuda.current_stream",
                "torch.cuda.default_stream"):
        assert rows[api]["what"] == "emulated", rows
        assert (rows[api]["from"], rows[api]["to"]) == ("cuda", TARGET.type)
        assert rows[api]["file"] == __file__
    assert [r["count"] for r in TorchDevice.report()
            if r["api"] == "torch.cuda.synchronize"] == [1, 1]
    TorchDevice.clear_report()
    probe = {"__name__": "torch.utils.benchmark.utils.timer", "torch": torch}
    exec("torch.cuda.synchronize(); torch.cuda.Event()", probe)
    assert TorchDevice.report() == []


def test_demo_streams_events_runs():
    proc = run_python(script=ROOT / "examples" / "demo_streams_events.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"backend: {BACKEND}" in out
    assert "two streams agree with one: True" in out
    assert "current stream restored: True" in out


DEVICE_BACKEND = """
import torch, TorchDevice
accel = TorchDevice._patches.accelerator_device()
start = torch.cuda.Event(enable_timing=True)
end = torch.cuda.Event(enable_timing=True)
assert start._td_backend == "device", start._td_backend
a = torch.randn(64, 64, device="cuda")
start.record()
b = a @ a
end.record()
end.synchronize()
assert start.elapsed_time(end) >= 0.0 and end.query()
assert start.device == accel, start.device
s = torch.cuda.Stream()
own = torch.Stream(device=accel)
assert s.device == accel and s.device_type == own.device_type
with torch.cuda.stream(s):
    e = torch.cuda.Event()
    e.record()
s.wait_event(e)
s.synchronize()
assert s.query() and torch.cuda.current_stream().query()
e.record(own)                      # the accelerator's own stream: passed on
e.wait(own)
for bad in (5, "stream", object()):
    try:
        e.record(bad)
    except TypeError as exc:
        assert "torch.Stream" in str(exc), exc
    else:
        raise AssertionError(f"record({bad!r}) accepted")
torch.cuda.synchronize()
print("ok")
"""


@pytest.mark.skipif(ACCEL is None, reason="the device backend needs an "
                    "accelerator (make test-accel)")
def test_device_backend_of_the_generic_record():
    """The generic capability record's backend (docs/streams.md): torch.cuda
    events and streams over the accelerator's own torch.Event.  A stream
    argument that is not a stream raised torch.Event's RuntimeError ("device
    type IDEEP" for an int) instead of TypeError, and device_type was read
    past the end of a table."""
    proc = run_python(DEVICE_BACKEND,
                      env={"TORCHDEVICE_CAPABILITIES": "accelerator"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
