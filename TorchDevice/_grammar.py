"""The device-argument grammar: where each replaced callable takes its
device and dtype, and what a missing device means (docs/policy.md).

Recorded once, here, and read by all three paths a call can take:

* eager: the patch table hands each entry to ``_tdcore.Wrapper``, whose C
  code finds the arguments from it (csrc/core/wrapper.c);
* ``torch.compile``: the polyfills (_compile.py) find them from the same
  entry, then ask ``_tdcore.trace_plan`` where the request goes;
* TorchScript (_jit.py): the graph's nodes name their arguments, so the
  same keywords find them there, and the same ``trace_plan`` answers.

Which values count as a device request is decided in C alone
(``_tdcore.is_device_arg``, ``trace_plan``); ``is_device_value`` below is
its twin for traced Python code, which cannot call C, and a test keeps the
two equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

import torch

from . import _torch_compat

# What a call without a device means.
KEEP = "keep"          # torch decides (the input's device, the default)
POLICY = "policy"      # the policy decides, unless torch's default-device
                       # context is active (docs/policy.md)
REQUEST = "request"    # the method's own request (.cuda() means "cuda")

# The dtype each one a device without float64 lowers becomes, and back
# (complex128 is a pair of float64; docs/policy.md, "float64 on MPS"); C's
# twin is td_narrow_dtype.
WIDE_OF = {torch.float32: torch.float64, torch.complex64: torch.complex128}
WIDE_DTYPES = tuple(WIDE_OF.values())


@dataclass(frozen=True)
class DeviceArg:
    """Where one callable takes its device and dtype.  Positions count
    `self` for methods; -1: not passed by position."""
    keyword: str = "device"
    position: int = -1
    missing: str = KEEP
    dtype_keyword: str = "dtype"
    dtype_position: int = -1   # only when the device came by position
    # The data whose dtype the call keeps when it names none (the tensor
    # moved, the array a constructor copies): float64 data landing on a
    # device without float64 is a float64 request (docs/policy.md).
    data_position: int = -1
    data_keyword: str = ""     # the same data passed by keyword

    @property
    def none_policy(self) -> bool:
        return self.missing == POLICY


# torch's "device constructors": a missing device follows the policy.
CONSTRUCTOR = DeviceArg(missing=POLICY)
# The constructors that copy data: their dtype, when none is named, is the
# data's.  Each names its data differently (as_tensor(data=x), asarray(obj=x)).
DATA_CONSTRUCTORS: Dict[str, DeviceArg] = {
    name: DeviceArg(missing=POLICY, data_position=0, data_keyword=keyword)
    for name, keyword in (("tensor", "data"), ("as_tensor", "data"),
                          ("asarray", "obj"))
}
# Other factories (from_file, storages, Module.to_empty): a missing device
# is torch's business.
FACTORY = DeviceArg()
# The factories that take their dtype from a tensor (*_like, normal,
# Tensor.new_*: its first positional, the tensor itself for a method).
LIKE = DeviceArg(data_position=0)
# torch.*_like, whose tensor may come by keyword (zeros_like(input=x)).
LIKE_FUNCTION = DeviceArg(data_position=0, data_keyword="input")
# Operations whose dtype= names their result's dtype (sum, cumsum, softmax,
# ...): no device; the result is where the input tensor is, so float64
# there is a float64 request on that device (docs/policy.md).
RESULT_DTYPE = DeviceArg(keyword="", data_position=0, data_keyword="input")
# ...whose data goes by input=, except linalg.vector_norm's, by its
# documented x= (torch takes both there).
RESULT_DTYPE_FUNCTIONS: Dict[str, DeviceArg] = {
    "torch.linalg.vector_norm": DeviceArg(keyword="", data_position=0,
                                          data_keyword="x"),
}
# Tensor.to / Module.to: .to(device, dtype, ...), .to(dtype), .to(other),
# .to(device=..., dtype=...).
TO = DeviceArg(position=1, dtype_position=2, data_position=0)
# .cuda(device=None, non_blocking=False, ...): device by position too.
MOVE_WITH_DEVICE = DeviceArg(position=1, missing=REQUEST, dtype_keyword="",
                             data_position=0)
# .cpu(), .mps(): no device argument.
MOVE = DeviceArg(missing=REQUEST, dtype_keyword="", data_position=0)
# Tensor.numpy / pin_memory / is_pinned: no device argument at all.
NONE = DeviceArg(keyword="", missing=KEEP, dtype_keyword="")

# The grammar of each replaced method met by name (torch.compile sees
# x.to(...) as a method call, without the replacement object).
METHODS: Dict[str, DeviceArg] = {
    "Tensor.to": TO,
    "Tensor.cuda": MOVE_WITH_DEVICE,
    "Tensor.cpu": MOVE,
    "Tensor.mps": MOVE,
    "Module.to": TO,
    "Module.cuda": MOVE_WITH_DEVICE,
    "Module.cpu": MOVE,
    "Module.mps": MOVE,
}


def is_device_value(value: Any) -> bool:
    """Whether `value` is read as a device request (the twin of C's
    td_is_device_arg, for traced code): a torch.device, str or bytes, or
    an exact int (an accelerator ordinal)."""
    return (isinstance(value, (torch.device, str, bytes))
            or type(value) is int)


def default_device_lookup() -> Callable[[], Optional[Any]]:
    """A function giving the device of torch's innermost default-device
    context in the calling thread, or None where there is none.  Made of
    the same torch functions as C's td_default_device_active, which dynamo
    models inside a compiled region (so the function is built outside it,
    where the names can be looked up)."""
    length = _torch_compat.get("len_torch_function_stack")
    at = _torch_compat.get("get_function_stack_at")
    context = _torch_compat.get("DeviceContext")
    if length is None or at is None or context is None:
        return _nothing

    def device() -> Optional[Any]:
        for i in range(length() - 1, -1, -1):
            mode = at(i)
            if isinstance(mode, context):
                return mode.device
        return None
    return device


def _nothing() -> None:
    return None
