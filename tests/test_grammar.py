"""One device-argument grammar, three paths (docs/policy.md).

Each case below is a small function of a CPU tensor.  It runs eagerly
(the C wrappers), under ``torch.compile(fullgraph=True)`` (the polyfills)
and as ``torch.jit.script`` (the graph rewrite), and all three must put
every result on the same device with the same dtype.  The profiles: this
machine's, and SimulatedMPS (the mps profile with torch's ``meta`` device
standing in for the Apple GPU, tests/conftest.py) in both modes, where
"cuda", "cpu", a missing device, float64 (and complex128) asked for and
such data moved all change.

Also here: the C and Python readings of "is this a device value" agree
(bytes included), and torch's default-device context decides for a
factory called without a device while an unrelated TorchFunctionMode does
not.
"""
from __future__ import annotations

import types
from typing import Callable, Dict, List, Tuple

import pytest
import torch
from torch.overrides import TorchFunctionMode

import TorchDevice
from TorchDevice import _grammar, _patches, _tdcore


def zeros_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2, device="cuda")


def zeros_cuda0(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2, device="cuda:0")


def zeros_missing(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2)


def empty_missing(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(2)


def zeros_cpu(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2, device="cpu")


def ones_device_object(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(2, device=torch.device("cuda"))


def zeros_float64(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2, dtype=torch.float64, device="cuda")


def full_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.full([2], 1.0, device="cuda")


def arange_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(3, device="cuda")


def randn_mps(x: torch.Tensor) -> torch.Tensor:
    return torch.randn(2, device="mps")


def to_positional(x: torch.Tensor) -> torch.Tensor:
    return x.to("cuda")


def to_positional_dtype(x: torch.Tensor) -> torch.Tensor:
    return x.to("cuda", torch.float64)


def to_keyword(x: torch.Tensor) -> torch.Tensor:
    return x.to(device="cuda")


def to_dtype_only(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def cuda_method(x: torch.Tensor) -> torch.Tensor:
    return x.cuda()


# float64 data moved without a dtype: float64 is what the call keeps.
def to_float64_data(x: torch.Tensor) -> torch.Tensor:
    return x.double().to("cuda")


def to_keyword_float64_data(x: torch.Tensor) -> torch.Tensor:
    return x.double().to(device="cuda", non_blocking=False)


def cuda_method_float64_data(x: torch.Tensor) -> torch.Tensor:
    return x.double().cuda()


def zeros_like_float64_data(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x.double(), device="cuda")


def zeros_like_keyword_float64_data(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(input=x.double(), device="cuda")


def as_tensor_keyword_float64_data(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(data=x.double(), device="cuda")


def new_zeros_float64_data(x: torch.Tensor) -> torch.Tensor:
    return x.double().new_zeros(2, device="cuda")


# complex128, a pair of float64, follows float64.
def zeros_complex128(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2, dtype=torch.complex128, device="cuda")


def cuda_method_complex128_data(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128).cuda()


def to_complex128_data(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128).to("cuda")


def zeros_like_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x, device="cuda")


def zeros_like_missing(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def new_zeros_cuda(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(2, device="cuda")


# Constructors whose result's dtype, when none is named, depends on their
# arguments: floating ones make torch's default dtype (float64 in
# test_three_paths_agree_with_float64_as_default).
def arange_float_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(0.0, 1.5, 0.5, device="cuda")


def tensor_floats_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor([1.5, 2.0], device="cuda")


def tensor_ints_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor([1, 2], device="cuda")


def full_int_cuda(x: torch.Tensor) -> torch.Tensor:
    return torch.full([2], 1, device="cuda")


DEFAULT_DTYPE_CASES: List[Callable[[torch.Tensor], torch.Tensor]] = [
    zeros_cuda, zeros_missing, empty_missing, zeros_cpu, full_cuda,
    arange_cuda, arange_float_cuda, tensor_floats_cuda, tensor_ints_cuda,
    full_int_cuda, zeros_float64,
]


CASES: List[Callable[[torch.Tensor], torch.Tensor]] = [
    zeros_cuda, zeros_cuda0, zeros_missing, empty_missing, zeros_cpu,
    ones_device_object, zeros_float64, full_cuda, arange_cuda, randn_mps,
    to_positional, to_positional_dtype, to_keyword, to_dtype_only,
    cuda_method, to_float64_data, to_keyword_float64_data,
    cuda_method_float64_data, zeros_like_float64_data,
    zeros_like_keyword_float64_data, as_tensor_keyword_float64_data,
    new_zeros_float64_data, zeros_like_cuda, zeros_like_missing,
    new_zeros_cuda, zeros_complex128, cuda_method_complex128_data,
    to_complex128_data,
]


def _fresh(fn: Callable) -> Callable:
    """A new function object with fn's code: torch.jit.script caches by
    function, and every profile must script anew."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__)


def _where(t: torch.Tensor) -> Tuple[str, torch.dtype]:
    return t.device.type, t.dtype


# "mps" is kept on the mps profile, where SimulatedMPS has no real device.
SIMULATED_CASES = [fn for fn in CASES if fn is not randn_mps]


def _three_paths(cases=CASES
                 ) -> Dict[str, Dict[str, Tuple[str, torch.dtype]]]:
    import torch._dynamo
    torch._dynamo.reset()
    with TorchDevice.cpu_override():
        x = torch.ones(2)               # a host tensor on every profile
    assert x.device.type == "cpu"
    out: Dict[str, Dict[str, Tuple[str, torch.dtype]]] = {}
    for fn in cases:
        eager = _where(fn(x))
        compiled = _where(torch.compile(_fresh(fn), backend="eager",
                                        fullgraph=True)(x))
        scripted = _where(torch.jit.script(_fresh(fn))(x))
        out[fn.__name__] = {"eager": eager, "compile": compiled,
                            "jit": scripted}
    return out


def _assert_agree(results) -> None:
    wrong = {name: r for name, r in results.items()
             if not r["eager"] == r["compile"] == r["jit"]}
    assert not wrong, wrong


@pytest.fixture
def mps_stand_in():
    """SimulatedMPS, set up for either mode by the test."""
    saved = TorchDevice.config()
    TorchDevice.disable()
    _tdcore.configure("cpu", "accelerate", "downcast")
    _patches.apply(mps_device=torch.device("meta"))
    yield
    TorchDevice.disable()
    TorchDevice.enable()
    TorchDevice.configure(target=saved.target, mode=saved.mode,
                          float64=saved.float64)


@pytest.mark.slow
def test_three_paths_agree_on_this_machine():
    _assert_agree(_three_paths())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["accelerate", "cpu-stays-cpu"])
def test_three_paths_agree_on_simulated_mps(mps_stand_in, mode):
    _tdcore.configure("mps", mode, "downcast")
    results = _three_paths(SIMULATED_CASES)
    _assert_agree(results)
    # and the eager answers are the policy's (docs/policy.md)
    meta, meta32 = ("meta", torch.float32), ("meta", torch.float32)
    assert results["zeros_cuda"]["eager"] == meta
    assert results["zeros_float64"]["eager"] == meta32
    assert results["to_positional_dtype"]["eager"] == meta32
    assert results["cuda_method"]["eager"] == meta
    for name in ("to_float64_data", "to_keyword_float64_data",
                 "cuda_method_float64_data", "zeros_like_float64_data",
                 "zeros_like_keyword_float64_data",
                 "as_tensor_keyword_float64_data", "new_zeros_float64_data"):
        assert results[name]["eager"] == meta32, name
    for name in ("zeros_complex128", "cuda_method_complex128_data",
                 "to_complex128_data"):
        assert results[name]["eager"] == ("meta", torch.complex64), name
    assert results["zeros_like_missing"]["eager"] == ("cpu", torch.float32)
    assert results["to_dtype_only"]["eager"] == ("cpu", torch.float64)
    stays = ("cpu", torch.float32) if mode == "cpu-stays-cpu" else meta
    assert results["zeros_missing"]["eager"] == stays
    assert results["zeros_cpu"]["eager"] == stays


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["accelerate", "cpu-stays-cpu"])
def test_three_paths_agree_with_float64_as_default(mps_stand_in, mode):
    """torch.set_default_dtype(torch.float64): a constructor naming no
    dtype whose result is floating makes float64, which MPS lacks
    (docs/policy.md, "float64 on MPS")."""
    _tdcore.configure("mps", mode, "downcast")
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        results = _three_paths(DEFAULT_DTYPE_CASES)
    finally:
        torch.set_default_dtype(saved)
    _assert_agree(results)
    meta32, meta64 = ("meta", torch.float32), ("meta", torch.int64)
    for name in ("zeros_cuda", "full_cuda", "arange_float_cuda",
                 "tensor_floats_cuda", "zeros_float64"):
        assert results[name]["eager"] == meta32, name
    for name in ("arange_cuda", "tensor_ints_cuda", "full_int_cuda"):
        assert results[name]["eager"] == meta64, name
    # on the host float64 stays
    stays = ("cpu", torch.float64) if mode == "cpu-stays-cpu" else meta32
    assert results["zeros_missing"]["eager"] == stays
    assert results["zeros_cpu"]["eager"] == stays


VALUES = [None, "cuda", "cpu", b"cuda:1", bytearray(b"cuda"), 0, 3, -1,
          True, 1.0, torch.device("cuda"), torch.float32, torch.ones(1),
          "not a device", ("cuda",), type("S", (str,), {})("cuda")]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_c_and_python_read_the_same_values_as_devices(value):
    assert _tdcore.is_device_arg(value) == _grammar.is_device_value(value)


def test_the_table_covers_every_wrapper():
    for owner, name, _o, repl in _patches.replaced():
        if isinstance(repl, staticmethod):
            repl = repl.__func__
        if isinstance(repl, _tdcore.Wrapper):
            assert isinstance(repl.td_grammar, _grammar.DeviceArg), name


class Recording(TorchFunctionMode):
    """An unrelated mode (a profiler, a counter): it only records."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: List[object] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "zeros":
            self.devices.append(kwargs.get("device", "missing"))
        return func(*args, **kwargs)


def test_an_unrelated_mode_does_not_switch_the_policy_off(mps_stand_in):
    _tdcore.configure("mps", "accelerate", "downcast")
    with Recording() as mode:
        assert torch.zeros(1).device.type == "meta"
        assert torch.zeros(1, device="cpu").device.type == "meta"
    assert mode.devices == [torch.device("meta"), torch.device("meta")]
    assert not _tdcore.default_device_active()


def test_the_default_device_context_decides(mps_stand_in):
    _tdcore.configure("mps", "accelerate", "downcast")
    with torch.device("meta"):
        assert _tdcore.default_device_active()
        with Recording() as mode:
            torch.zeros(1)
    # torch's context filled the device, not the policy
    assert mode.devices == ["missing"]
    torch.set_default_device("meta")
    try:
        assert _tdcore.default_device_active()
        assert _grammar.default_device_lookup()() == torch.device("meta")
    finally:
        torch.set_default_device(None)
    assert not _tdcore.default_device_active()
