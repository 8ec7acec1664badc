"""Factories, Tensor and Module movement on this machine (profile cpu; in
`make test-accel` profile accelerator, the simulated device used with MPS's
capability record)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import TorchDevice
from TorchDevice import _patches, _tdcore
from conftest import HAS_CUDA, MPS_LIKE, TARGET, host, mps_fallback

pytestmark = pytest.mark.skipif(HAS_CUDA, reason="profile cpu expectations")

# Where accelerator requests land: the CPU, or the simulated accelerator.
WHERE = TARGET
# float64 where the device computes it; MPS's record has none.
FLOAT64 = torch.float32 if MPS_LIKE else torch.float64


def test_every_device_constructor_is_wrapped():
    from torch.utils._device import _device_constructors
    ctors = _device_constructors()
    wrapped = {r.__wrapped__ for owner, name, orig, r in _patches.replaced()
               if isinstance(r, _tdcore.Wrapper)}
    missing = [f.__name__ for f in ctors if f not in wrapped]
    assert missing == []


@pytest.mark.parametrize("call", [
    lambda d: torch.zeros(2, device=d),
    lambda d: torch.ones(2, 3, device=d),
    lambda d: torch.empty(2, device=d),
    lambda d: torch.full((2,), 1.5, device=d),
    lambda d: torch.rand(2, device=d),
    lambda d: torch.randn(2, device=d),
    lambda d: torch.randint(0, 5, (2,), device=d),
    lambda d: torch.randperm(4, device=d),
    lambda d: torch.arange(4, device=d),
    lambda d: torch.range(0, 3, device=d),
    lambda d: torch.linspace(0, 1, 3, device=d),
    lambda d: torch.logspace(0, 1, 3, device=d),
    lambda d: torch.eye(2, device=d),
    lambda d: torch.tensor([1, 2], device=d),
    lambda d: torch.as_tensor([1, 2], device=d),
    lambda d: torch.asarray([1, 2], device=d),
    lambda d: torch.scalar_tensor(3, device=d),
    lambda d: torch.empty_strided((2, 2), (2, 1), device=d),
    lambda d: torch.tril_indices(3, 3, device=d),
    lambda d: torch.triu_indices(3, 3, device=d),
    lambda d: torch.hann_window(4, device=d),
    lambda d: torch.hamming_window(4, device=d),
    lambda d: torch.blackman_window(4, device=d),
    lambda d: torch.bartlett_window(4, device=d),
    lambda d: torch.kaiser_window(4, device=d),
    lambda d: torch.fft.fftfreq(4, device=d),
    lambda d: torch.fft.rfftfreq(4, device=d),
    lambda d: torch.normal(0.0, 1.0, (2,), device=d),
    lambda d: torch.zeros_like(torch.ones(2), device=d),
    lambda d: torch.ones_like(torch.ones(2), device=d),
    lambda d: torch.empty_like(torch.ones(2), device=d),
    lambda d: torch.full_like(torch.ones(2), 7, device=d),
    lambda d: torch.rand_like(torch.ones(2), device=d),
    lambda d: torch.randn_like(torch.ones(2), device=d),
    lambda d: torch.randint_like(torch.ones(2), 3, device=d),
    lambda d: torch.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (3,), device=d),
    lambda d: torch.sparse_csr_tensor([0, 1, 2], [0, 1], [1.0, 2.0], (2, 2),
                                      device=d),
    lambda d: torch.ones(2).new_zeros(3, device=d),
    lambda d: torch.ones(2).new_ones(3, device=d),
    lambda d: torch.ones(2).new_empty(3, device=d),
    lambda d: torch.ones(2).new_full((3,), 2.0, device=d),
    lambda d: torch.ones(2).new_tensor([1.0], device=d),
    lambda d: torch.ones(2).new_empty_strided((2,), (1,), device=d),
    lambda d: torch.UntypedStorage(8, device=d),
])
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", 0,
                                    "__device_obj__"])
def test_factories_redirect(call, device):
    if device == "__device_obj__":
        device = torch.device("cuda", 0)
    # Operators MPS lacks run on the host, as under the launcher (which
    # sets the device's fallback variable); sparse layouts are not the
    # simulated device's (tests/simaccel/README.md).
    with mps_fallback():
        try:
            out = call(device)
        except NotImplementedError as exc:
            if TARGET.type == "cpu" or "Sparse" not in str(exc):
                raise
            pytest.skip(f"no sparse layouts on {TARGET.type}")
    assert out.device == WHERE


def test_positional_and_keyword_arguments_are_kept():
    t = torch.full((2, 2), 3.0, dtype=torch.float64, device="cuda",
                   requires_grad=True)
    assert t.dtype == FLOAT64 and t.requires_grad and t.device == WHERE
    assert torch.equal(host(t.detach()),
                       host(torch.full((2, 2), 3.0, dtype=FLOAT64)))


def test_seeded_random_factories_match_native():
    torch.manual_seed(123)
    a = torch.randn(5, device="cuda")
    torch.manual_seed(123)
    TorchDevice.disable()
    try:
        b = torch.randn(5, device="cpu")
    finally:
        TorchDevice.enable()
    assert torch.equal(host(a), b)


def test_generator_device():
    g = torch.Generator(device="cuda")
    assert isinstance(g, torch.Generator)
    assert g.device == WHERE
    g2 = torch.Generator("mps")
    assert g2.device == WHERE
    g.manual_seed(3)
    x = torch.rand(3, device="cuda", generator=g)
    g.manual_seed(3)
    assert torch.equal(x, torch.rand(3, generator=g))


def test_typed_storage():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = torch.TypedStorage(4, device="cuda", dtype=torch.float32)
    assert s.device == WHERE


def test_default_device_context_wins_over_policy():
    with torch.device("meta"):
        assert torch.zeros(2).device.type == "meta"
        assert torch.randn(2, 2).device.type == "meta"
        # An explicit device still follows the policy.
        assert torch.zeros(2, device="cuda").device == WHERE
        assert torch.nn.LazyLinear(3).weight.device.type == "meta"


def test_lazy_modules_still_work():
    lazy = torch.nn.LazyLinear(3).cuda()
    out = lazy(torch.ones(2, 5, device="cuda"))
    assert out.shape == (2, 3) and out.device == WHERE


class TestTensorTo:
    def test_all_call_forms(self):
        t = torch.ones(2)
        assert t.to("cuda").device == WHERE
        assert t.to("cuda:1").device == WHERE
        assert t.to(torch.device("cuda")).device == WHERE
        assert t.to(0).device == WHERE
        assert t.to(device="cuda").device == WHERE
        assert t.to("cuda", torch.float64).dtype == FLOAT64
        assert t.to("cuda", dtype=torch.float16).dtype == torch.float16
        assert t.to(device="mps", dtype=torch.int32).dtype == torch.int32
        # No device: the tensor stays where it is, and float64 asked of a
        # tensor on a device without it is float32 there (docs/policy.md).
        assert t.to(torch.float64).dtype == FLOAT64
        assert t.to(torch.ones(1, dtype=torch.int64)).dtype == torch.int64
        assert t.to("cuda", non_blocking=True).device == WHERE
        assert t.to("cuda", copy=True) is not t
        # A host tensor moved to "cuda" is a new tensor, as on CUDA; moving
        # it again is a no-op (docs/policy.md, "Moves copy").
        moved = t.to("cuda")
        assert moved is not t and moved.to("cuda") is moved

    def test_methods(self):
        t = torch.arange(3.0)
        for moved in (t.cuda(), t.cuda(0), t.cuda("cuda:1"), t.cuda(device=0),
                      t.cuda(non_blocking=True), t.cuda(0, True), t.cpu(),
                      t.mps()):
            assert moved.device == WHERE
            assert torch.equal(moved, t)

    def test_numpy_always_reaches_host(self):
        t = torch.arange(3.0, device="cuda")
        arr = t.numpy()
        assert isinstance(arr, np.ndarray)
        np.testing.assert_array_equal(arr, [0.0, 1.0, 2.0])
        assert t.cuda().numpy().tolist() == [0.0, 1.0, 2.0]

    def test_pin_memory_of_a_host_tensor(self):
        """pin_memory() gives a copy, as CUDA's does: without an accelerator
        nothing is pinned, and with one a host tensor the policy placed on
        the accelerator is already where pinning is for.  Pinning the copy
        again is the copy itself, as for a pinned tensor on CUDA."""
        t = torch.ones(3)
        pinned = t.pin_memory()
        assert torch.equal(pinned, t)
        assert t.is_pinned() is False
        if TARGET.type != "cpu" or _tdcore.get_move_copies():
            assert pinned is not t and pinned.device == WHERE
            pinned.add_(1)
            assert t.tolist() == [1.0, 1.0, 1.0]
        if TARGET.type == "cpu" and _tdcore.get_move_copies():
            assert pinned.pin_memory() is pinned

    def test_invalid_to_raises_like_torch(self):
        t = torch.ones(1)
        with pytest.raises(RuntimeError, match="device type at start"):
            t.to("cud")
        with pytest.raises(RuntimeError, match="Invalid device string"):
            t.to("cuda:x")
        with pytest.raises(TypeError, match="device"):
            torch.zeros(2, device=3.5)
        with pytest.raises(RuntimeError, match="must not be negative"):
            torch.zeros(2, device=-2)

    def test_get_device_names_the_gpu_the_program_means(self):
        # CUDA code hands a tensor's get_device() back as a device
        # (`torch.zeros(n, device=x.get_device())`, `A.cuda(x.get_device())`).
        # Where "cuda" lands on the CPU, every tensor answers -1, which is
        # read as "cuda" (docs/policy.md); a device whose tensors answer
        # their index needs nothing, and there a host tensor's -1 is
        # refused as CUDA refuses it.
        x = torch.randn(2, 3).cuda()
        d = x.get_device()
        made = [torch.zeros(2, device=d), torch.tensor([1.0], device=d),
                torch.arange(3, device=d), x.new_zeros(2, device=d),
                x.to(d), torch.ones(2).cuda(d),
                torch.nn.Linear(2, 2).to(d).weight]
        assert {t.device for t in made} == {WHERE}
        assert torch.device(d) == WHERE
        assert torch.Generator(d).device == WHERE
        host_copy = torch.ones(2)
        moved = host_copy.to(d)
        moved.add_(1)
        assert host_copy.tolist() == [1.0, 1.0]        # a move copies
        if WHERE.type == "cpu":
            assert d == -1
            assert moved.cpu() is not moved             # on "cuda" for the program
        else:
            assert d == 0
            with pytest.raises(RuntimeError, match="must not be negative"):
                torch.zeros(2, device=-1)

    def test_parameter_subclass_keeps_type(self):
        p = torch.nn.Parameter(torch.ones(2))
        moved = p.cuda()
        assert moved.device == WHERE


class TestModuleMovement:
    def make(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
                                   torch.nn.Linear(3, 1))

    def test_to_cuda_cpu_mps(self):
        for move in (lambda m: m.to("cuda"), lambda m: m.to(device="cuda:0"),
                     lambda m: m.to(torch.device("cuda")), lambda m: m.cuda(),
                     lambda m: m.cuda(0), lambda m: m.cpu(), lambda m: m.mps(),
                     lambda m: m.to("cuda", torch.float64)):
            m = self.make()
            out = move(m)
            assert out is m
            assert all(p.device == WHERE for p in m.parameters())

    def test_dtype_and_tensor_forms(self):
        # No device: the parameters stay where they are, float32 on a
        # device without float64 (docs/policy.md).
        m = self.make().to(torch.float64)
        assert m[0].weight.dtype == FLOAT64
        m = self.make().to(torch.ones(1, dtype=torch.float16))
        assert m[0].weight.dtype == torch.float16

    def test_to_empty(self):
        m = self.make().to_empty(device="cuda")
        assert m[0].weight.device == WHERE

    def test_layers_built_on_cuda(self):
        layer = torch.nn.Linear(3, 2, device="cuda")
        assert layer.weight.device == WHERE
        conv = torch.nn.Conv2d(1, 1, 3, device=torch.device("cuda", 0))
        assert conv.weight.device == WHERE

    def test_training_matches_native(self):
        def train(device):
            torch.manual_seed(1)
            m = torch.nn.Linear(4, 1).to(device)
            opt = torch.optim.SGD(m.parameters(), lr=0.1)
            x = torch.randn(16, 4, device=device)
            y = torch.randn(16, 1, device=device)
            for _ in range(5):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(m(x), y)
                loss.backward()
                opt.step()
            return m.weight.detach().clone()

        redirected = train("cuda")
        TorchDevice.disable()
        try:
            native = train("cpu")
        finally:
            TorchDevice.enable()
        assert torch.equal(host(redirected), native)


def test_wrappers_look_like_the_originals():
    for owner, name, orig, repl in _patches.replaced():
        if not isinstance(repl, _tdcore.Wrapper) or orig is None:
            continue
        assert repl.__wrapped__ is orig
        for attr in ("__name__", "__qualname__", "__doc__"):
            assert getattr(repl, attr, None) == getattr(orig, attr, None), \
                (name, attr)
        if hasattr(orig, "__module__"):
            # Where torch's module does not hold the replacement (torch.fft
            # functions live in torch._C._fft), __module__ names where it
            # is, so that pickle finds it (tests/test_pickle.py).
            installed = owner.__name__ if not isinstance(owner, type) \
                else owner.__module__
            assert repl.__module__ in (orig.__module__, installed), name
    assert torch.zeros.__name__ == "zeros"
    assert torch.Tensor.to.__name__ == "to"
    assert torch.nn.Module.to.__qualname__ == "Module.to"


def test_wrapper_binds_as_method():
    bound = torch.ones(1).to
    assert bound.__self__.shape == (1,)
    assert bound("cuda").device == WHERE
    m = torch.nn.Linear(1, 1)
    assert m.to.__self__ is m
    assert torch.Tensor.to(torch.ones(1), "cuda").device == WHERE


@pytest.mark.skipif(TorchDevice.hardware_profile() != "cpu",
                    reason="with an accelerator torch pins itself")
@pytest.mark.parametrize("make", [
    lambda: torch.empty(3, pin_memory=True).fill_(2),
    lambda: torch.zeros(3, device="cuda", pin_memory=True) + 2,
    lambda: torch.full((3,), 2.0, pin_memory=True),
    lambda: torch.tensor([2.0, 2.0, 2.0], pin_memory=True),
    lambda: torch.ones(1).new_full((3,), 2.0, pin_memory=True),
    lambda: torch.empty_like(torch.ones(3), pin_memory=True).fill_(2),
], ids=["empty", "zeros-cuda", "full", "tensor", "new_full", "empty_like"])
def test_pin_memory_true_without_an_accelerator_is_unpinned(make):
    """A CUDA program's pinned staging buffer: as Tensor.pin_memory() here,
    nothing is pinned (docs/compile-checkpoints-distributed.md, DataLoader)."""
    made = make()
    assert made.tolist() == [2.0, 2.0, 2.0]
    assert not made.is_pinned()
    with pytest.raises(TypeError, match="pin_memory"):
        torch.zeros(2, pin_memory="yes")
