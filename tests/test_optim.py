"""Optimizers built with ``capturable=True`` step where "cuda" lands
(docs/policy.md, "Optimizers with capturable=True")."""
from __future__ import annotations

import pytest
import torch

import TorchDevice
from TorchDevice import _torch_compat

CAPTURABLE = ("Adadelta", "Adam", "AdamW", "Adamax", "ASGD", "NAdam",
              "RAdam", "RMSprop", "Rprop")


def _train(name: str, capturable: bool, foreach: bool):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 2)).cuda()
    opt = getattr(torch.optim, name)(model.parameters(), lr=0.01,
                                     capturable=capturable, foreach=foreach)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(4, 8, generator=g).cuda()
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("name", CAPTURABLE)
def test_capturable_optimizer_steps_as_the_usual_one(name, foreach):
    model, opt = _train(name, capturable=True, foreach=foreach)
    usual, _ = _train(name, capturable=False, foreach=foreach)
    for p, q in zip(model.parameters(), usual.parameters()):
        # The capturable path keeps its corrections in float32 tensors;
        # the usual one computes them as Python floats.
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    landed = next(model.parameters()).device
    for state in opt.state.values():
        if "step" in state:
            assert state["step"].device == landed


def test_disable_gives_back_torchs_own_check():
    original = _torch_compat.get("capturable_devices")
    import torch.optim.adam as adam
    try:
        TorchDevice.disable()
        assert adam._get_capturable_supported_devices is original
    finally:
        TorchDevice.enable()
    if TorchDevice.policy()["profile"] != "cuda":
        assert adam._get_capturable_supported_devices is not original
