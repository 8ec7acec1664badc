"""Profile cuda on a real NVIDIA GPU: MPS-written code runs on CUDA, host
requests stay on the host in the default mode and are accelerated in mode
"accelerate", native CUDA is untouched.

Marked `cuda`: skipped without a GPU, run by scripts/gpu_check.sh.
"""
from __future__ import annotations

import pytest
import torch

import TorchDevice
from conftest import run_python

pytestmark = pytest.mark.cuda


def test_profile_is_cuda():
    assert TorchDevice.hardware_profile() == "cuda"


def test_mps_requests_land_on_cuda():
    # The device the program built reads as what it asked for; tensors are
    # on CUDA (docs/policy.md, "What a device reads as").
    assert torch.device("mps").type == "mps"
    assert torch.zeros(2, device="mps").device.type == "cuda"
    assert torch.zeros(2, device=torch.device("mps")).device.type == "cuda"
    assert torch.ones(2).to("mps").device.type == "cuda"
    assert torch.ones(2, device="cpu:-1").mps().device.type == "cuda"
    torch.device("cpu:-1")


def test_cpu_requests_stay_on_the_host_in_the_default_mode():
    assert TorchDevice.config().mode == "cpu-stays-cpu"
    assert torch.zeros(2).device.type == "cpu"
    assert torch.zeros(2, device="cpu").device.type == "cpu"
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"


def test_cpu_requests_are_accelerated_in_accelerate_mode(restore_config):
    TorchDevice.configure(mode="accelerate")
    assert torch.zeros(2).device.type == "cuda"
    assert torch.zeros(2, device="cpu").device.type == "cuda"
    assert torch.nn.Linear(2, 2).weight.device.type == "cuda"


def test_cpu_minus_one_and_override(restore_config):
    assert torch.zeros(2, device="cpu:-1").device.type == "cpu"
    try:
        assert torch.zeros(2).device.type == "cpu"
        assert torch.zeros(2, device="cuda").device.type == "cuda"
    finally:
        torch.device("cpu:-1")
    with TorchDevice.cpu_override():
        assert torch.zeros(2, device="cpu").device.type == "cpu"


def test_cpu_stays_cpu_mode(restore_config):
    TorchDevice.configure(mode="cpu-stays-cpu")
    assert torch.zeros(2).device.type == "cpu"
    assert torch.zeros(2, device="mps").device.type == "cuda"


def test_native_cuda_untouched():
    assert torch.device("cuda:0") == torch.device("cuda", 0)
    t = torch.arange(4.0, device="cuda:0")
    assert t.device == torch.device("cuda", 0)
    assert t.numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
    proc = run_python("""
        import torch
        before = {n: getattr(torch.cuda, n) for n in dir(torch.cuda)
                  if callable(getattr(torch.cuda, n))}
        import TorchDevice
        changed = [n for n, f in before.items() if getattr(torch.cuda, n) is not f]
        print(changed)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_results_match_native_cuda():
    torch.manual_seed(0)
    a = torch.randn(64, 64, device="mps")
    TorchDevice.disable()
    try:
        torch.manual_seed(0)
        b = torch.randn(64, 64, device="cuda")
    finally:
        TorchDevice.enable()
    assert torch.equal(a, b)
