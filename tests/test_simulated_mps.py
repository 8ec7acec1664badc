"""The whole wrapper path on MPS's code paths (the `simulated_mps` fixture
of conftest): in the plain run the mps profile with `meta` standing in for
the MPS device, nothing else faked; in `make test-accel` the simulated
accelerator with MPS's capability record, with real tensors."""
from __future__ import annotations

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
