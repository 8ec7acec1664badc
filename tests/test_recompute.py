"""Dropout replayed in checkpointed blocks (torch.utils.checkpoint) on the
device "cuda" lands on (docs/policy.md, "Random numbers in recomputed
blocks")."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from TorchDevice import _patches, _recompute
from conftest import ACCEL, PROFILE


def _block() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.Dropout(0.5), torch.nn.GELU(),
        torch.nn.Linear(32, 8)).cuda()


@pytest.mark.skipif(ACCEL is None and PROFILE != "cuda",
                    reason="the host's random state is always replayed: "
                           "needs an accelerator")
@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpointed_dropout_draws_the_forward_mask_again(reentrant):
    """A CUDA program's checkpointed block with dropout: the gradients are
    those of the forward pass that ran.  On a device whose module has no
    `_initialized` (MPS, the simulated accelerator) torch did not save the
    device's random state, the recomputation drew another mask, and the
    gradients differed from the same block run without checkpointing."""
    torch.manual_seed(0)
    block = _block()
    x = torch.randn(4, 8, device="cuda", requires_grad=True)
    torch.cuda.manual_seed(1)
    y = checkpoint(block, x, use_reentrant=reentrant)
    y.sum().backward()
    got = x.grad.clone()
    x.grad = None
    torch.cuda.manual_seed(1)
    plain = block(x)
    plain.sum().backward()
    assert torch.equal(y, plain)
    assert torch.equal(got, x.grad)
    # a sequence of checkpointed segments, each replaying its own draws
    x.grad = None
    seq = torch.nn.Sequential(*[torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.Dropout(0.3)) for _ in range(4)]).cuda()
    torch.cuda.manual_seed(2)
    checkpoint_sequential(seq, 2, x, use_reentrant=reentrant).sum().backward()
    got = x.grad.clone()
    x.grad = None
    torch.cuda.manual_seed(2)
    seq(x).sum().backward()
    assert torch.equal(got, x.grad)


def test_mps_module_is_handed_with_what_checkpoint_asks(monkeypatch):
    """torch.mps has neither `_initialized` nor a device context: where
    "cuda" lands on MPS, checkpoint gets both (one device: no context), and
    the random state stays torch.mps's own."""
    monkeypatch.setattr(_patches, "landed_type", lambda: "mps")
    get = _recompute._device_module_builder(lambda device="cuda":
                                             getattr(torch, device))
    handed = get("mps")
    assert handed._initialized is True
    assert isinstance(handed.device(0), contextlib.nullcontext)
    assert handed.get_rng_state == torch.mps.get_rng_state
    assert handed.set_rng_state == torch.mps.set_rng_state
    # other devices, and modules that have the attribute, are torch's own
    assert get("cpu") is torch.cpu
    monkeypatch.setattr(_patches, "landed_type", lambda: "cuda")
    assert get("cuda") is torch.cuda
