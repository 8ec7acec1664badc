"""A choice of CUDA's attention kernels runs where "cuda" is not CUDA
(docs/policy.md, "Attention kernels")."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import TorchDevice
from TorchDevice import _sdpa
from conftest import HAS_CUDA

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="on NVIDIA machines every kernel is there")

LANDS_ON = TorchDevice.policy()["device"]
MISSING = [b for b in (SDPBackend.FLASH_ATTENTION,
                       SDPBackend.EFFICIENT_ATTENTION,
                       SDPBackend.CUDNN_ATTENTION)
           if b.name not in _sdpa.device_kernels(LANDS_ON)]


def _qkv():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 4, 8, 16, generator=g).cuda() for _ in range(3)]


def _flags():
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(),
            b.math_sdp_enabled(), b.cudnn_sdp_enabled())


@pytest.mark.parametrize("choice", MISSING + [MISSING],
                         ids=[b.name for b in MISSING] + ["all missing"])
def test_a_choice_without_the_devices_kernels_gets_them(choice,
                                                       restore_config):
    q, k, v = _qkv()
    whole = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    before = _flags()
    line = sys._getframe().f_lineno + 1
    with sdpa_kernel(choice):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _flags() == before
    torch.testing.assert_close(out, whole)
    rows = [r for r in TorchDevice.report()
            if r["api"] == "torch.nn.attention.sdpa_kernel"]
    assert [(r["what"], r["line"]) for r in rows] == [("redirected", line)]
    assert rows[0]["to"].startswith(rows[0]["from"])


def test_the_older_context_manager_too():
    q, k, v = _qkv()
    whole = F.scaled_dot_product_attention(q, k, v)
    with pytest.warns(FutureWarning):
        with torch.backends.cuda.sdp_kernel(
                enable_flash=False, enable_math=False,
                enable_mem_efficient=True):
            out = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, whole)


def test_a_choice_with_one_of_the_devices_kernels_is_kept():
    with sdpa_kernel(SDPBackend.MATH):
        assert _flags() == (False, False, True, False)
    with sdpa_kernel([SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION]):
        assert _flags() == (False, True, True, False)


def test_compiled_code_with_a_choice_runs():
    q, k, v = _qkv()

    def attend(q, k, v):
        with sdpa_kernel(MISSING[0]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    compiled = torch.compile(attend, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), attend(q, k, v))


@pytest.mark.skipif(LANDS_ON != "cpu", reason="torch checks the kernel "
                    "flags on the CPU; the simulated accelerator has one "
                    "kernel and ignores them")
def test_without_torchdevice_the_choice_fails(restore_config):
    """The program really needs it: torch alone finds no kernel."""
    q, k, v = _qkv()
    TorchDevice.disable()
    with pytest.raises(RuntimeError, match="No viable backend"):
        with sdpa_kernel(MISSING[0]):
            F.scaled_dot_product_attention(q, k, v)


@pytest.fixture
def restore_flags():
    """The process-wide kernel switches as they were, set back through
    torch itself."""
    before = _flags()
    yield
    for value, name in zip(before, ("flash", "mem_efficient", "math",
                                    "cudnn")):
        getattr(torch._C, f"_set_sdp_use_{name}")(value)


def test_switches_one_by_one_that_leave_no_device_kernel_get_them(
        restore_flags, restore_config):
    """A CUDA program that forces a kernel by switching the others off, one
    call at a time: the call after which the device has no kernel on turns
    the device's on, and the attention runs."""
    q, k, v = _qkv()
    whole = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    cuda = torch.backends.cuda
    cuda.enable_flash_sdp(False)
    cuda.enable_mem_efficient_sdp(True)
    line = sys._getframe().f_lineno + 1
    cuda.enable_math_sdp(False)
    kernels = _sdpa.device_kernels(LANDS_ON)
    on = dict(zip(("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH",
                   "CUDNN_ATTENTION"), _flags()))
    assert all(on[kernel] for kernel in kernels)
    assert on["EFFICIENT_ATTENTION"]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, whole)
    rows = [r for r in TorchDevice.report()
            if r["api"].startswith("torch.backends.cuda.enable_")]
    assert [(r["api"], r["what"], r["line"]) for r in rows] == [
        ("torch.backends.cuda.enable_math_sdp", "redirected", line)]
    assert "MATH" in rows[0]["to"] and "MATH" not in rows[0]["from"]


def test_switches_that_keep_a_device_kernel_or_none_are_kept(
        restore_flags):
    cuda = torch.backends.cuda
    kernel = _sdpa.device_kernels(LANDS_ON)[-1]         # MATH everywhere
    assert kernel == "MATH"
    cuda.enable_flash_sdp(False)
    cuda.enable_mem_efficient_sdp(False)
    cuda.enable_cudnn_sdp(False)
    assert _flags() == (False, False, True, False)
    cuda.enable_math_sdp(False)         # nothing on: fails on CUDA too
    assert _flags() == (False, False, False, False)


@pytest.mark.skipif(LANDS_ON != "cpu", reason="torch checks the kernel "
                    "flags on the CPU; the simulated accelerator has one "
                    "kernel and ignores them")
def test_without_torchdevice_the_switches_fail(restore_flags,
                                               restore_config):
    q, k, v = _qkv()
    TorchDevice.disable()
    cuda = torch.backends.cuda
    cuda.enable_flash_sdp(False)
    cuda.enable_math_sdp(False)
    with pytest.raises(RuntimeError, match="No viable backend"):
        F.scaled_dot_product_attention(q, k, v)
