"""CUDA's profiler hooks and library switches where "cuda" is not CUDA
(docs/masquerade.md, "Flags and tools"): each runs and changes no
result."""
from __future__ import annotations

import pickle
import sys

import pytest
import torch

import TorchDevice
from conftest import CUDA_BUILD, HAS_CUDA, run_python

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="on NVIDIA machines these are torch's own")


def _sites(api_prefix: str):
    return [(r["api"], r["what"], r["line"]) for r in TorchDevice.report()
            if r["api"].startswith(api_prefix) and r["file"] == __file__]


def _linear():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).cuda()
    x = torch.randn(5, 4, device="cuda", requires_grad=True)
    return model, x


def test_profiler_ranges_around_a_training_step_change_nothing(
        restore_config):
    """The Nsight recipe: cudaProfilerStart, emit_nvtx around the step,
    cudaProfilerStop; torch.cuda.profiler.profile() the same."""
    model, x = _linear()
    plain = torch.autograd.grad(model(x).sum(), x)[0]
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    line = sys._getframe().f_lineno + 1
    torch.cuda.check_error(torch.cuda.cudart().cudaProfilerStart())
    with torch.autograd.profiler.emit_nvtx(record_shapes=True):
        profiled = torch.autograd.grad(model(x).sum(), x)[0]
    torch.cuda.check_error(torch.cuda.cudart().cudaProfilerStop())
    torch.cuda.profiler.start()
    torch.cuda.profiler.stop()
    with torch.cuda.profiler.profile():
        again = torch.autograd.grad(model(x).sum(), x)[0]
    assert torch.equal(profiled, plain) and torch.equal(again, plain)
    assert _sites("torch.") == [
        ("torch.cuda.cudart().cudaProfilerStart", "emulated", line),
        ("torch.autograd.profiler.emit_nvtx", "emulated", line + 1),
        ("torch.cuda.cudart().cudaProfilerStop", "emulated", line + 3),
        ("torch.cuda.cudart().cudaProfilerStart", "emulated", line + 4),
        ("torch.cuda.cudart().cudaProfilerStop", "emulated", line + 5),
        ("torch.cuda.cudart().cudaProfilerStart", "emulated", line + 6),
        ("torch.cuda.cudart().cudaProfilerStop", "emulated", line + 6),
    ]


def test_profiler_records_the_work_of_cuda_activities(restore_config):
    """torch.profiler with CUDA's activity: where "cuda" is not CUDA, the
    device's activity records the work.  Without TorchDevice a list of
    CUDA alone stops the program (test below)."""
    import warnings
    from torch.profiler import ProfilerActivity, profile
    model, x = _linear()
    plain = model(x).sum()
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    for activities in ([ProfilerActivity.CUDA],
                       [ProfilerActivity.CPU, ProfilerActivity.CUDA],
                       [{ProfilerActivity.CUDA: ["kernel"]},
                        ProfilerActivity.CPU]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            line = sys._getframe().f_lineno + 1
            with profile(activities=activities, record_shapes=True) as prof:
                out = model(x).sum()
        assert torch.equal(out, plain)
        names = {e.key for e in prof.key_averages()}
        assert "aten::linear" in names, names
        # It reads back what the program named (torchtune's test of its
        # profiler set-up compares them) beside what records the work.
        from TorchDevice._cuda_tools import _device_activities
        assert prof.activities == ({ProfilerActivity.CUDA,
                                    ProfilerActivity.CPU}
                                   | set(_device_activities()))
    assert [(api, what) for api, what, at in _sites("torch.profiler")
            if at == line] == [("torch.profiler.profile", "redirected")]
    row = [r for r in TorchDevice.report()
           if r["api"] == "torch.profiler.profile"][0]
    assert row["count"] == 3 and row["from"] == "cuda"
    # A list without CUDA is torch's, as it was.
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    assert prof.key_averages()


def test_sleep_keeps_the_stream_busy_for_its_cycles(restore_config):
    """torch.cuda._sleep(cycles), the spin kernel tests and benchmarks use
    to make work that takes time: events around it measure it, at the
    clock rate the properties answer (1 GHz where they give none), so the
    usual calibration (cycles per millisecond from a first sleep) holds."""
    import time
    khz = torch.cuda.get_device_properties().clock_rate or 1_000_000
    cycles = int(khz * 1000 * 0.05)          # 50 ms of the device's clock
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    began = time.perf_counter()
    start.record()
    line = sys._getframe().f_lineno + 1
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    waited = time.perf_counter() - began
    assert start.elapsed_time(end) >= 45.0
    assert waited >= 0.045
    # One row, the program's own call: not the properties it reads.
    assert [(api, what) for api, what, at in _sites("torch.")
            if at == line] == [("torch.cuda._sleep", "emulated")]
    torch.cuda._sleep(0)
    torch.cuda._sleep(-5)
    with pytest.raises(TypeError):
        torch.cuda._sleep(1.5)


def test_emit_nvtx_as_torch_has_it():
    """Not reentrant, and a decorator too, as torch's."""
    ctx = torch.autograd.profiler.emit_nvtx()
    with ctx:
        with pytest.raises(RuntimeError, match="not reentrant"):
            ctx.__enter__()

    @torch.autograd.profiler.emit_nvtx(enabled=False)
    def f(t):
        return t * 2
    assert torch.equal(f(torch.ones(2, device="cuda")), torch.full((2,), 2.))


def test_error_codes_read_as_cuda_has_them():
    assert torch.cuda.check_error(0) is None
    with pytest.raises(torch.cuda.CudaError, match=r"\(1\)"):
        torch.cuda.check_error(1)


def test_host_registration_pins_as_torch_asks(restore_config):
    """torch's own pinning helper registers host memory with the runtime;
    a host tensor here needs none."""
    _pin_memory_utils = pytest.importorskip(
        "torch.cuda._pin_memory_utils",
        reason=f"torch {torch.__version__} has no such helper")
    t = torch.ones(8)
    _pin_memory_utils.pin_memory(t.data_ptr(), t.nbytes)
    _pin_memory_utils.unpin_memory(t.data_ptr())
    assert torch.equal(t, torch.ones(8))


@pytest.mark.parametrize("name,choices", [
    ("preferred_linalg_library", ("cusolver", "magma", "default")),
    ("preferred_blas_library", ("cublaslt", "cublas", "ck")),
])
def test_preferred_libraries_answer_what_was_set(name, choices,
                                                 restore_config):
    fn = getattr(torch.backends.cuda, name)
    before = fn()
    a = torch.randn(6, 6, device="cuda", generator=None)
    a = a @ a.T + 6 * torch.eye(6, device="cuda")
    expected = torch.linalg.cholesky(a)
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    line = sys._getframe().f_lineno + 3
    try:
        for choice in choices:
            set_to = fn(choice)
            assert set_to.name.lower() == choice
            assert fn() == set_to               # answered back
            assert fn(set_to) == set_to         # the enum form too
            assert torch.equal(torch.linalg.cholesky(a), expected)
        with pytest.raises(RuntimeError, match="Unknown input value. Choose"):
            fn("nonsense")
        with pytest.raises(RuntimeError, match="Unknown input value type"):
            fn(3)
        api = f"torch.backends.cuda.{name}"
        assert sorted(_sites(api)) == [(api, "emulated", line),
                                       (api, "emulated", line + 3)]
        assert pickle.loads(pickle.dumps(fn)) is fn
    finally:
        fn(before)


def test_cufft_plan_cache_holds_its_capacity():
    cache = torch.backends.cuda.cufft_plan_cache
    before = cache.max_size
    try:
        cache.max_size = 32
        assert cache.max_size == 32 and cache[0].max_size == 32
        assert cache.size == 0
        cache.clear()
        with pytest.raises(RuntimeError, match="read-only"):
            cache.size = 3
        # Every index is the one device (docs/masquerade.md, "Devices
        # shown"), and so is its cache.
        assert cache[torch.device("cuda", 0)] is cache[0]
        x = torch.randn(16, device="cuda")
        torch.testing.assert_close(torch.fft.ifft(torch.fft.fft(x)).real, x)
    finally:
        cache.max_size = before


def test_memory_pools_name_the_devices_own_memory(restore_config):
    """torch.cuda.MemPool / use_mem_pool: allocations in the block go to
    the device's own memory, as all of them do there; a pool's id is
    unique, and a graph capture takes it."""
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    pool, other = torch.cuda.MemPool(), torch.cuda.memory.MemPool()
    assert pool.id != other.id and pool.use_count() == 1
    x = torch.ones(3, device="cuda")
    with torch.cuda.use_mem_pool(pool):
        assert pool.use_count() == 2
        y = x * 2
    with torch.cuda.use_mem_pool(other, device=0):
        assert other.use_count() == 2
    assert pool.use_count() == 1 and pool.snapshot() == []
    assert y.device == x.device and y.tolist() == [2.0] * 3
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool.id):
        z = x + 1
    graph.replay()
    assert z.tolist() == [2.0] * 3
    with pytest.raises(RuntimeError, match="CUDAPluggableAllocator"):
        torch.cuda.MemPool(allocator=object())
    with pytest.raises(TypeError, match="MemPool"):
        with torch.cuda.use_mem_pool(object()):
            pass
    apis = {r["api"] for r in TorchDevice.report()}
    assert {"torch.cuda.MemPool", "torch.cuda.use_mem_pool"} <= apis
    assert pickle.loads(pickle.dumps(torch.cuda.MemPool)) is \
        torch.cuda.MemPool


@pytest.fixture
def tunable_state():
    """TunableOp's switches are process-wide, as on CUDA: put them all back
    (the rotating buffer's "L2 size" setting, -1, has no getter that says
    it)."""
    from TorchDevice import _tunable
    saved = dict(_tunable._STATE)
    yield torch.cuda.tunable
    _tunable._STATE.clear()
    _tunable._STATE.update(saved)


def test_tunableop_recipe_runs_and_changes_no_result(tunable_state,
                                                     restore_config,
                                                     tmp_path):
    """TunableOp's documented recipe: enable, set the file, run GEMMs, read
    the switches back.  There is one GEMM implementation to run, so the
    product is the untuned one and no choice is kept."""
    t = tunable_state
    torch.manual_seed(0)
    a = torch.randn(16, 8, device="cuda")
    b = torch.randn(8, 4, device="cuda")
    plain = a @ b
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    assert (t.is_enabled(), t.tuning_is_enabled()) == (False, True)
    t.enable(True)
    t.tuning_enable(True)
    t.set_max_tuning_iterations(10)
    t.set_max_tuning_duration(5)
    t.set_filename(str(tmp_path / "results.csv"), insert_device_ordinal=True)
    tuned = a @ b
    assert torch.equal(tuned, plain)
    assert t.is_enabled() and t.tuning_is_enabled()
    assert (t.get_max_tuning_iterations(), t.get_max_tuning_duration()) == \
        (10, 5)
    assert t.get_filename() == str(tmp_path / "results0.csv")
    t.set_filename("tuned_%d_run.csv", insert_device_ordinal=True)
    assert t.get_filename() == "tuned_0_run.csv"
    assert t.get_results() == () and t.read_file() is False
    t.set_rotating_buffer_size(2)
    assert t.get_rotating_buffer_size() == 2048
    untuned = tmp_path / "untuned.csv"
    untuned.write_text("Gemm_Rocblas_nn_16_4_8,Default,0.1\n")
    t.tune_gemm_in_file(str(untuned))
    with pytest.raises(FileNotFoundError):
        t.tune_gemm_in_file(str(tmp_path / "missing.csv"))
    t.enable(False)
    with pytest.raises(AssertionError, match="not enabled"):
        t.tune_gemm_in_file(str(untuned))
    apis = {r["api"] for r in TorchDevice.report()
            if r["file"] == __file__}
    assert {"torch.cuda.tunable.enable", "torch.cuda.tunable.set_filename",
            "torch.cuda.tunable.tune_gemm_in_file"} <= apis
    assert pickle.loads(pickle.dumps(t.enable)) is t.enable


def test_without_torchdevice_each_one_raises():
    """The program really needs it: a torch without CUDA raises at each."""
    proc = run_python("""
import torch
failed = []
for name, call in [
        ("profiler.start", lambda: torch.cuda.profiler.start()),
        ("emit_nvtx", lambda: torch.autograd.profiler.emit_nvtx().__enter__()),
        ("linalg", lambda: torch.backends.cuda.preferred_linalg_library("cusolver")),
        ("blas", lambda: torch.backends.cuda.preferred_blas_library("cublaslt")),
        ("cufft", lambda: torch.backends.cuda.cufft_plan_cache.max_size),
        ("profiler", lambda: torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CUDA]).__enter__()),
        ("mempool", lambda: torch.cuda.MemPool()),
        ("tunable", lambda: torch.cuda.tunable.enable(True))]:
    try:
        call()
    except (RuntimeError, AssertionError, AttributeError):
        failed.append(name)
print(",".join(failed))
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # A CUDA build of torch without a GPU takes a library preference.
    libraries = [] if CUDA_BUILD else ["linalg", "blas"]
    tunable = [] if CUDA_BUILD else ["tunable"]
    assert proc.stdout.split() == [
        ",".join(["profiler.start", "emit_nvtx", *libraries, "cufft",
                  "profiler", "mempool", *tunable])]


def test_disable_gives_torch_its_own_back(restore_config):
    import torch.cuda.profiler as cuda_profiler
    ours = (torch.cuda.cudart, torch.autograd.profiler.emit_nvtx,
            torch.backends.cuda.preferred_linalg_library,
            torch.backends.cuda.cufft_plan_cache, torch.cuda.tunable.enable)
    TorchDevice.disable()
    theirs = (torch.cuda.cudart, torch.autograd.profiler.emit_nvtx,
              torch.backends.cuda.preferred_linalg_library,
              torch.backends.cuda.cufft_plan_cache, torch.cuda.tunable.enable)
    assert all(a is not b for a, b in zip(ours, theirs))
    assert cuda_profiler.cudart is torch.cuda.cudart
    assert torch.autograd.profiler.emit_nvtx.__module__ == \
        "torch.autograd.profiler"
