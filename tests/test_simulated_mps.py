"""The whole wrapper path on MPS's code paths (the `simulated_mps` fixture
of conftest): in the plain run the mps profile with `meta` standing in for
the MPS device, nothing else faked; in `make test-accel` the simulated
accelerator with MPS's capability record, with real tensors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import TorchDevice
from TorchDevice import _tdcore
from conftest import configure_mps_like

# The host: torch.device("cpu") is itself redirected in the default mode.
with TorchDevice.cpu_override():
    CPU = torch.device("cpu")


def test_accelerate_mode_moves_everything(simulated_mps):
    META = simulated_mps
    assert torch.zeros(2, device="cuda").device == META
    assert torch.zeros(2, device="cuda:3").device == META
    assert torch.zeros(2).device == META            # None -> accelerator
    assert torch.zeros(2, device="cpu").device == META
    assert torch.device("cuda") == META
    assert torch.nn.Linear(2, 2).weight.device == META
    assert torch.ones(2, device="cpu").cuda().device == META


def test_cpu_override_and_toggle(simulated_mps):
    META = simulated_mps
    with TorchDevice.cpu_override():
        assert torch.zeros(2).device == CPU
        assert torch.zeros(2, device="cpu").device == CPU
        assert torch.zeros(2, device="cuda").device == META  # honoured
    assert torch.zeros(2, device="cpu:-1").device == CPU   # toggles on
    assert _tdcore.get_cpu_override() is True
    assert torch.zeros(2).device == CPU
    torch.device("cpu:-1")                                 # toggles off
    assert torch.zeros(2).device == META


def test_cpu_stays_cpu_mode(simulated_mps):
    META = simulated_mps
    configure_mps_like("cpu-stays-cpu", "downcast")
    assert torch.zeros(2).device == CPU
    assert torch.zeros(2, device="cpu").device == CPU
    assert torch.zeros(2, device="cuda").device == META


def test_float64_becomes_float32(simulated_mps):
    META = simulated_mps
    t = torch.zeros(2, dtype=torch.float64, device="cuda")
    assert t.device == META and t.dtype == torch.float32
    x = torch.ones(2, device="cpu:-1")    # override on: host tensor
    try:
        assert x.to("cuda", torch.float64).dtype == torch.float32
        assert x.to(device="cuda:0", dtype=torch.float64).dtype == torch.float32
    finally:
        torch.device("cpu:-1")


def test_float64_error_policy(simulated_mps):
    configure_mps_like("accelerate", "error")
    with pytest.raises(TypeError, match="does not support float64"):
        torch.zeros(2, dtype=torch.float64, device="cuda")
    # On the host float64 is fine.
    with TorchDevice.cpu_override():
        assert torch.zeros(2, dtype=torch.float64).dtype == torch.float64


# Float64 data a program moves or copies to the device without naming a
# dtype: numpy's arrays are float64 (docs/policy.md, "float64 on MPS").
F64 = np.array([1.5, -2.25, 3.125])        # each exact in float32

FLOAT64_DATA = {
    "torch.tensor(array).to(device)": lambda d: torch.tensor(F64).to(d),
    "torch.from_numpy(array).cuda()": lambda d: torch.from_numpy(F64).cuda(),
    "x.to(device=d, non_blocking=True)":
        lambda d: torch.from_numpy(F64).to(device=d, non_blocking=True),
    # Module.to's own call form, dtype=None by position
    "x.to(d, None, False)": lambda d: torch.from_numpy(F64).to(d, None, False),
    "x.to(d, dtype=None)": lambda d: torch.from_numpy(F64).to(d, dtype=None),
    "torch.tensor(array, device=d)": lambda d: torch.tensor(F64, device=d),
    "torch.as_tensor(array, device=d)":
        lambda d: torch.as_tensor(F64, device=d),
    "torch.asarray(array, device=d)": lambda d: torch.asarray(F64, device=d),
    "torch.tensor([np.float64, ...], device=d)":
        lambda d: torch.tensor([np.float64(v) for v in F64], device=d),
    "torch.tensor(array, device=d, dtype=None)":
        lambda d: torch.tensor(F64, device=d, dtype=None),
}


# Factories whose dtype, when none is named, is a float64 tensor's.
X64 = lambda: torch.from_numpy(F64)       # noqa: E731  (a host tensor)
FLOAT64_LIKE = {
    "torch.zeros_like(x, device=d)": lambda d: torch.zeros_like(X64(), device=d),
    "torch.full_like(x, 2.5, device=d)":
        lambda d: torch.full_like(X64(), 2.5, device=d),
    "torch.randn_like(x, device=d)": lambda d: torch.randn_like(X64(), device=d),
    "x.new_zeros(2, 3, device=d)": lambda d: X64().new_zeros(2, 3, device=d),
    "x.new_full((2,), 2.5, device=d)":
        lambda d: X64().new_full((2,), 2.5, device=d),
    "x.new_tensor(list, device=d)":
        lambda d: X64().new_tensor(F64.tolist(), device=d),
}
FLOAT64_DATA.update(FLOAT64_LIKE)


@pytest.mark.parametrize("name", sorted(FLOAT64_LIKE))
def test_float64_like_factories_arrive_as_float32(simulated_mps, name):
    META = simulated_mps
    t = FLOAT64_LIKE[name]("cuda")
    assert t.device == META and t.dtype == torch.float32
    if META.type != "meta" and name.startswith("x.new_tensor"):
        assert t.cpu().tolist() == F64.tolist()


@pytest.mark.parametrize("name", sorted(set(FLOAT64_DATA) - set(FLOAT64_LIKE)))
def test_float64_data_arrives_as_float32(simulated_mps, name):
    META = simulated_mps
    t = FLOAT64_DATA[name]("cuda")
    assert t.device == META and t.dtype == torch.float32
    if META.type != "meta":
        assert t.cpu().tolist() == F64.tolist()


def test_float64_module_arrives_as_float32(simulated_mps):
    META = simulated_mps
    if META.type == "meta":
        pytest.skip("Module.to hands each tensor the device it landed on, "
                    "which for the stand-in is meta, not an MPS request")
    with TorchDevice.cpu_override():
        host = torch.nn.Linear(3, 2).double()
    for move in (lambda m: m.to("cuda"), lambda m: m.cuda(),
                 lambda m: m.to(torch.device("cuda"), non_blocking=True)):
        m = move(copy.deepcopy(host))
        assert {(p.device, p.dtype) for p in m.parameters()} \
            == {(META, torch.float32)}
        assert m.weight.tolist() == host.weight.float().tolist()
        out = m(torch.from_numpy(F64).to("cuda"))
        assert out.dtype == torch.float32 and out.device == META


def test_float64_data_error_policy(simulated_mps):
    configure_mps_like("accelerate", "error")
    for name, make in FLOAT64_DATA.items():
        with pytest.raises(TypeError, match="does not support float64"):
            make("cuda")


# Programs that make float64 torch's default dtype (torch.set_default_dtype,
# common in scientific code): a constructor naming no dtype makes float64
# where its result is floating, which depends on its arguments.
FLOAT64_DEFAULT = {
    "torch.zeros(3, device=d)": lambda d: torch.zeros(3, device=d),
    "torch.zeros(3) (no device)": lambda d: torch.zeros(3),
    "torch.ones(3, device=d)": lambda d: torch.ones(3, device=d),
    "torch.tensor([1.5, -2.25], device=d)":
        lambda d: torch.tensor([1.5, -2.25], device=d),
    "torch.tensor([1, 2.5], device=d)":
        lambda d: torch.tensor([1, 2.5], device=d),
    "torch.arange(0.0, 1.5, 0.5, device=d)":
        lambda d: torch.arange(0.0, 1.5, 0.5, device=d),
    "torch.full((3,), 1.5, device=d)": lambda d: torch.full((3,), 1.5, device=d),
    "torch.linspace(0, 1, 3, device=d)": lambda d: torch.linspace(0, 1, 3,
                                                                 device=d),
    "torch.eye(2, device=d)": lambda d: torch.eye(2, device=d),
    "torch.randn(3, device=d)": lambda d: torch.randn(3, device=d),
    "nn.Linear(2, 2, device=d).weight":
        lambda d: torch.nn.Linear(2, 2, device=d).weight,
}
# ... and where it is not floating, it keeps what torch makes.
FLOAT64_DEFAULT_KEEPS = {
    "torch.arange(3, device=d)": (lambda d: torch.arange(3, device=d),
                                  torch.int64),
    "torch.full((2,), 1, device=d)": (lambda d: torch.full((2,), 1, device=d),
                                      torch.int64),
    "torch.tensor([1, 2], device=d)": (lambda d: torch.tensor([1, 2],
                                                              device=d),
                                       torch.int64),
    "torch.randint(0, 5, (3,), device=d)":
        (lambda d: torch.randint(0, 5, (3,), device=d), torch.int64),
    "torch.tensor([True], device=d)": (lambda d: torch.tensor([True],
                                                              device=d),
                                       torch.bool),
}


@pytest.fixture
def float64_default():
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


@pytest.mark.parametrize("name", sorted(FLOAT64_DEFAULT))
def test_float64_default_dtype_arrives_as_float32(simulated_mps,
                                                  float64_default, name):
    META = simulated_mps
    t = FLOAT64_DEFAULT[name]("cuda")
    assert t.device == META and t.dtype == torch.float32


def test_float64_default_dtype_values_and_draws(simulated_mps,
                                                float64_default):
    META = simulated_mps
    if META.type == "meta":
        pytest.skip("the stand-in computes no values")
    assert torch.tensor([1, 2.5], device="cuda").tolist() == [1.0, 2.5]
    assert torch.arange(0.0, 1.5, 0.5, device="cuda").tolist() \
        == [0.0, 0.5, 1.0]
    assert torch.full((2,), 1.5, device="cuda").tolist() == [1.5, 1.5]
    # Learning the dtype draws nothing: the same numbers as asked in float32.
    gen = torch.Generator(device="cuda")
    gen.manual_seed(7)
    made = torch.randn(4, device="cuda", generator=gen)
    gen.manual_seed(7)
    asked = torch.randn(4, device="cuda", generator=gen, dtype=torch.float32)
    assert torch.equal(made, asked)


@pytest.mark.parametrize("name", sorted(FLOAT64_DEFAULT_KEEPS))
def test_float64_default_dtype_other_results_keep(simulated_mps,
                                                  float64_default, name):
    META = simulated_mps
    make, dtype = FLOAT64_DEFAULT_KEEPS[name]
    t = make("cuda")
    assert t.device == META and t.dtype == dtype


def test_float64_default_dtype_stays_on_the_host(simulated_mps,
                                                 float64_default):
    with TorchDevice.cpu_override():
        assert torch.zeros(2).dtype == torch.float64
        assert torch.tensor([1.5]).dtype == torch.float64
    out = torch.empty(2, device="cuda", dtype=torch.float32)
    assert torch.zeros(2, out=out).dtype == torch.float32


def test_float64_default_dtype_error_policy(simulated_mps, float64_default):
    configure_mps_like("accelerate", "error")
    for name, make in FLOAT64_DEFAULT.items():
        with pytest.raises(TypeError, match="does not support float64"):
            make("cuda")
    for name, (make, dtype) in FLOAT64_DEFAULT_KEEPS.items():
        assert make("cuda").dtype == dtype


def test_other_data_keeps_its_dtype(simulated_mps):
    META = simulated_mps
    assert torch.tensor(np.array([1, 2]), device="cuda").dtype == torch.int64
    assert torch.from_numpy(np.array([1.5], dtype=np.float32)).cuda().dtype \
        == torch.float32
    assert torch.tensor([1.5, 2.5], device="cuda").dtype == torch.float32
    x = torch.from_numpy(F64)
    with TorchDevice.cpu_override():               # stays on the host
        assert x.cpu().dtype == torch.float64
        assert torch.tensor(F64, device="cpu").dtype == torch.float64
        assert torch.tensor(F64).dtype == torch.float64
    # Named dtypes are the program's: float32 and float16 as asked.
    assert torch.tensor(F64, device="cuda", dtype=torch.float16).dtype \
        == torch.float16
    assert x.to("cuda", torch.float16).device == META


def test_default_device_context_still_wins(simulated_mps):
    META = simulated_mps
    with torch.device("cpu"):
        # The context device is itself redirected (cpu -> accelerator).
        assert torch.zeros(2).device == META


def test_requests_from_torch_internals_stay_on_host(simulated_mps):
    META = simulated_mps
    # Code whose module is torch's own (optimizers' step counters, data
    # loading) asks for the host on purpose; torch.nn layers do not.
    def run_as(module_name):
        scope = {"__name__": module_name, "torch": torch}
        exec("def make():\n"
             "    return (torch.zeros(1).device,"
             " torch.zeros(1, device='cpu').device,"
             " torch.device('cpu'), torch.zeros(1, device='cuda').device)",
             scope)
        return scope["make"]()

    assert run_as("torch.optim.adam") == (CPU, CPU, CPU, META)
    assert run_as("torch.nn.modules.linear") == (META, META, META, META)
    assert run_as("user_code") == (META, META, META, META)
