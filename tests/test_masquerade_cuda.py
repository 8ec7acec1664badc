"""Profile cuda (an NVIDIA GPU): torch.cuda stays native and torch.mps /
torch.backends.mps answer from CUDA.  Run by scripts/gpu_check.sh."""
from __future__ import annotations

import pytest
import torch

import TorchDevice
from TorchDevice import _masquerade

pytestmark = pytest.mark.cuda


def test_torch_cuda_is_native():
    for name in _masquerade.QUERY + _masquerade.MEMORY + _masquerade.RNG:
        value = getattr(torch.cuda, name, None)
        if value is not None:
            assert "TorchDevice" not in repr(getattr(value, "__self__", "")), \
                name
    assert torch.cuda.memory_allocated is torch.cuda.memory.memory_allocated
    assert type(torch.cuda.memory_allocated).__name__ == "function"
    assert torch.cuda.is_available is _masquerade._originals[
        "cuda.is_available"]


def test_mps_answers_from_cuda():
    mps = torch.mps
    assert torch.backends.mps.is_available() is True
    assert torch.backends.mps.is_built() is True
    assert mps.device_count() == torch.cuda.device_count()
    probe = {"__name__": "torch.utils.data.dataloader", "torch": torch}
    assert eval("torch.backends.mps.is_available()", probe) is False
    x = torch.ones(16 * 1024 * 1024, device="mps")   # lands on CUDA
    assert x.device.type == "cuda"
    mps.synchronize()
    assert mps.current_allocated_memory() == torch.cuda.memory_allocated()
    assert mps.current_allocated_memory() >= 64 * 1024 * 1024
    assert mps.driver_allocated_memory() == torch.cuda.memory_reserved()
    total = torch.cuda.get_device_properties(
        torch.cuda.current_device()).total_memory
    assert mps.recommended_max_memory() == total
    del x
    mps.empty_cache()
    assert mps.driver_allocated_memory() == torch.cuda.memory_reserved()


def test_mps_rng_and_fraction_reach_cuda():
    torch.mps.manual_seed(123)
    a = torch.randn(4, device="mps")
    torch.cuda.manual_seed(123)
    b = torch.randn(4, device="cuda")
    assert torch.equal(a, b)
    state = torch.mps.get_rng_state()
    assert torch.equal(state, torch.cuda.get_rng_state())
    c = torch.randn(4, device="mps")
    torch.mps.set_rng_state(state)
    assert torch.equal(c, torch.randn(4, device="mps"))
    try:
        torch.mps.set_per_process_memory_fraction(1.5)
        assert torch.cuda.get_per_process_memory_fraction() == 1.0
        torch.mps.set_per_process_memory_fraction(0.5)
        assert torch.cuda.get_per_process_memory_fraction() == 0.5
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def test_disable_restores_mps():
    replaced = torch.mps.synchronize
    TorchDevice.disable()
    try:
        assert torch.mps.synchronize is not replaced
        assert torch.backends.mps.is_available() is False
    finally:
        TorchDevice.enable()
