"""The simulated accelerator (tests/simaccel): a PrivateUse1 backend named
"simaccel" that computes with torch's CPU kernels on host memory.  These
tests check the device itself, not TorchDevice; they skip, with the reason,
where it cannot be built (no compiler)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import simaccel
from simaccel import _build

from conftest import settings_free_env

REASON = simaccel.try_load(build=True)
pytestmark = pytest.mark.skipif(REASON is not None,
                                reason=f"simulated accelerator unavailable: {REASON}")

# Where it did not load, the name is unknown to torch and the module skips.
DEV = torch.device("simaccel", 0) if REASON is None else None
MPS_FLOAT64 = ("Cannot convert a MPS Tensor to float64 dtype as the MPS framework "
               "doesn't support float64. Please use float32 instead.")
MISMATCH = "Expected all tensors to be on the same device"
TESTS = Path(__file__).resolve().parent


def run_child(code: str, env: dict[str, str] | None = None, script: Path | None = None,
              timeout: float = 240) -> subprocess.CompletedProcess:
    """A fresh interpreter with tests/ importable and no TorchDevice or
    SIMACCEL_* settings from this process."""
    full = settings_free_env()
    full["PYTHONPATH"] = os.pathsep.join([str(TESTS), full.get("PYTHONPATH", "")])
    full.update(env or {})
    if script is not None:
        script.write_text(textwrap.dedent(code))
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=timeout,
                          cwd=str(TESTS.parent))


@pytest.fixture(autouse=True, scope="module")
def _torch_alone():
    """The device as torch sees it: TorchDevice (which conftest imports,
    enabled) is switched off while these tests run."""
    td = sys.modules.get("TorchDevice")
    if td is None or not td.is_enabled():
        yield
        return
    td.disable()
    try:
        yield
    finally:
        td.enable()


@contextlib.contextmanager
def _rules(enabled: bool):
    """The MPS rules on or off for a test, and afterwards the settings this
    process had (`make test-accel` loads the device with them on)."""
    saved = (simaccel.mps_rules(), simaccel.fallback_enabled(),
             simaccel.unsupported_ops(), simaccel.cpu_only_ops())
    simaccel.set_mps_rules(enabled)
    try:
        yield
    finally:
        simaccel.set_unsupported_ops(saved[2])
        simaccel.set_cpu_only_ops(saved[3])
        simaccel.set_fallback_enabled(saved[1])
        simaccel.set_mps_rules(saved[0])


@pytest.fixture
def mps_rules():
    with _rules(True):
        yield


@pytest.fixture
def no_mps_rules():
    with _rules(False):
        yield


# ------------------------------------------------------ creation and copies

def test_creation_and_copies_to_from_and_on_the_device():
    host = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    on = host.to(DEV)
    assert on.device == DEV and on.is_simaccel and not host.is_simaccel
    assert torch.equal(on.cpu(), host)
    assert torch.empty(2, 3, device="simaccel").shape == (2, 3)
    assert torch.empty_strided((2, 3), (1, 2), device=DEV).stride() == (1, 2)
    assert torch.equal(torch.zeros(4, device=DEV).cpu(), torch.zeros(4))
    assert torch.equal(torch.full((2,), 7, device=DEV).cpu(), torch.full((2,), 7))
    other = torch.empty(3, 4, device=DEV)
    other.copy_(on)                                       # device to device
    assert torch.equal(other.cpu(), host) and other.data_ptr() != on.data_ptr()
    assert torch.equal(on.to(torch.int64).cpu(), host.to(torch.int64))
    on.copy_(torch.ones(4))                               # host to device, broadcast
    assert torch.equal(on.cpu(), torch.ones(3, 4))
    assert torch.tensor([1.5, 2.5], device=DEV).tolist() == [1.5, 2.5]
    assert on.sum().item() == 12.0
    assert torch.ones(3).simaccel().device == DEV
    assert torch.nn.Linear(2, 2).simaccel().weight.device == DEV


def test_factories_that_call_a_dispatch_stub_run_the_cpu_kernel():
    """kaiser_window is composite but calls a DispatchStub with the device's
    type, which only CPU and CUDA fill: it raised an internal assert."""
    for args in ((4,), (5, False), (5, False, 3.0)):
        got = torch.kaiser_window(*args, device=DEV)
        assert got.device == DEV
        assert torch.equal(got.cpu(), torch.kaiser_window(*args))


def test_views_share_storage():
    base = torch.arange(12., device=DEV)
    for view in (base.view(3, 4), base.reshape(4, 3), base[2:8], base.view(3, 4).t(),
                 base.as_strided((2, 2), (1, 3), 1), base.unfold(0, 4, 2),
                 base.view(6, 2).select(1, 0), base.expand(2, 12)):
        assert view.device == DEV
        assert view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
    base.view(3, 4)[1, 1] = 100.0
    assert base[5].item() == 100.0
    complex_ = torch.zeros(2, dtype=torch.complex64, device=DEV)
    torch.view_as_real(complex_)[0, 1] = 3.0
    assert complex_[0].item() == 3j


def test_resize_and_set():
    t = torch.zeros(2, device=DEV)
    alias = t.view(2)
    t.resize_(10)
    t.fill_(1.0)
    assert t.shape == (10,) and alias.sum().item() == 2.0   # one storage, grown
    src = torch.arange(4., device=DEV)
    same = torch.empty(0, device=DEV).set_(src)
    part = torch.empty(0, device=DEV).set_(src.untyped_storage(), 1, (2,), (1,))
    same[0] = 10.0
    part[0] = 20.0
    assert src.tolist() == [10.0, 20.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match=MISMATCH):
        torch.empty(0, device=DEV).set_(torch.ones(2))


def test_out_arguments_and_in_place_ops_stay_on_the_device():
    x = torch.arange(6., device=DEV)
    out = torch.empty(0, device=DEV)
    result = torch.add(x, 1, out=out)                     # out= grown by the CPU kernel
    assert result is out and out.device == DEV and out.tolist() == [1., 2., 3., 4., 5., 6.]
    before = torch.simaccel.memory_allocated()
    x.mul_(2)
    assert x.tolist() == [0., 2., 4., 6., 8., 10.] and x.device == DEV
    assert torch.simaccel.memory_allocated() == before
    values, indices = torch.sort(torch.tensor([3., 1., 2.], device=DEV))
    assert values.device == indices.device == DEV and indices.tolist() == [1, 2, 0]


def test_overlapping_arguments_are_seen_as_overlapping():
    for make in (lambda: torch.arange(6.), lambda: torch.arange(6., device=DEV)):
        x = make()
        with pytest.raises(RuntimeError, match="single memory location"):
            x[1:].add_(x[:-1])


# --------------------------------------------------------- the CPU fallback

def _ops(dev):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 5, generator=g).to(dev)
    b = torch.randn(5, 3, generator=g).to(dev)
    img = torch.randn(1, 2, 6, 6, generator=g).to(dev)
    w = torch.randn(3, 2, 3, 3, generator=g).to(dev)
    idx = torch.tensor([0, 2, 3]).to(dev)
    return {
        "matmul": a @ b,
        "softmax": torch.softmax(a, dim=1),
        "sort": torch.sort(a, dim=1).values,
        "topk": torch.topk(a, 2).indices,
        "cumsum": torch.cumsum(a, 0),
        "unique": torch.unique(torch.tensor([3, 1, 3, 2]).to(dev)),
        "nonzero": torch.nonzero(a > 0),
        "masked_fill": a.masked_fill(a < 0, 0.5),
        "where": torch.where(a > 0, a, a.flip(0)),
        "index": a[idx],
        "index_put": a.index_put((idx,), torch.ones(5).to(dev)),
        "scatter_add": torch.zeros(4, 5).to(dev).scatter_add(0, idx.view(3, 1).expand(3, 5),
                                                              a[:3]),
        "conv2d": torch.nn.functional.conv2d(img, w, padding=1),
        "max_pool": torch.nn.functional.max_pool2d(img, 2),
        "layer_norm": torch.nn.functional.layer_norm(a, (5,)),
        "group_norm": torch.nn.functional.group_norm(img, 2),
        "embedding": torch.nn.functional.embedding(idx, b),
        "cross_entropy": torch.nn.functional.cross_entropy(a, idx.new_tensor([0, 1, 2, 3])),
        "linalg": torch.linalg.inv(a[:, :4] @ a[:, :4].t() + torch.eye(4).to(dev)),
    }


def test_operators_fall_back_to_the_cpu_and_return_on_the_device():
    on_cpu, on_dev = _ops("cpu"), _ops(DEV)
    for name, expected in on_cpu.items():
        got = on_dev[name]
        assert got.device == DEV, name
        assert got.dtype == expected.dtype, name
        torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0, msg=name)


def test_mixing_with_cpu_tensors_raises_torchs_mismatch_error():
    x = torch.arange(6., device=DEV)
    for mixed in (lambda: x + torch.ones(6),
                  lambda: torch.ones(6) * x,
                  lambda: torch.mm(x.view(2, 3), torch.ones(3, 2)),
                  lambda: torch.cat([x, torch.ones(2)]),
                  lambda: torch.index_select(x, 0, torch.tensor([0, 2])),
                  lambda: torch.nn.functional.linear(torch.ones(2, 6), x.view(1, 6)),
                  lambda: torch.where(x > 0, x, torch.zeros(6))):
        with pytest.raises(RuntimeError, match=MISMATCH):
            mixed()
    # What CUDA and MPS accept: CPU scalars (0-dim) and CPU indices.
    assert (x + torch.tensor(2.0)).device == DEV
    assert x[torch.tensor([0, 2])].tolist() == [0.0, 2.0]
    x[torch.tensor([1])] = torch.tensor(9.0)
    assert x[1].item() == 9.0


# ------------------------------------------------------------------- random

def test_seeding_inside_a_trace_records_no_runtime_call():
    """torch.jit.trace of a function that seeds traces, as on CUDA and MPS,
    where seeding is no operator the tracer sees; the device's runtime
    queries (count, generators, memory) stay out of the graph."""
    def step(x):
        torch.manual_seed(5)
        torch.random.seed()
        torch.manual_seed(5)
        torch.simaccel.memory_allocated()
        return x * torch.rand(x.shape, device=x.device)

    x = torch.ones(3, device=DEV)
    traced = torch.jit.trace(step, (x,), check_trace=False)
    assert "simaccel::" not in str(traced.graph)
    # The graph draws, it does not seed (as a trace on CUDA).
    torch.manual_seed(5)
    drawn = traced(x)
    torch.manual_seed(5)
    assert torch.equal(drawn.cpu(), torch.rand(3, device=DEV).cpu())


def test_manual_seed_reproducibility():
    torch.manual_seed(7)
    first = torch.randn(5, device=DEV)
    torch.rand(100)                                       # host draws leave it alone
    second = torch.randn(5, device=DEV)
    torch.manual_seed(7)
    assert torch.equal(torch.randn(5, device=DEV).cpu(), first.cpu())
    torch.rand(3)
    assert torch.equal(torch.randn(5, device=DEV).cpu(), second.cpu())

    torch.simaccel.manual_seed(3)
    state = torch.simaccel.get_rng_state()
    a = torch.nn.functional.dropout(torch.ones(50, device=DEV), 0.5)
    b = torch.randperm(10, device=DEV)
    torch.simaccel.set_rng_state(state)
    assert torch.equal(torch.nn.functional.dropout(torch.ones(50, device=DEV), 0.5).cpu(),
                       a.cpu())
    assert torch.equal(torch.randperm(10, device=DEV).cpu(), b.cpu())

    gen = torch.Generator(device=DEV)
    assert gen.device == DEV
    gen.manual_seed(11)
    c = torch.rand(4, device=DEV, generator=gen)
    gen.manual_seed(11)
    assert torch.equal(torch.rand(4, device=DEV, generator=gen).cpu(), c.cpu())
    with pytest.raises(RuntimeError, match="device type for generator"):
        torch.rand(4, device=DEV, generator=torch.Generator())

    # The device generator draws what the CPU one draws from the same seed,
    # so seeded device runs reproduce seeded CPU runs.
    for draw in (lambda d: torch.randn(6, device=d),
                 lambda d: torch.nn.functional.dropout(torch.ones(20, device=d), 0.3)):
        torch.manual_seed(5)
        on_cpu = draw("cpu")
        torch.manual_seed(5)
        assert torch.equal(draw(DEV).cpu(), on_cpu)


# ------------------------------------------------------------------- memory

def test_memory_statistics_count_bytes():
    mib = 1 << 20
    base = torch.simaccel.memory_allocated()
    torch.simaccel.reset_peak_memory_stats()
    block = torch.empty(mib, dtype=torch.uint8, device=DEV)
    assert torch.simaccel.memory_allocated() == base + mib
    assert torch.accelerator.memory_allocated() == base + mib
    doubled = block * 2                                   # a result adopted from the host
    assert torch.simaccel.memory_allocated() == base + 2 * mib
    del block, doubled
    assert torch.simaccel.memory_allocated() == base
    assert torch.simaccel.max_memory_allocated() == base + 2 * mib
    assert torch.accelerator.max_memory_allocated() == base + 2 * mib
    stats = torch.simaccel.memory_stats()
    assert stats["allocated_bytes.all.current"] == base
    assert stats["allocated_bytes.all.peak"] == base + 2 * mib
    torch.simaccel.reset_peak_memory_stats()
    assert torch.simaccel.max_memory_allocated() == base
    free, total = torch.simaccel.mem_get_info()
    assert 0 < free <= total


# ----------------------------------------------------------- streams, events

def test_streams_and_events_time_on_the_host_clock():
    stream = torch.Stream(device="simaccel")
    assert stream.device == DEV and stream.query()
    default = torch.simaccel.current_stream()
    with stream:
        assert torch.accelerator.current_stream() == stream
    assert torch.accelerator.current_stream() == default
    start = torch.Event(device="simaccel", enable_timing=True)
    end = torch.Event(device="simaccel", enable_timing=True)
    start.record(stream)
    time.sleep(0.02)
    end.record(stream)
    end.synchronize()
    assert end.query()
    assert 15.0 <= start.elapsed_time(end) < 5000.0
    untimed = torch.Event(device="simaccel")
    untimed.record()
    with pytest.raises(ValueError, match="enable_timing=True"):   # as on CUDA
        start.elapsed_time(untimed)
    stream.synchronize()
    torch.simaccel.synchronize()


def test_torch_accelerator_answers_for_it():
    assert torch.accelerator.current_accelerator() == torch.device("simaccel")
    assert torch.accelerator.is_available()
    assert torch.accelerator.device_count() == 1
    assert torch.accelerator.current_device_index() == 0
    torch.accelerator.synchronize()
    assert torch.get_device_module("simaccel") is torch.simaccel
    assert torch._C._get_privateuse1_backend_name() == "simaccel"


# ----------------------------------------------------------------- autograd

def _train(device, optimizer_cls):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model.to(device)
    opt = optimizer_cls(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=g).to(device)
    y = torch.randint(0, 4, (32,), generator=g).to(device)
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return [p.detach().cpu() for p in model.parameters()], loss.item()


@pytest.mark.parametrize("optimizer_cls", [torch.optim.SGD, torch.optim.Adam])
def test_autograd_and_optimizer_step_match_the_cpu(optimizer_cls):
    on_cpu, loss_cpu = _train("cpu", optimizer_cls)
    on_dev, loss_dev = _train(DEV, optimizer_cls)
    assert abs(loss_cpu - loss_dev) <= 1e-6
    for a, b in zip(on_cpu, on_dev):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("loss", [torch.nn.functional.mse_loss,
                                  torch.nn.functional.smooth_l1_loss])
def test_losses_run_the_cpu_kernel_without_warnings(loss):
    """torch's generic kernel of these losses calls the CPU's out= kernel,
    which warned ("An output with one or more elements was resized") at
    every call on the device."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    dev_a = a.to(DEV).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = loss(dev_a, b.to(DEV))
        got.backward()
    host_a = a.clone().requires_grad_()
    want = loss(host_a, b)
    want.backward()
    assert got.device == DEV and torch.equal(got.cpu(), want)
    assert torch.equal(dev_a.grad.cpu(), host_a.grad)


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
def test_recurrent_layers_match_the_cpu(cell):
    # torch runs them on fused cells for CUDA and PrivateUse1 devices.
    results = []
    for device in ("cpu", DEV):
        torch.manual_seed(0)
        layer = cell(3, 4, num_layers=2).to(device)
        x = torch.randn(5, 2, 3).to(device).requires_grad_()
        out, _ = layer(x)
        out.pow(2).sum().backward()
        results.append([out.detach().cpu(), x.grad.cpu()] +
                       [p.grad.cpu() for p in layer.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_module_to_keeps_parameters_and_tied_weights():
    embed = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = embed.weight
    model = torch.nn.ModuleList([embed, head])
    param = embed.weight
    model.to(DEV)
    assert embed.weight is param and head.weight is embed.weight
    assert param.device == DEV
    param.data = torch.zeros(10, 4)                       # and back, as on CUDA
    assert param.device == torch.device("cpu")


def test_conjugate_and_zero_tensors():
    z = torch.randn(3, dtype=torch.complex64)
    on = z.to(DEV)
    assert torch.equal(on.conj().clone().cpu(), z.conj())
    assert torch.equal((on.conj() * 2).cpu(), z.conj() * 2)
    x = torch.randn(3, device=DEV, requires_grad=True)
    torch.sgn(x).sum().backward()                         # a ZeroTensor gradient
    assert x.grad.tolist() == [0.0, 0.0, 0.0]


def test_autocast_uses_torchs_policy():
    a = torch.randn(4, 4, device=DEV)
    with torch.autocast("simaccel", dtype=torch.float16):
        assert (a @ a).dtype == torch.float16
        assert torch.nn.functional.layer_norm(a.half(), (4,)).dtype == torch.float32
    assert (a @ a).dtype == torch.float32
    scaler = torch.amp.GradScaler("simaccel")
    assert scaler.get_scale() > 0


def test_save_and_load():
    x = torch.arange(5., device=DEV)
    state = torch.nn.Linear(2, 2).to(DEV).state_dict()
    buffer = io.BytesIO()
    torch.save({"x": x, "state": state}, buffer)
    for location, expected in (("cpu", torch.device("cpu")), (None, DEV), ("simaccel", DEV)):
        buffer.seek(0)
        loaded = torch.load(buffer, map_location=location)
        assert loaded["x"].device == expected and loaded["state"]["weight"].device == expected
        assert loaded["x"].tolist() == x.tolist()
    buffer = io.BytesIO()
    torch.save(x.cpu(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, map_location="simaccel").device == DEV


def test_pinned_memory():
    pinned = torch.ones(4).pin_memory()
    assert pinned.is_pinned() and not torch.ones(4).is_pinned()
    assert pinned.to(DEV, non_blocking=True).device == DEV


def test_host_allocator_is_registered():
    """torch asks the device's host allocator in empty_host_cache() (and
    torch.accelerator.Graph's capture); with none registered, the call
    crashed the interpreter once the device was in use."""
    proc = run_child("""
        import torch, simaccel
        simaccel.load()
        torch.ones(2, device="simaccel")
        torch.accelerator.empty_host_cache()
        pinned = torch.ones(4).pin_memory()
        print(pinned.is_pinned(), torch.ones(4).is_pinned())
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "False"]


# ------------------------------------------------------ "behave like MPS"

@pytest.mark.own_machine
def test_mps_rules_are_off_by_default():
    """Off unless SIMACCEL_MPS_RULES=1 when the device loads (run_child
    leaves the SIMACCEL_* variables out)."""
    assert simaccel.mps_rules() is simaccel._env_flag("SIMACCEL_MPS_RULES")
    done = run_child("""
        import torch, simaccel
        simaccel.load()
        print(simaccel.mps_rules(),
              torch.zeros(2, dtype=torch.float64, device="simaccel").dtype)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "torch.float64"]


def test_without_mps_rules_float64_is_computed(no_mps_rules):
    assert torch.zeros(2, dtype=torch.float64, device=DEV).dtype == torch.float64


def test_mps_rules_refuse_float64_with_mps_error(mps_rules):
    for make in (lambda: torch.zeros(2, dtype=torch.float64, device=DEV),
                 lambda: torch.ones(2, dtype=torch.float64).to(DEV),
                 lambda: torch.ones(2, device=DEV).double(),
                 lambda: torch.tensor([1.0], dtype=torch.float64, device=DEV)):
        with pytest.raises(TypeError) as info:
            make()
        assert str(info.value) == MPS_FLOAT64
    assert torch.ones(2, device=DEV).float().dtype == torch.float32
    caps = torch.accelerator.get_device_capability()["supported_dtypes"]
    assert torch.float64 not in caps and torch.float32 in caps


def test_mps_rules_print_tensors_as_torch_prints_mps_ones(mps_rules):
    """torch formats MPS tensors through float32 (it names MPS); printing a
    tensor of the device refusing float64 raised MPS's TypeError."""
    text = repr(torch.tensor([1.5, -2.0], device=DEV))
    assert text == "tensor([ 1.5000, -2.0000], device='simaccel:0')"
    assert "1.5000" in str(torch.full((2, 2), 1.5, device=DEV))
    simaccel.set_mps_rules(False)
    assert repr(torch.tensor([1.5], dtype=torch.float64, device=DEV)).startswith(
        "tensor([1.5000]")


def test_mps_rules_grad_scaler_unscales_as_on_mps(mps_rules):
    """GradScaler.unscale_ takes the inverse scale in float64 except on MPS
    (torch names MPS): on the device refusing float64 it raised."""
    model = torch.nn.Linear(3, 1).to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(simaccel.NAME)
    scaler.scale(model(torch.ones(2, 3, device=DEV)).sum()).backward()
    scaler.unscale_(opt)
    assert model.weight.grad.device == DEV
    assert torch.allclose(model.weight.grad.cpu(), torch.full((1, 3), 2.0))
    scaler.step(opt)
    scaler.update()
    assert scaler._scale.device == DEV


def test_mps_rules_disabled_grad_scaler_unscales_nothing(mps_rules):
    """A disabled scaler (a float32 run's GradScaler(enabled=False)) has no
    scale: its unscale_ did nothing in torch and raised AttributeError
    here."""
    model = torch.nn.Linear(3, 1).to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(simaccel.NAME, enabled=False)
    scaler.scale(model(torch.ones(2, 3, device=DEV)).sum()).backward()
    scaler.unscale_(opt)
    assert torch.allclose(model.weight.grad.cpu(), torch.full((1, 3), 2.0))


@pytest.mark.own_machine
def test_mps_rules_honour_mps_own_fallback_variable():
    """Behaving like MPS, the device reads PYTORCH_ENABLE_MPS_FALLBACK when
    it loads (TorchDevice's launcher sets it for MPS's capability record)."""
    code = """
        import warnings, torch, simaccel
        simaccel.load()
        print(simaccel.fallback_enabled())
    """
    base = {"SIMACCEL_MPS_RULES": "1", "PYTORCH_ENABLE_MPS_FALLBACK": "1"}
    out = run_child(code, env=base)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]
    out = run_child(code, env={"PYTORCH_ENABLE_MPS_FALLBACK": "1"})
    assert out.stdout.split() == ["False"]            # only with the MPS rules


def _grid_sample(dev):
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(1, 1, 2, 2, 2, generator=g).to(dev)
    grid = torch.rand(1, 1, 1, 1, 3, generator=g).to(dev) * 2 - 1
    return torch.nn.functional.grid_sample(inp, grid, align_corners=False)


def test_mps_rules_unsupported_op_raises_like_mps(mps_rules):
    assert "aten::grid_sampler_3d" in simaccel.unsupported_ops()
    with pytest.raises(NotImplementedError) as info:
        _grid_sample(DEV)
    message = str(info.value)
    assert message.startswith("The operator 'aten::grid_sampler_3d' is not currently "
                              "implemented for the simaccel device")
    assert "`SIMACCEL_ENABLE_FALLBACK=1`" in message


def test_mps_rules_fallback_variable_runs_it_with_a_warning(mps_rules):
    simaccel.set_fallback_enabled(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _grid_sample(DEV)
    assert got.device == DEV
    assert torch.equal(got.cpu(), _grid_sample("cpu"))
    found = [re.match(simaccel.FALLBACK_WARNING_PATTERN, str(w.message)) for w in caught]
    assert [m.group(1) for m in found if m] == ["aten::grid_sampler_3d"]
    assert all(w.category is UserWarning for w in caught)


def test_mps_rules_cpu_only_ops_warn_and_lists_are_configurable(mps_rules):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        u, s, v = torch.linalg.svd(torch.eye(3, device=DEV))
    assert u.device == DEV
    assert any(re.match(simaccel.FALLBACK_WARNING_PATTERN, str(w.message)) and
               "aten::linalg_svd" in str(w.message) for w in caught)
    simaccel.set_unsupported_ops(["aten::cumsum"])
    assert set(simaccel.unsupported_ops()) == {"aten::cumsum", "aten::cumsum.out"}
    with pytest.raises(NotImplementedError, match="aten::cumsum"):
        torch.ones(3, device=DEV).cumsum(0)
    assert _grid_sample(DEV).device == DEV              # no longer listed
    simaccel.set_mps_rules(False)
    assert torch.ones(3, device=DEV).cumsum(0).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="no operator"):
        simaccel.set_unsupported_ops(["aten::no_such_op"])


# ------------------------------------------- other processes, build failure

@pytest.mark.own_machine
def test_environment_settings_at_load_and_several_devices():
    done = run_child("""
        import torch, simaccel
        simaccel.load()
        assert simaccel.mps_rules() and simaccel.fallback_enabled()
        assert simaccel.unsupported_ops() == ("aten::cumsum",)
        assert torch.simaccel.device_count() == 2
        a, b = torch.ones(2, device="simaccel:0"), torch.ones(2, device="simaccel:1")
        assert b.device.index == 1 and (b + 1).device.index == 1
        try:
            a + b
        except RuntimeError as exc:
            assert "Expected all tensors to be on the same device" in str(exc)
        else:
            raise AssertionError("no mismatch error")
        try:
            torch.zeros(1, dtype=torch.float64, device="simaccel")
        except TypeError:
            print("ok")
    """, env={"SIMACCEL_MPS_RULES": "1", "SIMACCEL_ENABLE_FALLBACK": "1",
              "SIMACCEL_UNSUPPORTED_OPS": "aten::cumsum.default", "SIMACCEL_DEVICE_COUNT": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


def _site_dir(tmp_path: Path) -> Path:
    """A site directory with the start-up hook and a stand-in "torch.backends"
    entry point that records what it sees when torch calls it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / _build.AUTOLOAD_PTH).write_text(_build.autoload_line() + "\n")
    (site / "probe_backend.py").write_text(
        "import torch\n"
        "def entry():\n"
        "    torch.probe_saw = torch._C._get_privateuse1_backend_name()\n")
    info = site / "probe_backend-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: probe-backend\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[torch.backends]\nprobe = probe_backend:entry\n")
    return site


@pytest.mark.own_machine
def test_activation_variable_gives_every_process_the_device(tmp_path):
    site = _site_dir(tmp_path)
    probe = f"""
        import importlib.util, site, sys
        site.addsitedir({str(site)!r})
        site.addsitedir({str(site)!r})                  # a second time: one hook
        assert importlib.util.find_spec("torch")         # asking is not importing
        import torch
        # check_available: a CUDA build of torch names "cuda" without a GPU
        print(torch._C._get_privateuse1_backend_name(), torch.probe_saw,
              torch.accelerator.current_accelerator(check_available=True))
    """
    on = run_child(probe, env={"SIMACCEL_AUTOLOAD": "1"})
    assert on.returncode == 0, on.stderr[-3000:]
    # Entry points (TorchDevice's among them) run after the device exists.
    assert on.stdout.split() == ["simaccel", "simaccel", "simaccel"]
    off = run_child(probe)
    assert off.returncode == 0, off.stderr[-3000:]
    assert off.stdout.split() == ["privateuseone", "privateuseone", "None"]


@pytest.mark.own_machine
def test_activation_through_the_venv_install():
    import sysconfig
    installed = Path(sysconfig.get_paths()["purelib"]) / _build.AUTOLOAD_PTH
    if not installed.is_file():
        pytest.skip("the start-up hook is not installed here (`make simaccel` installs it)")
    probe = ("import torch; "
             "print(torch.accelerator.current_accelerator(check_available=True))")
    on = run_child(probe, env={"SIMACCEL_AUTOLOAD": "1"})
    assert on.returncode == 0, on.stderr[-3000:]
    assert on.stdout.strip() == "simaccel"
    off = run_child(probe)
    assert off.stdout.strip() == "None", off.stderr[-3000:]


@pytest.mark.own_machine
def test_activation_reaches_spawned_workers(tmp_path):
    site = _site_dir(tmp_path)
    # A spawned worker starts a new interpreter: it finds the hook through
    # site-packages, as a venv install provides it; here, through sitecustomize.
    (tmp_path / "sitecustomize.py").write_text(f"import site\nsite.addsitedir({str(site)!r})\n")
    done = run_child("""
        import multiprocessing as mp
        import torch

        def where(_):
            import torch
            return str(torch.ones(1, device="simaccel").device)

        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(1) as pool:
                print(pool.map(where, [0])[0])
    """, env={"SIMACCEL_AUTOLOAD": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)])},
                     script=tmp_path / "spawn_probe.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "simaccel:0"


@pytest.mark.own_machine
def test_build_failure_gives_a_reason(tmp_path):
    done = run_child("""
        import simaccel
        print(simaccel.try_load(build=True))
    """, env={"SIMACCEL_BUILD_DIR": str(tmp_path / "build"), "CXX": "/nonexistent/c++"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "could not be built" in done.stdout


@pytest.mark.own_machine
def test_a_build_killed_before_does_not_stop_the_next(tmp_path):
    """A build killed while torch built (a test run stopped with Ctrl-C)
    left torch's lock file, and every later build, `make simaccel` and the
    suites among them, waited for it forever without a word."""
    build = tmp_path / "build"
    build.mkdir()
    (build / _build.TORCH_BUILD_LOCK).write_text("")
    done = run_child("""
        import simaccel
        print(simaccel.try_load(build=True))
    """, env={"SIMACCEL_BUILD_DIR": str(build), "CXX": "/nonexistent/c++"},
        timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "could not be built" in done.stdout


@pytest.mark.own_machine
def test_a_real_accelerator_keeps_it_out():
    """On an NVIDIA GPU every test process loaded it beside CUDA (pytest
    imports this module in each worker): torch's autograd engine then failed
    an internal assert on CUDA tensors and `t.cuda(0)` said "Invalid
    device, must be cuda device".  FakeNvidia: torch's accelerator query
    answers "cuda" in a child, as it does on such a machine."""
    done = run_child("""
        import torch
        torch._C._accelerator_getAccelerator = lambda: torch.device("cuda")  # FakeNvidia
        import simaccel
        print(simaccel.try_load())
        print(torch._C._get_privateuse1_backend_name())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    reason, backend = done.stdout.strip().splitlines()
    assert "has a real accelerator (cuda)" in reason
    assert backend == "privateuseone"
