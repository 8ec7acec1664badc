"""The CUDA masquerade on this machine's profile (cpu, or mps on a Mac):
torch.cuda answers for the device really used (docs/masquerade.md)."""
from __future__ import annotations

import gc
import logging
import pickle
import sys

import pytest
import torch

import TorchDevice
from TorchDevice import _masquerade, _tdcore
from conftest import ACCEL, CUDA_BUILD, HAS_CUDA, TARGET, run_python

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="the masquerade is off on profile cuda "
                     "(see test_masquerade_cuda.py)")

MB = 1024 * 1024


@pytest.fixture
def masq_config():
    saved = TorchDevice.config()
    yield
    TorchDevice.configure(cuda_truthful=saved.cuda_truthful,
                          truth_for=saved.truth_for,
                          log_level=saved.log_level)


# ---- 1. device queries ----------------------------------------------------


def test_device_queries_answer_for_the_real_device():
    profile = TorchDevice.hardware_profile()
    device_type = TorchDevice.policy()["device"]
    c = torch.cuda
    assert c.is_available() is True
    assert c.device_count() == 1
    assert c.current_device() == 0
    props = c.get_device_properties(0)
    assert props.device_type == device_type
    if profile == "cpu":
        import psutil
        assert props.total_memory == psutil.virtual_memory().total
        assert props.multi_processor_count == (
            psutil.cpu_count(logical=False) or psutil.cpu_count())
        assert props.name == _masquerade.cpu_name()
    assert c.get_device_name() == props.name == c.get_device_name("cuda:0")
    assert c.get_device_capability() == (props.major, props.minor)
    for field in ("name", "major", "minor", "total_memory",
                  "multi_processor_count", "is_integrated",
                  "is_multi_gpu_board", "max_threads_per_multi_processor",
                  "warp_size", "L2_cache_size", "uuid"):
        assert hasattr(props, field)
    assert "_CudaDeviceProperties(name=" in repr(props)
    with pytest.raises(AttributeError):
        props.name = "x"


def test_set_device_accepts_int_str_and_device():
    c = torch.cuda
    for arg in (0, "cuda", "cuda:0", "cuda:3", torch.device("cuda"),
                torch.device("cuda", 1), 3, -1):
        assert c.set_device(arg) is None
        assert c.current_device() == 0
    for bad in ("meta", torch.device("meta"), "nonsense", 1.5):
        with pytest.raises(ValueError):
            c.set_device(bad)
    with pytest.raises(TypeError):
        c.set_device()


def test_set_device_of_a_tensors_index():
    # CUDA code selects the device of a tensor: set_device(x.device.index).
    # Where "cuda" lands on the CPU that index is None, which names the one
    # device; where tensors have an index, None is refused, as by torch.
    x = torch.ones(1, device="cuda")
    if TARGET.type == "cpu":
        assert x.device.index is None
        assert torch.cuda.set_device(x.device.index) is None
        assert torch.cuda.current_device() == 0
    else:
        assert torch.cuda.set_device(x.device.index) is None
        with pytest.raises(ValueError, match="got:None"):
            torch.cuda.set_device(None)


def test_device_count_follows_the_launch():
    """torchrun sets LOCAL_WORLD_SIZE: that many devices are shown, all the
    one really present; set_device(LOCAL_RANK) selects one of them."""
    proc = run_python("""
        import torch, TorchDevice
        c = torch.cuda
        print(c.device_count(), torch.accelerator.device_count())
        c.set_device(1)
        print(c.current_device(), torch.accelerator.current_device_index())
        with c.device(0):
            print(c.current_device())
        print(c.current_device(), c.get_device_name(1) == c.get_device_name(0))
        print(torch.zeros(1, device="cuda:1").device, c.get_device_properties(
            torch.device("cuda", 1)).total_memory > 0)
        c.set_device("cuda:5")          # past the devices shown: collapses
        print(c.current_device())
    """, env={"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["2 2", "1 1", "0", "1 True",
                                        f"{TARGET} True", "0"]


@pytest.mark.parametrize("env, count", [
    ({"TORCHDEVICE_DEVICE_COUNT": "4"}, 4),
    ({"TORCHDEVICE_DEVICE_COUNT": "3", "LOCAL_WORLD_SIZE": "2"}, 3),
    ({"LOCAL_WORLD_SIZE": "garbage"}, 1),
    ({}, 1),
])
def test_device_count_configuration(env, count):
    proc = run_python("""
        import torch, TorchDevice
        print(torch.cuda.device_count())
    """, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(count)


def test_device_count_at_run_time(restore_config):
    c = torch.cuda
    try:
        TorchDevice.configure(device_count=2)
        assert c.device_count() == 2
        c.set_device(1)
        assert c.current_device() == 1
    finally:
        TorchDevice.configure(device_count=None)
    assert c.device_count() == 1 and c.current_device() == 0
    with pytest.raises(ValueError):
        TorchDevice.configure(device_count=0)


def test_device_context_managers_and_negative_index():
    c = torch.cuda
    with c.device(0):
        assert c.current_device() == 0
    with c.device("cuda:1"):
        assert c.current_device() == 0
    with c.device(None):
        pass
    x = torch.ones(2, device="cuda")
    with c.device_of(x):
        assert c.current_device() == 0
    with pytest.raises(AssertionError):
        c.get_device_properties(-1)


def test_other_queries():
    c = torch.cuda
    assert c.can_device_access_peer(0, 0) is False
    assert isinstance(c.is_bf16_supported(), bool)
    assert c.is_bf16_supported(including_emulation=False) in (True, False)
    # Consistent with is_available() (docs/masquerade.md).
    assert c.get_device_capability() == (8, 0)
    assert c.get_arch_list() == ["sm_80"]
    assert c.get_gencode_flags() == "-gencode compute=compute_80,code=sm_80"
    assert c.get_allocator_backend() == "native"
    assert torch.backends.cuda.is_built() is True
    # Torch's own (None on a CPU build) unless TORCHDEVICE_CUDA_VERSION.
    assert (torch.version.cuda is not None) == CUDA_BUILD
    c.init()
    assert c.is_initialized() is True


def test_nccl_is_there_where_cuda_is_announced():
    """NCCL comes with CUDA, and "nccl" runs on gloo here: code that checks
    for it before asking (ignite's idist.Parallel(backend="nccl")) is told
    it is there; torch's own modules are told the truth."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d
    if not dist.is_available():
        pytest.skip("torch built without torch.distributed")
    announced = "cuda" in _masquerade.announced()
    assert dist.is_nccl_available() is announced
    assert c10d.is_nccl_available is dist.is_nccl_available
    truth = _masquerade._originals["dist.is_nccl_available"]()
    probe = {"__name__": "torch.distributed.distributed_c10d", "dist": dist}
    assert eval("dist.is_nccl_available()", probe) is truth
    fn = dist.is_nccl_available
    assert pickle.loads(pickle.dumps(fn)) is fn


def test_nccl_version_answers_where_nccl_is_there():
    """torchtune's bf16 check (every recipe with dtype bf16) asks
    is_nccl_available() and then torch.cuda.nccl.version() >= (2, 10);
    torch's own raises on a build without NCCL, so where NCCL is said to
    be there its version answers too; torch's own modules get torch's."""
    import torch.cuda.nccl as nccl
    import torch.distributed as dist
    if not dist.is_available():
        pytest.skip("torch built without torch.distributed")
    if ("cuda" not in _masquerade.announced()
            or _masquerade._originals["dist.is_nccl_available"]()):
        assert nccl.version is _masquerade._originals["cuda.nccl.version"]
        return
    assert dist.is_nccl_available() is True
    version = nccl.version()
    assert isinstance(version, tuple) and len(version) == 3
    assert all(isinstance(n, int) for n in version)
    assert version >= (2, 10)
    assert torch.cuda.nccl.version is nccl.version
    assert nccl.version.__name__ == "version"
    assert pickle.loads(pickle.dumps(nccl.version)) is nccl.version
    probe = {"__name__": "torch.utils.collect_env", "nccl": nccl}
    with pytest.raises(AttributeError):
        eval("nccl.version()", probe)


def test_names_and_pickling_match_torch():
    fn = torch.cuda.memory_allocated
    assert fn.__name__ == "memory_allocated"
    assert fn.__module__ == "torch.cuda.memory"
    assert torch.cuda.memory.memory_allocated is fn
    assert pickle.loads(pickle.dumps(fn)) is fn
    assert torch.cuda.is_available.__module__ == "torch.cuda"


# ---- 2. is_available policy ----------------------------------------------


def test_torch_internals_see_the_truth(masq_config):
    truth = _masquerade._originals["cuda.is_available"]()
    assert torch.cuda.is_available() is True
    # Code whose module is torch's own: exec with torch's module name.
    probe = {"__name__": "torch.utils.data.dataloader", "torch": torch}
    assert eval("torch.cuda.is_available()", probe) is truth
    # torch.accelerator's own truth: on MPS or another accelerator, torch's
    # DataLoader learns that there is one, and pins.
    accel_truth = _masquerade._originals["accelerator.is_available"]()
    assert eval("torch.accelerator.is_available()", probe) is accel_truth
    user = {"__name__": "mytrainer", "torch": torch}
    assert eval("torch.cuda.is_available()", user) is True
    assert eval("torch.accelerator.is_available()", user) is True


def test_triton_sees_the_truth(masq_config):
    """Triton, which torch.compile drives, picks its NVIDIA driver by asking
    torch.cuda.is_available() (triton/backends/nvidia/driver.py): told
    True, it took a CUDA driver on a machine without one, and its question
    was reported as the user's at the torch.compile call."""
    truth = _masquerade._originals["cuda.is_available"]()
    driver = {"__name__": "triton.backends.nvidia.driver", "torch": torch}
    assert eval("torch.cuda.is_available()", driver) is truth
    other = {"__name__": "tritonclient.utils", "torch": torch}
    assert eval("torch.cuda.is_available()", other) is True


def test_bitsandbytes_sees_the_truth(masq_config):
    """bitsandbytes asks torch.cuda.is_available() at its import and, told
    True, imports its CUDA backend, which reads CUDA-only torch internals
    (AttributeError on a CPU build, so `import bitsandbytes` failed under
    TorchDevice where it works natively); told the truth it loads its CPU or
    MPS backend, which picks each kernel by the tensor's real device."""
    truth = _masquerade._originals["cuda.is_available"]()
    probe = {"__name__": "bitsandbytes", "torch": torch}
    assert eval("torch.cuda.is_available()", probe) is truth
    probe["__name__"] = "bitsandbytes.cextension"
    assert eval("torch.cuda.is_available()", probe) is truth
    other = {"__name__": "bitsandbytes_extra.x", "torch": torch}
    assert eval("torch.cuda.is_available()", other) is True


def test_deepspeed_sees_the_truth(masq_config):
    """DeepSpeed picks its accelerator by asking; told that CUDA is there
    it took its CUDA accelerator on a machine without one and JIT-built
    CUDA kernels for its default Adam ("CUDA_HOME environment variable is
    not set"); told the truth it takes its own CPU accelerator."""
    truth = _masquerade._originals["cuda.is_available"]()
    probe = {"__name__": "deepspeed.accelerator.real_accelerator",
             "torch": torch}
    assert eval("torch.cuda.is_available()", probe) is truth
    other = {"__name__": "deepspeedish", "torch": torch}
    assert eval("torch.cuda.is_available()", other) is True


@pytest.mark.skipif(TARGET.type != "cpu" or HAS_CUDA,
                    reason="DeepSpeed's CPU accelerator: where cuda is the CPU")
def test_a_cuda_program_using_deepspeed_gets_its_cpu_accelerator():
    """Run only where DeepSpeed is installed (not a test dependency)."""
    pytest.importorskip("deepspeed")
    proc = run_python("""
        import torch, TorchDevice
        from deepspeed.accelerator import get_accelerator
        print(get_accelerator()._name, torch.cuda.is_available())
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["cpu", "True"]


@pytest.mark.skipif(HAS_CUDA, reason="on NVIDIA bitsandbytes runs natively")
def test_a_cuda_program_using_bitsandbytes_runs_as_natively():
    """Run only where bitsandbytes is installed (not a test dependency: its
    wheel carries CUDA libraries): an 8-bit optimizer and 4-bit layer on
    "cuda" give the numbers the same program gives natively on "cpu"."""
    pytest.importorskip("bitsandbytes")
    code = """
        import sys, torch
        if sys.argv[1] == "cuda":
            import TorchDevice
        import bitsandbytes as bnb
        dev = sys.argv[1]
        torch.manual_seed(0)
        m = torch.nn.Linear(8, 3).to(dev)
        opt = bnb.optim.AdamW8bit(m.parameters(), lr=1e-2)
        x = torch.randn(16, 8).to(dev)
        for _ in range(3):
            loss = m(x).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
        q = bnb.nn.Linear4bit(8, 4, compute_dtype=torch.float32)
        q.load_state_dict(torch.nn.Linear(8, 4).state_dict())
        q = q.to(dev)
        print(loss.item(), q.weight.dtype, q(x).sum().item())
    """
    native = run_python(code, "cpu")
    assert native.returncode == 0, native.stderr
    # Only the program's "cuda" requests move: its draws are the host's.
    moved = run_python(code, "cuda", env={"USE_HUB_KERNELS": "0",
                                          "TORCHDEVICE_MODE": "cpu-stays-cpu"})
    assert moved.returncode == 0, moved.stderr
    if TARGET.type == "cpu":
        assert moved.stdout == native.stdout
    else:   # torch's kernels on another device: float32 rounding
        a, b = native.stdout.split(), moved.stdout.split()
        assert a[1] == b[1] == "torch.uint8"
        assert float(b[0]) == pytest.approx(float(a[0]), rel=1e-4)
        assert float(b[2]) == pytest.approx(float(a[2]), rel=1e-4)


def test_carve_out_and_truthful_switch(masq_config):
    truth = _masquerade._originals["cuda.is_available"]()
    accel = {"__name__": "accelerate.state", "torch": torch}
    other = {"__name__": "accelerated.x", "torch": torch}
    TorchDevice.configure(truth_for="accelerate, transformers")
    assert TorchDevice.config().truth_for == ("accelerate", "transformers")
    assert eval("torch.cuda.is_available()", accel) is truth
    assert eval("torch.cuda.is_available()", other) is True
    TorchDevice.configure(truth_for=())
    assert eval("torch.cuda.is_available()", accel) is True
    TorchDevice.configure(cuda_truthful=True)
    assert torch.cuda.is_available() is truth
    TorchDevice.configure(cuda_truthful=False)
    assert torch.cuda.is_available() is True
    with pytest.raises(ValueError):
        TorchDevice.configure(cuda_truthful="yes")
    with pytest.raises(TypeError):
        TorchDevice.configure(bogus=1)


def test_truth_switches_from_environment():
    proc = run_python("""
        import torch, TorchDevice
        user = {"__name__": "accelerate.utils", "torch": torch}
        print(torch.cuda.is_available(),
              eval("torch.cuda.is_available()", user))
    """, env={"TORCHDEVICE_TRUTH_FOR": "accelerate"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]
    proc = run_python("import torch, TorchDevice; "
                      "print(torch.cuda.is_available())",
                      env={"TORCHDEVICE_CUDA_TRUTHFUL": "1"})
    assert proc.stdout.split() == ["False"], proc.stderr


# ---- 3. memory -----------------------------------------------------------


def test_64mb_tensor_raises_allocated_and_peak_survives_free():
    c = torch.cuda
    gc.collect()
    c.reset_peak_memory_stats()
    before = c.memory_allocated()
    x = torch.ones(16 * MB, device="cuda")       # 64 MB of float32
    during = c.memory_allocated()
    assert 60 * MB <= during - before <= 72 * MB, (during - before) / MB
    del x
    gc.collect()
    after = c.memory_allocated()
    peak = c.max_memory_allocated()
    assert after - before < 8 * MB
    assert peak - before >= 60 * MB
    c.reset_peak_memory_stats()
    assert c.max_memory_allocated() - before < 16 * MB


def test_peak_seen_without_a_sample_in_between():
    c = torch.cuda
    gc.collect()
    c.reset_peak_memory_stats()
    before = c.memory_allocated()
    torch.ones(16 * MB, device="cuda").sum()     # allocated and freed
    if TorchDevice.hardware_profile() == "cpu":
        # The kernel's high-water mark saw it.
        assert c.max_memory_allocated() - before >= 60 * MB


def test_memory_stats_have_cuda_keys_and_summary_formats():
    c = torch.cuda
    held = torch.ones(1024, device="cuda")     # something in use   # noqa: F841
    stats = c.memory_stats()
    for key in ("allocated_bytes.all.current", "allocated_bytes.all.peak",
                "reserved_bytes.all.current", "active_bytes.all.current",
                "num_ooms", "num_alloc_retries", "allocation.all.current"):
        assert key in stats
    assert stats["allocated_bytes.all.current"] > 0
    assert stats["allocated_bytes.all.peak"] >= \
        stats["allocated_bytes.all.current"]
    assert list(stats) == sorted(stats)
    summary = c.memory_summary()
    assert "PyTorch CUDA memory summary, device ID 0" in summary
    assert "Allocated memory" in summary
    assert "from large pool" not in c.memory_summary(abbreviated=True)
    free, total = c.mem_get_info()
    assert 0 < free <= total
    assert c.memory_reserved() >= 0 and c.max_memory_reserved() > 0
    c.reset_accumulated_memory_stats()
    assert c.memory_stats()["allocated_bytes.all.freed"] == 0


def test_memory_fraction_and_other_memory_calls():
    c = torch.cuda
    try:
        c.set_per_process_memory_fraction(0.25)
        assert c.get_per_process_memory_fraction() == pytest.approx(0.25)
        with pytest.raises(ValueError):
            c.set_per_process_memory_fraction(1.5)
        with pytest.raises(TypeError):
            c.set_per_process_memory_fraction(1)
        assert c.get_per_process_memory_fraction() == pytest.approx(0.25)
    finally:
        c.set_per_process_memory_fraction(1.0)
    assert c.empty_cache() is None
    assert c.memory_snapshot() == []
    text = c.list_gpu_processes()
    assert text.startswith("GPU:0") and "MB GPU memory" in text
    assert isinstance(c.utilization(), int)
    with pytest.raises(ValueError):
        c.memory_allocated("meta")


def test_memory_call_cost_and_not_recording_by_default():
    TorchDevice.clear_report()
    torch.cuda.memory_allocated()
    assert not any(r["api"] == "torch.cuda.memory_allocated"
                   for r in TorchDevice.report())


def test_emulated_calls_recorded_when_recording(restore_config):
    TorchDevice.configure(log_level="INFO")
    TorchDevice.clear_report()
    torch.cuda.memory_allocated()
    rows = [r for r in TorchDevice.report()
            if r["api"] == "torch.cuda.memory_allocated"]
    assert rows and rows[0]["what"] == "emulated"
    assert rows[0]["file"] == __file__


# ---- 4. RNG --------------------------------------------------------------


def test_seeding_cuda_reproduces_results():
    c = torch.cuda
    c.manual_seed(1234)
    a = torch.randn(8, device="cuda")
    c.manual_seed_all(1234)
    b = torch.randn(8, device="cuda")
    assert torch.equal(a, b)
    assert c.initial_seed() == 1234
    state = c.get_rng_state()
    assert isinstance(state, torch.Tensor) and state.dtype == torch.uint8
    x = torch.rand(4, device="cuda")
    c.set_rng_state(state)
    assert torch.equal(x, torch.rand(4, device="cuda"))
    states = c.get_rng_state_all()
    assert isinstance(states, list) and len(states) == c.device_count()
    y = torch.rand(4, device="cuda")
    c.set_rng_state_all(states)
    assert torch.equal(y, torch.rand(4, device="cuda"))
    c.seed()
    c.seed_all()
    assert c.default_generators[0].device.type == \
        TorchDevice.policy()["device"]


def test_rng_calls_are_reported_under_their_own_names(restore_config):
    """Every RNG call of torch.cuda acts on the device really used, and the
    report names the one the program made; torch's own (fork_rng) are not
    the program's to port (docs/masquerade.md, "Report and logging")."""
    c = torch.cuda
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    c.manual_seed(1)
    c.manual_seed_all(1)
    c.initial_seed()
    c.set_rng_state(c.get_rng_state())
    c.set_rng_state_all(c.get_rng_state_all())
    c.seed()
    c.seed_all()
    rows = [r for r in TorchDevice.report() if r["file"] == __file__]
    names = ["manual_seed", "manual_seed_all", "initial_seed",
             "get_rng_state", "set_rng_state", "get_rng_state_all",
             "set_rng_state_all", "seed", "seed_all"]
    assert sorted(r["api"] for r in rows) == sorted(
        "torch.cuda." + n for n in names)
    assert all((r["what"], r["from"], r["count"]) == ("emulated", "cuda", 1)
               for r in rows), rows
    TorchDevice.clear_report()
    with torch.random.fork_rng(device_type="cuda"):
        pass
    assert not [r for r in TorchDevice.report()
                if "rng_state" in r["api"]], TorchDevice.report()


def test_fork_rng_and_generator_on_cuda():
    torch.cuda.manual_seed(7)
    with torch.random.fork_rng(device_type="cuda"):
        inside = torch.randn(4, device="cuda")
    outside = torch.randn(4, device="cuda")
    assert torch.equal(inside, outside)
    g = torch.Generator(device="cuda")
    g.manual_seed(3)
    a = torch.randn(4, generator=g, device="cuda")
    g.manual_seed(3)
    assert torch.equal(a, torch.randn(4, generator=g, device="cuda"))


def test_two_runs_of_a_seeded_cuda_script_match():
    code = """
        import torch, TorchDevice
        torch.cuda.manual_seed(42)
        x = torch.randn(5, device="cuda")
        print(x.tolist())
    """
    first, second = run_python(code), run_python(code)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


# ---- 5. AMP --------------------------------------------------------------


# Autocast's device types and dtypes: tests/test_amp.py.


def test_amp_training_loop_trains():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cuda")
    legacy = torch.cuda.amp.GradScaler()
    assert scaler.is_enabled() and legacy.is_enabled()
    x = torch.randn(64, 8, device="cuda")
    y = x.sum(dim=1, keepdim=True)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        with torch.autocast("cuda"):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert scaler.get_scale() > 0


# ---- 6. flags and tools --------------------------------------------------


def test_flags_are_settable():
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert torch.backends.cuda.matmul.allow_tf32 is True
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = False


def test_nvtx_is_a_no_op():
    nvtx = torch.cuda.nvtx
    assert nvtx.range_push("step") == 0
    assert nvtx.range_pop() == 0
    assert nvtx.mark("here") is None
    with nvtx.range("epoch {}", 1):
        pass


def test_graphed_callables_run_eagerly():
    model = torch.nn.Linear(2, 2)
    x = torch.randn(3, 2)
    assert torch.cuda.make_graphed_callables(model, (x,)) is model
    pair = (model, model)
    assert torch.cuda.make_graphed_callables(pair, ((x,), (x,))) is pair
    assert torch.cuda.is_current_stream_capturing() is False


def test_oom_error_catchable_and_no_op_calls(restore_config, caplog):
    with pytest.raises(torch.cuda.OutOfMemoryError):
        raise torch.cuda.OutOfMemoryError("simulated")
    TorchDevice.configure(log_level="DEBUG")
    with caplog.at_level(logging.DEBUG, logger="TorchDevice"):
        assert torch.cuda.ipc_collect() is None
    assert any("ipc_collect(): no effect" in r.getMessage()
               for r in caplog.records)
    assert torch.cuda.get_sync_debug_mode() == 0
    assert torch.cuda.set_sync_debug_mode(0) is None


@pytest.mark.filterwarnings("ignore:Synchronization debug mode")
def test_sync_debug_mode_reads_back_what_was_set():
    # torch.cuda's own semantics (CUDA keeps the level, validated as here):
    # a program that saves the level, sets "warn" and restores the saved one
    # reads back each value it set.
    saved = torch.cuda.get_sync_debug_mode()
    try:
        for given, expected in (("warn", 1), ("error", 2), ("default", 0),
                                (2, 2), (1, 1), (0, 0)):
            torch.cuda.set_sync_debug_mode(given)
            assert torch.cuda.get_sync_debug_mode() == expected
        torch.cuda.set_sync_debug_mode(1)
        with pytest.raises(RuntimeError, match="expected one of `default`"):
            torch.cuda.set_sync_debug_mode("loud")
        with pytest.raises(RuntimeError, match="expected one of 0,1,2"):
            torch.cuda.set_sync_debug_mode(3)
        with pytest.raises(RuntimeError, match="expected one of 0,1,2"):
            torch.cuda.set_sync_debug_mode(-1)
        with pytest.raises(RuntimeError, match="invalid argument"):
            torch.cuda.set_sync_debug_mode(1.0)
        assert torch.cuda.get_sync_debug_mode() == 1
    finally:
        torch.cuda.set_sync_debug_mode(saved)


# ---- 8. torch.accelerator / get_device_module ----------------------------


def _skip_unless_accelerator_has(*names: str) -> None:
    """TorchDevice emulates the torch.accelerator names this torch has and
    adds none (older releases lack some)."""
    missing = [n for n in names
               if not hasattr(getattr(torch, "accelerator", None), n)]
    if missing:
        pytest.skip(f"torch {torch.__version__} has no torch.accelerator."
                    + ", ".join(missing))


def test_accelerator_and_device_module_agree():
    _skip_unless_accelerator_has("memory_allocated", "get_memory_info",
                                 "empty_cache", "current_accelerator")
    assert torch.get_device_module("cuda") is torch.cuda
    # A torch.device("cuda") object reads as "cuda" to the program, and
    # names torch.cuda, whose functions answer for the device really used.
    assert torch.get_device_module(torch.device("cuda", 0)) is torch.cuda
    # "cpu" goes where the policy sends it (accelerate mode: the device).
    assert torch.get_device_module("cpu") is \
        torch.get_device_module(TorchDevice.policy()["device"])
    acc = torch.accelerator
    assert acc.is_available() is torch.cuda.is_available()
    assert acc.device_count() == torch.cuda.device_count()
    assert acc.current_device_index() == torch.cuda.current_device()
    assert acc.current_accelerator() is torch.device("cuda")
    assert acc.current_accelerator().type == "cuda"
    assert torch.zeros(0, device=acc.current_accelerator()).device.type \
        == TorchDevice.policy()["device"]
    assert acc.memory_allocated() == torch.cuda.memory_allocated()
    acc.set_device_index(0)
    acc.synchronize()
    acc.empty_cache()
    free, total = acc.get_memory_info()
    assert (free, total)[1] == torch.cuda.mem_get_info()[1] and free > 0


def test_accelerator_streams_devices_and_capability():
    """The rest of torch.accelerator.  Where "cuda" lands on the CPU torch
    has no accelerator to ask, and each raised "Cannot access accelerator
    device when none is available" although is_available() is True; they
    answer as torch.cuda does.  On an accelerator they are torch's own."""
    _skip_unless_accelerator_has("get_device_capability", "empty_host_cache",
                                 "device_index", "set_stream")
    acc = torch.accelerator
    stream = acc.current_stream()
    if ACCEL is None:
        assert stream == torch.cuda.current_stream()
        side = torch.cuda.Stream()
    else:
        assert stream.device.type == ACCEL.type
        side = torch.Stream(ACCEL)
    acc.set_stream(side)
    try:
        assert acc.current_stream() == side
    finally:
        acc.set_stream(stream)
    assert acc.current_stream() == stream
    with acc.device_index(0):
        assert acc.current_device_index() == 0
    with acc.device_index(None):
        assert acc.current_device_index() == 0
    supported = acc.get_device_capability()["supported_dtypes"]
    assert {torch.float32, torch.bfloat16, torch.int64} <= supported
    if ACCEL is None:       # the CPU computes every dtype torch has
        assert supported == {v for v in vars(torch).values()
                             if isinstance(v, torch.dtype)}
    acc.empty_host_cache()
    acc.memory.empty_host_cache()
    # torch's own code (torch._dynamo asks for the current stream when it
    # starts tracing) is answered by torch: on the CPU, no accelerator.
    in_torch = {"__name__": "torch._dynamo.variables.streams",
                "torch": torch}
    try:
        torchs = eval("torch.accelerator.current_stream()", in_torch)
    except RuntimeError as error:   # torch has no accelerator here
        assert ACCEL is None and "none is available" in str(error)
    else:   # an accelerator torch knows (a test may have loaded one)
        assert type(torchs) is torch.Stream


def test_accelerator_emulations_are_reported_at_the_users_line(
        restore_config):
    _skip_unless_accelerator_has("get_device_capability", "empty_host_cache",
                                 "device_index")
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    line = sys._getframe().f_lineno + 1
    torch.accelerator.get_device_capability()
    torch.accelerator.empty_host_cache()
    with torch.accelerator.device_index(0):
        pass
    rows = {(r["api"], r["what"], r["line"]) for r in TorchDevice.report()
            if r["api"].startswith("torch.accelerator.")}
    if ACCEL is not None:       # torch's own: nothing made up
        assert rows == set()
        return
    assert rows == {
        ("torch.accelerator.get_device_capability", "emulated", line),
        ("torch.accelerator.empty_host_cache", "emulated", line + 1),
        ("torch.accelerator.device_index", "emulated", line + 2)}


def test_device_module_of_the_accelerator_the_program_was_told_of():
    """Device-agnostic code asks torch.get_device_module() (the current
    accelerator) or get_device_module(current_accelerator()) for the
    accelerator's functions.  Where "cuda" lands on the CPU torch named
    torch.cpu, which has no manual_seed, memory_allocated or timing Event;
    the accelerator the program was told of reads "cuda", and its module is
    torch.cuda, answered for the device really used."""
    acc = torch.accelerator.current_accelerator()
    assert acc.type == "cuda"
    module = torch.get_device_module(acc)
    assert torch.get_device_module() is module
    assert torch.get_device_module(None) is module
    assert torch.get_device_module(torch.device("cpu")) is torch.cpu \
        or ACCEL is not None
    assert module is torch.cuda
    module.manual_seed(0)
    assert module.memory_allocated() >= 0
    module.empty_cache()
    start = module.Event(enable_timing=True)
    end = module.Event(enable_timing=True)
    start.record()
    torch.ones(8, device=acc).sum()
    end.record()
    module.synchronize()
    assert start.elapsed_time(end) >= 0.0


# ---- 7 (simulated here, real in test_masquerade_cuda.py) ----------------


def test_disable_restores_identical_originals():
    orig = _masquerade._originals["cuda.is_available"]
    replaced = torch.cuda.is_available
    TorchDevice.disable()
    try:
        assert torch.cuda.is_available is orig
        assert torch.cuda.is_available() is orig()
        assert torch.cuda.memory.memory_stats.__module__ == \
            "torch.cuda.memory"
        assert type(torch.cuda.memory.memory_stats).__name__ == "function"
    finally:
        TorchDevice.enable()
    assert torch.cuda.is_available is replaced


def test_simulated_mps_fields():
    """SimulatedMPS: the MPS property filler fed with fake queries (no
    Apple GPU here)."""
    fields = _masquerade.mps_fields(lambda: "Apple M2 Pro",
                                    lambda: 19, lambda: 21 * 1024 ** 3)
    props = _tdcore.DeviceProperties(**fields)
    assert props.name == "Apple M2 Pro"
    assert props.multi_processor_count == 19
    assert props.total_memory == 21 * 1024 ** 3
    assert props.device_type == "mps" and props.warp_size == 32


def test_reverse_direction_forwarders_simulated():
    """SimulatedCUDA: the profile-cuda forwarders of torch.mps called
    against a stand-in torch.cuda namespace, in a fresh process."""
    proc = run_python("""
        import types, torch, TorchDevice
        from TorchDevice import _tdcore
        calls = []
        def rec(name, result=None):
            def f(*a):
                calls.append((name, a))
                return result
            return f
        SimulatedCUDA = types.SimpleNamespace(
            synchronize=rec("synchronize"), empty_cache=rec("empty_cache"),
            memory_allocated=rec("memory_allocated", 11),
            memory_reserved=rec("memory_reserved", 22),
            mem_get_info=rec("mem_get_info", (1, 99)),
            manual_seed=rec("manual_seed"), seed=rec("seed"),
            get_rng_state=rec("get_rng_state", "state"),
            set_rng_state=rec("set_rng_state"),
            set_per_process_memory_fraction=rec("fraction"),
            device_count=rec("device_count", 2))
        # as on profile cuda, where MPS is announced
        _tdcore.masq_install(cuda_module=SimulatedCUDA, mps_announced=True)
        f = lambda n: _tdcore.masq_function("mps." + n, "torch.mps")
        f("synchronize")(); f("empty_cache")()
        assert f("current_allocated_memory")() == 11
        assert f("driver_allocated_memory")() == 22
        assert f("recommended_max_memory")() == 99
        f("manual_seed")(5); f("seed")()
        assert f("get_rng_state")("mps") == "state"
        f("set_rng_state")("S", device="mps")
        f("set_per_process_memory_fraction")(1.5)
        assert f("device_count")() == 2
        assert f("is_built")() is True
        assert f("synchronize").__module__ == "torch.mps"
        print(calls)
    """)
    assert proc.returncode == 0, proc.stderr
    calls = eval(proc.stdout)
    assert ("manual_seed", (5,)) in calls
    assert ("set_rng_state", ("S",)) in calls
    assert ("fraction", (1.0,)) in calls
    assert ("get_rng_state", ()) in calls


def test_reverse_direction_calls_are_reported():
    """SimulatedCUDA: on profile cuda the program's torch.mps calls are
    answered by CUDA, and the report lists each as emulated mps -> cuda
    (docs/masquerade.md, "Report and logging"); torch's own are not."""
    proc = run_python("""
        import types, torch, TorchDevice
        from TorchDevice import _tdcore
        SimulatedCUDA = types.SimpleNamespace(
            synchronize=lambda: None, empty_cache=lambda: None,
            memory_allocated=lambda: 11, manual_seed=lambda s: None)
        _tdcore.masq_install(cuda_module=SimulatedCUDA, target_type="cuda",
                             mps_announced=True,
                             record=_tdcore.record)
        TorchDevice.configure(report=True)
        TorchDevice.clear_report()
        f = lambda n: _tdcore.masq_function("mps." + n, "torch.mps")
        f("synchronize")(); f("empty_cache")()
        f("current_allocated_memory")(); f("manual_seed")(3)
        f("is_available")()
        exec("f('synchronize')()", {"__name__": "torch.mps.profiler", "f": f})
        for r in TorchDevice.report():
            print(r["api"], r["what"], r["from"], r["to"], r["count"])
    """)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    for api in ("torch.mps.synchronize", "torch.mps.empty_cache",
                "torch.mps.current_allocated_memory", "torch.mps.manual_seed",
                "torch.backends.mps.is_available"):
        assert f"{api} emulated mps cuda 1" in rows, rows
    assert len(rows) == 5, rows
