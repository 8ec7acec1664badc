"""The legacy CUDA tensor types (torch.cuda.FloatTensor, ...) where "cuda"
is not CUDA (docs/policy.md, "Legacy tensor types")."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.autograd import Variable

import TorchDevice
from conftest import HAS_CUDA, HOST_LANDS, MPS_LIKE, TARGET

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="on NVIDIA machines torch's own types work")


def test_the_pattern_of_pre_0_4_training_code():
    # As GAN implementations of that time write it.
    cuda = True if torch.cuda.is_available() else False
    Tensor = torch.cuda.FloatTensor if cuda else torch.FloatTensor
    imgs = torch.arange(6, dtype=torch.uint8).reshape(3, 2)
    valid = Variable(Tensor(imgs.size(0), 1).fill_(1.0), requires_grad=False)
    real = Variable(imgs.type(Tensor))
    z = Variable(Tensor(np.full((3, 2), 0.5)))
    for t in (valid, real, z):
        assert t.device == TARGET and t.dtype == torch.float32
        assert isinstance(t, torch.cuda.FloatTensor)
    assert valid.tolist() == [[1.0]] * 3
    assert real.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert z.tolist() == [[0.5, 0.5]] * 3
    idx = torch.cuda.LongTensor([2, 0])
    assert idx.dtype == torch.int64 and idx.device == TARGET
    assert real[idx].tolist() == [[4.0, 5.0], [0.0, 1.0]]


def _host(dtype) -> torch.Tensor:
    """A host tensor in every mode (mode "accelerate" sends device-less
    factories to the accelerator; from_numpy shares host memory)."""
    return torch.from_numpy(np.ones(2, dtype=dtype))


def test_type_with_a_cuda_type_moves_as_cuda_does():
    host = _host(np.int32)
    for t in (torch.cuda.HalfTensor, "torch.cuda.HalfTensor"):
        moved = host.type(t)
        assert moved.dtype == torch.float16 and moved.device == TARGET
        moved.add_(1)                  # a copy, as on CUDA
        assert host.tolist() == [1, 1]
        assert moved.type(t) is moved  # already there: the tensor itself
    assert host.type() == "torch.IntTensor"
    assert host.type(torch.float64).dtype == torch.float64
    # A host type is a "cpu" request: the accelerator in mode "accelerate".
    assert host.type("torch.FloatTensor").device == HOST_LANDS


def test_type_with_a_host_type_moves_to_the_host_as_cuda_does():
    """On CUDA, a "cuda" tensor's .type(torch.FloatTensor) is a host copy:
    editing it leaves the tensor alone."""
    on_cuda = torch.ones(2, device="cuda")
    for t in (torch.FloatTensor, "torch.FloatTensor", torch.DoubleTensor):
        back = on_cuda.type(t)
        assert back.device == HOST_LANDS
        # float64 is float32 where it lands on a device without it.
        wide = torch.float32 if MPS_LIKE and HOST_LANDS.type != "cpu" \
            else torch.float64
        assert back.dtype == (wide if t is torch.DoubleTensor
                              else torch.float32)
        back.add_(1)
        assert on_cuda.tolist() == [1.0, 1.0]
    x = torch.zeros(2, dtype=torch.int64)
    moved = x.type_as(on_cuda)         # x.to(on_cuda): a copy on CUDA
    moved.add_(1)
    assert x.tolist() == [0, 0] and moved.dtype == torch.float32
    assert moved.device == on_cuda.device
    assert on_cuda.type_as(moved) is on_cuda


def test_the_report_names_the_calls_the_program_made(restore_config):
    """`.type(...)` and the "cuda" constructors move through Tensor.to's
    rules; their rows name Tensor.type and torch.cuda.FloatTensor, the
    calls the program made, not Tensor.to or Tensor.cuda."""
    host = _host(np.int32)
    TorchDevice.clear_report()
    TorchDevice.configure(report=True)
    try:
        host.type(torch.cuda.FloatTensor)
        torch.ones(2, device="cuda").type(torch.float64)
        torch.cuda.FloatTensor(2)
        records = TorchDevice._tdcore.records()
    finally:
        TorchDevice.configure(report=False)
        TorchDevice.clear_report()
    apis = {key[3] for key in records if key[0] == __file__}
    assert apis == {"torch.ones", "Tensor.type", "torch.cuda.FloatTensor"
                    }, records


def test_isinstance_sees_the_programs_place_and_dtype():
    on_cuda = torch.ones(2, device="cuda")
    assert isinstance(on_cuda, torch.cuda.FloatTensor)
    assert not isinstance(on_cuda, torch.cuda.LongTensor)
    assert not isinstance(_host(np.float32), torch.cuda.FloatTensor)
    assert not isinstance("x", torch.cuda.FloatTensor)


def test_default_tensor_type(restore_config):
    try:
        torch.set_default_tensor_type("torch.cuda.FloatTensor")
        made = torch.zeros(2)
        assert made.device == TARGET and made.dtype == torch.float32
    finally:
        torch.set_default_tensor_type(torch.FloatTensor)
        torch.set_default_device(None)
    assert torch.zeros(1).device == torch.device("cpu")


@pytest.mark.parametrize("mode", ["cpu-stays-cpu", "accelerate"])
def test_a_cuda_default_type_makes_torch_tensor_a_cuda_tensor(
        restore_config, mode):
    """On CUDA, once set_default_tensor_type("torch.cuda.FloatTensor") ran,
    the legacy constructor torch.Tensor(...) makes CUDA tensors (NeRF's
    renderer: `torch.cat([dists, torch.Tensor([1e10]).expand(...)], -1)`
    stopped at "Expected all tensors to be on the same device" where
    "cuda" lands on an accelerator).  torch.FloatTensor names the host."""
    TorchDevice.configure(mode=mode)
    TorchDevice.disable()      # a fresh enable(): no CUDA default type yet
    TorchDevice.enable()
    host_lands = TARGET if mode == "accelerate" else torch.device("cpu")
    if host_lands.type == "cpu":
        # No rule for torch.Tensor(...) yet: torch's own constructor, at
        # torch's own cost.
        assert "__new__" not in vars(torch.Tensor)
    try:
        torch.set_default_tensor_type("torch.cuda.FloatTensor")
        dists = torch.ones(2, 3)
        far = torch.Tensor([1e10])
        assert far.device == TARGET and far.dtype == torch.float32
        assert isinstance(far, torch.cuda.FloatTensor)
        joined = torch.cat([dists, far.expand(2, 1)], -1)
        assert joined[:, -1].tolist() == [1e10, 1e10]
        for made in (torch.Tensor(2, 3), torch.Tensor(np.ones(2))):
            assert made.device == TARGET
            assert isinstance(made, torch.cuda.FloatTensor)
        assert torch.Tensor(far).data_ptr() == far.data_ptr()  # a view
        assert torch.FloatTensor([1.0]).device == host_lands
    finally:
        torch.set_default_tensor_type(torch.FloatTensor)
        torch.set_default_device(None)
    made = torch.Tensor([1.0])
    assert made.device == host_lands
    assert not isinstance(made, torch.cuda.FloatTensor) or mode == "accelerate"
    TorchDevice.disable()      # the replacement put in late goes too
    assert "__new__" not in vars(torch.Tensor)
    TorchDevice.enable()


def test_the_stand_ins_pickle_to_themselves():
    for name in ("FloatTensor", "LongTensor"):
        t = getattr(torch.cuda, name)
        assert pickle.loads(pickle.dumps(t)) is t
        assert repr(t) == f"<class 'torch.cuda.{name}'>"


def test_disabled_torchs_own_types_are_back(restore_config):
    stand_in = torch.cuda.FloatTensor
    TorchDevice.disable()
    assert torch.cuda.FloatTensor is not stand_in
    assert torch.cuda.FloatTensor.__class__.__name__ == "tensortype"
    TorchDevice.enable()
    assert torch.cuda.FloatTensor is stand_in
