"""The legacy tensor types, where "cuda" is not CUDA or "cpu" not the host.

Code written before torch 0.4 (and much that copied it since) picks a
tensor type instead of a device::

    Tensor = torch.cuda.FloatTensor if cuda else torch.FloatTensor
    valid = Tensor(imgs.size(0), 1).fill_(1.0)
    real = imgs.type(Tensor)
    idx = torch.cuda.LongTensor([1, 2])
    torch.set_default_tensor_type("torch.cuda.FloatTensor")

Without CUDA torch's ``torch.cuda.FloatTensor`` and its siblings refuse to
construct ("type torch.cuda.FloatTensor not available"), and ``.type()``
and ``set_default_tensor_type`` with one of them try to start CUDA.  On
every profile but cuda TorchDevice puts stand-ins at those names: calling
one makes the host tensor its host twin (``torch.FloatTensor``) makes and
moves it as ``.cuda()`` does; ``isinstance(x, torch.cuda.FloatTensor)``
holds for a tensor of that dtype the program sees on the accelerator.
``Tensor.type(t)`` with a CUDA type (the stand-in, torch's own, or its
name) becomes ``.to("cuda", dtype)``, with a host type ``.to("cpu",
dtype)`` (so both copy as on CUDA where "cuda" is the host), and
``set_default_tensor_type`` of one sets the dtype and
``set_default_device("cuda")``, and makes ``torch.Tensor(...)`` a "cuda"
request, as that type's constructor is on CUDA.

Their host twins (``torch.FloatTensor(...)``, ``torch.Tensor(...)``) are
"cpu" requests: where mode "accelerate" sends those to the accelerator,
what they make goes there too (as ``.cpu()`` of it would), unless it
shares memory with what it was made from (a storage, a tensor); elsewhere
they are torch's own (docs/policy.md, "Legacy tensor types").
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional

import torch

from . import _grammar, _patches, _tdcore

# Name -> dtype of the legacy CUDA types torch.cuda exports.
TYPES: Dict[str, torch.dtype] = {
    "DoubleTensor": torch.float64, "FloatTensor": torch.float32,
    "HalfTensor": torch.float16, "BFloat16Tensor": torch.bfloat16,
    "LongTensor": torch.int64, "IntTensor": torch.int32,
    "ShortTensor": torch.int16, "CharTensor": torch.int8,
    "ByteTensor": torch.uint8, "BoolTensor": torch.bool,
}
_PREFIX = "torch.cuda."


def _on_accelerator(obj: Any) -> bool:
    """Whether the program sees `obj` on the accelerator ("cuda")."""
    device = _patches.landed_type()
    if obj.device.type != device:
        return False
    if device == "cpu" and _tdcore.get_move_copies():
        return _tdcore.on_accelerator(obj)
    return True


class _LegacyType(type):
    """The class of the stand-ins: calling one constructs, isinstance()
    asks for the dtype and the place."""

    dtype: torch.dtype
    _host: str
    _mover: Any

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        host = torch_host_type(cls._host)(*args, **kwargs)
        return cls._mover(host, "cuda")

    def __instancecheck__(cls, obj: Any) -> bool:
        return (isinstance(obj, torch.Tensor) and obj.dtype == cls.dtype
                and obj.layout == torch.strided and _on_accelerator(obj))

    def __repr__(cls) -> str:
        return f"<class '{_PREFIX}{cls.__name__}'>"


def torch_host_type(name: str) -> Any:
    """torch's own torch.<name> (FloatTensor, ...), also where a stand-in
    holds that name."""
    found = getattr(torch, name)
    return getattr(found, "_torch_type", found)


def _stand_in(name: str) -> type:
    """The stand-in class for torch.cuda.<name> (the patch table builds it
    once and installs the same object at every enable())."""
    return _LegacyType(name, (), {
        "dtype": TYPES[name], "_host": name, "is_cuda": True,
        "_mover": _patches.to_request(f"torch.cuda.{name}"),
        "is_sparse": False, "layout": torch.strided,
        "__module__": "torch.cuda", "__qualname__": name,
        "__doc__": f"torch.cuda.{name} on the device \"cuda\" lands on "
                   f"(TorchDevice)."})


def _type_name(t: Any, module: str) -> Optional[str]:
    """"FloatTensor" for <module>.FloatTensor given as a type or its name;
    None for anything else."""
    prefix = module + "."
    if isinstance(t, str):
        name = t[len(prefix):] if t.startswith(prefix) else ""
    elif isinstance(t, type) and getattr(t, "__module__", "") == module:
        name = getattr(t, "__name__", "")
    else:
        return None
    return name if name in TYPES else None


def cuda_type_name(t: Any) -> Optional[str]:
    """"FloatTensor" for torch.cuda.FloatTensor given as the stand-in,
    torch's own type or its name; None for anything else."""
    return _type_name(t, "torch.cuda")


def host_type_name(t: Any) -> Optional[str]:
    """"FloatTensor" for torch.FloatTensor given as the type or its name;
    None for anything else."""
    return _type_name(t, "torch")


def _type_builder(original: Callable[..., Any]) -> Callable[..., Any]:
    # The report's rows and the float64 error name the program's call.
    to = _patches.to_request("Tensor.type")

    @functools.wraps(original)
    def type(self: Any, dtype: Any = None, non_blocking: bool = False,
             **kwargs: Any) -> Any:
        if dtype is not None and _patches.is_applied():
            # A legacy type names a device: the move is a move, and copies
            # as on CUDA (a "cuda" tensor's .type(torch.FloatTensor) is a
            # host copy there).
            name = cuda_type_name(dtype)
            if name is not None:
                return to(self, "cuda", TYPES[name], non_blocking=non_blocking)
            name = host_type_name(dtype)
            if name is not None and not kwargs:
                # A "cpu" request: a copy where "cuda" is the host too (as
                # on CUDA), the accelerator where mode "accelerate" sends
                # "cpu" there, elsewhere torch's own move to the host.
                return to(self, "cpu", TYPES[name], non_blocking=non_blocking)
            if dtype in _grammar.WIDE_DTYPES and not kwargs:
                # The conversion .to(dtype) is, and the same rule where
                # the tensor is on a device without float64
                # (docs/policy.md, "float64 on MPS").
                return to(self, dtype, non_blocking=non_blocking)
        if dtype is None and not kwargs and not non_blocking:
            return original(self)
        return original(self, dtype, non_blocking, **kwargs)
    return type


# The legacy CUDA type ("FloatTensor") the program made torch's default
# tensor type, else None.  On CUDA that type's constructor is then
# torch.Tensor(...): `torch.Tensor([1e10])` is a CUDA tensor (NeRF's
# renderer concatenates one with its samples).  torch's default device
# does not reach that constructor, so TorchDevice's does it.
_default_cuda_type: Optional[str] = None


def _default_type_builder(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def set_default_tensor_type(t: Any) -> None:
        global _default_cuda_type
        name = cuda_type_name(t)
        if name is None or not _patches.is_applied():
            host = host_type_name(t)
            if host is not None:
                # torch reads a name through the torch module, where a
                # stand-in may hold it.
                t = torch_host_type(host)
            original(t)
            _default_cuda_type = None
            return None
        # torch's own rule: floating types only, and the deprecation it
        # warns with comes from the host twin.
        original(torch_host_type(name))
        torch.set_default_device("cuda")
        _default_cuda_type = name
        # torch.Tensor(...) is a "cuda" request from now on: its
        # replacement goes in now if the mode did not already need it.
        _patches.apply_late(_tensor_new_patch())
        return None
    return set_default_tensor_type


def _landed(made: Any, args: Any, kwargs: Any, mover: Any) -> Any:
    """A legacy host constructor's result, where a "cpu" request lands
    (`mover`), unless it is not on the host or is a view of its argument
    (a storage, a tensor): that stays where its memory is."""
    first = args[0] if args else None
    if made.device.type != "cpu" or "cdata" in kwargs or isinstance(
            first, (torch.Tensor, torch.UntypedStorage, torch.TypedStorage)):
        return made
    return mover(made)


class _HostType(type):
    """The class of the host stand-ins: calling one constructs as torch's
    type does, then lands the result where a "cpu" request lands;
    isinstance() asks for the dtype and a place the program sees as the
    host (the host, or the accelerator "cpu" requests land on)."""

    dtype: torch.dtype
    _torch_type: Any
    _mover: Any

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _landed(cls._torch_type(*args, **kwargs), args, kwargs,
                       cls._mover)

    def __instancecheck__(cls, obj: Any) -> bool:
        return (isinstance(obj, torch.Tensor) and obj.dtype == cls.dtype
                and obj.layout == torch.strided
                and obj.device.type in ("cpu", _patches.landed_type()))

    def __repr__(cls) -> str:
        return f"<class 'torch.{cls.__name__}'>"


def _host_stand_in(name: str, original: Any) -> type:
    return _HostType(name, (), {
        "dtype": TYPES[name], "_torch_type": original,
        "_mover": _patches.cpu_request(f"torch.{name}"), "is_cuda": False,
        "is_sparse": False, "layout": torch.strided,
        "__module__": "torch", "__qualname__": name,
        "__doc__": f"torch.{name} where a \"cpu\" request lands "
                   f"(TorchDevice)."})


# Whether the host types' rule holds for torch.Tensor(...) too: mode
# "accelerate" sending "cpu" requests to an accelerator.  Set by patches()
# at every enable(), as the mode may have changed since the replacement
# of Tensor.__new__ was built (it is built once).
_host_leaves = False


def _tensor_new(original: Callable[..., Any]) -> Callable[..., Any]:
    """torch.Tensor(...), the legacy constructor of the default type: a
    "cuda" request while a CUDA type is the default (as its constructor
    is on CUDA), else, where `_host_leaves`, the same rule as the host
    types.  Subclasses construct as in torch.  The
    signature stays (*args, **kwargs), which torch.compile's stand-in for
    Tensor.__new__ accepts as any other."""
    host_mover = _patches.cpu_request("torch.Tensor")
    to = _patches.to_request("torch.Tensor")
    tensor = torch.Tensor

    def cuda_mover(made: Any) -> Any:
        return to(made, "cuda")

    def __new__(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        if args[0] is not tensor:
            return made
        if _default_cuda_type is not None:
            return _landed(made, args[1:], kwargs, cuda_mover)
        if _host_leaves:
            return _landed(made, args[1:], kwargs, host_mover)
        return made
    return __new__


def _tensor_new_patch() -> Any:
    return _patches.Patch(torch.Tensor, "__new__", _tensor_new, static=True)


def host_requests_leave_the_host() -> bool:
    """Whether mode "accelerate" sends "cpu" requests to an accelerator now
    (so the host legacy types are stand-ins)."""
    settings = _tdcore.settings()
    return (settings["mode"] == "accelerate"
            and _patches.landed_type() != "cpu")


def patches() -> List[Any]:
    from ._patches import Patch
    global _host_leaves
    table: List[Any] = []
    cuda_types = _tdcore.settings()["profile"] != "cuda"
    host_types = host_requests_leave_the_host()
    _host_leaves = host_types
    if cuda_types:
        table += [Patch(torch.cuda, name, lambda orig, n=name: _stand_in(n))
                  for name in TYPES if hasattr(torch.cuda, name)]
    if host_types:
        table += [Patch(torch, name,
                        lambda orig, n=name: _host_stand_in(n, orig))
                  for name in TYPES if hasattr(torch, name)]
    if host_types or (cuda_types and _default_cuda_type is not None):
        # Only while torch.Tensor(...) has a rule to follow: a Python
        # __new__ costs every legacy construction about a microsecond.
        table.append(_tensor_new_patch())
    if cuda_types or host_types:
        table += [
            Patch(torch.Tensor, "type", _type_builder),
            Patch(torch, "set_default_tensor_type", _default_type_builder),
        ]
    return table
