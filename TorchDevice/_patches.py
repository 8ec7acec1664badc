"""The patch table: the single list of everything TorchDevice replaces.

Each entry names an owner, an attribute and how its replacement is built
from the original.  `apply()` installs them all and `restore()` puts back
the identical original objects (or removes attributes torch never had).
Replacements are built once and reused, so enable/disable cycles allocate
nothing new.
"""
from __future__ import annotations

import functools
import os
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from . import _grammar, _log, _overrides, _tdcore, _torch_compat

_MISSING = object()
# The attribute that marks a storage's place (csrc/core/tdcore.h, moves.c).
STORAGE_MARK = "_torchdevice_on_accelerator"
# The attribute that marks the storage of a factory's float64 (complex128)
# request made float32 (complex64) (moves.c, td_mark_lowered).
LOWERED_MARK = "_torchdevice_lowered"

# Factories that take device= without being "device constructors" in
# torch's sense: with no device they follow their input, so only an
# explicit device is rewritten.
_EXPLICIT_ONLY = (
    "empty_like", "zeros_like", "ones_like", "full_like", "rand_like",
    "randn_like", "randint_like", "normal", "from_file",
)
# Those of them whose dtype, when none is named, is their tensor's.
_LIKE = frozenset(_EXPLICIT_ONLY) - {"from_file"}
_TENSOR_NEW = ("new_empty", "new_zeros", "new_ones", "new_full",
               "new_tensor", "new_empty_strided")
# Operations that take a dtype= for their result, by namespace of torch
# ("": torch itself, whose ones are Tensor methods too; torch.norm and
# Tensor.norm call torch.linalg's).  Replaced only where the device has no
# float64, where such a dtype=torch.float64 is a float64 request
# (docs/policy.md).
_RESULT_DTYPE = (("", ("sum", "nansum", "mean", "nanmean", "prod", "cumsum",
                       "cumprod", "softmax", "log_softmax")),
                 ("linalg", ("vector_norm", "matrix_norm", "norm")),
                 ("special", ("softmax", "log_softmax")))
# Where torch keeps public callables that may be device constructors.
_NAMESPACES = ("torch", "torch.fft", "torch.nested", "torch.sparse")


@dataclass(frozen=True)
class Patch:
    owner: Any
    name: str
    build: Callable[[Any], Any]   # original (or None) -> replacement
    static: bool = False          # wrap in staticmethod (a class __new__)

    @property
    def key(self) -> Tuple[int, str]:
        return (id(self.owner), self.name)


@dataclass
class _Applied:
    patch: Patch
    had_own: bool
    original: Any          # value in owner.__dict__ (or module attribute)
    replacement: Any


_built: Dict[Tuple[int, str], Any] = {}
_applied: List[_Applied] = []
# torch's device constructors -> their replacements, filled while applied
# where the device has no float64 (_context_marks).
_context_lowering: Dict[Any, Any] = {}
_enabled = False


# Must match TD_PASSTHROUGH in csrc/core/devarg.c.
PASSTHROUGH = "TorchDevice._passthrough"


def passthrough(func: Any) -> Any:
    """`func` made again in globals of its own, named PASSTHROUGH.

    The C functions that tell torch's own code from the program's read
    their caller's module; a Python function of TorchDevice between the
    caller and them would be that caller.  _tdcore looks past a frame in
    these globals to the code that called it."""
    return types.FunctionType(
        func.__code__, {"__name__": PASSTHROUGH, "__builtins__": __builtins__},
        func.__name__, func.__defaults__, func.__closure__)


def unwrapped(value: Any) -> Any:
    """torch's own callable where `value` is one of TorchDevice's factory
    wrappers (only ours: another library's functools.wraps stays)."""
    return value.__wrapped__ if isinstance(value, _tdcore.Wrapper) else value


def _wrapper(original: Any, kind: int, api: str,
             grammar: _grammar.DeviceArg, **kw: Any) -> Any:
    return _tdcore.Wrapper(original, kind, api, grammar, **kw)


def factory(api: str, grammar: _grammar.DeviceArg,
            dispatch: Optional[Callable[..., Any]] = None):
    """`dispatch`: where torch dispatches `__torch_function__` on the
    call's tensor argument, what offers overrides the call first
    (TorchDevice/_overrides.py)."""
    return lambda orig: _wrapper(orig, _tdcore.KIND_FACTORY, api, grammar,
                                 dispatch=dispatch)


def to_method(api: str):
    return lambda orig: _wrapper(orig, _tdcore.KIND_TO, api, _grammar.TO)


def move(api: str, request: str, fallback: Callable[[], Any]):
    return lambda orig: _wrapper(orig, _tdcore.KIND_MOVE, api,
                                 _grammar.METHODS[api], request=request,
                                 fallback=fallback())


def cpu_request(api: str) -> Any:
    """A callable that lands a host tensor just made where a "cpu" request
    lands: .cpu() of it, reported under `api` (a legacy host constructor,
    TorchDevice/_legacy.py)."""
    return _wrapper(_originals["tensor_cpu"], _tdcore.KIND_MOVE, api,
                    _grammar.MOVE, request="cpu",
                    fallback=_originals["tensor_to"])


def to_request(api: str) -> Any:
    """Tensor.to as its wrapper runs it, reported under `api`: a call of the
    program's that moves by Tensor.to's rules (Tensor.type, the legacy
    "cuda" constructors, TorchDevice/_legacy.py)."""
    return _wrapper(_originals["tensor_to"], _tdcore.KIND_TO, api,
                    _grammar.TO)


def simple(api: str, kind: int):
    return lambda orig: _wrapper(orig, kind, api, _grammar.NONE)


def _module_apply(original: Any) -> Any:
    """Module._apply, through which every module conversion runs: one that
    is not a move (half(), float(), to(dtype)) leaves the tensors on the
    accelerator where they were (docs/policy.md, "Moves copy")."""
    keep_place, keeps_place = _tdcore.keep_place, _tdcore.keeps_place

    @functools.wraps(original)
    def _apply(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if (not keeps_place()
                or getattr(fn, "_torchdevice_keeps_place", False)):
            return original(self, fn, *args, **kwargs)

        def convert(t: Any) -> Any:
            return keep_place(t, fn(t))
        convert._torchdevice_keeps_place = True   # type: ignore[attr-defined]
        return original(self, convert, *args, **kwargs)
    return _apply


def _lazy_materialize(original: Any) -> Any:
    """UninitializedTensorMixin.materialize: a lazy parameter or buffer
    moved to the accelerator makes its data with the device read from its
    old data, a new storage; it stays on the accelerator as on CUDA, so
    that its later moves copy where CUDA's do (docs/policy.md, "Moves
    copy")."""
    keep_place = _tdcore.keep_place

    @functools.wraps(original)
    def materialize(self: Any, shape: Any, device: Any = None,
                    dtype: Any = None) -> Any:
        old = self.data
        result = original(self, shape, device, dtype)
        if device is None:
            keep_place(old, self.data)
        return result
    return materialize


def _context_marks(original: Any) -> Any:
    """DeviceContext.__torch_function__ (`with torch.device("cuda"):`,
    torch.set_default_device("cuda")): torch fills the device of a factory
    called without one and calls its own function, past the wrappers.  With
    an accelerator request as the context's device the result is on the
    accelerator for the program, so that its later moves copy where CUDA's
    do (docs/policy.md, "Moves copy").  Every torch call under the context
    comes here: the others leave at the first test."""
    mark = _tdcore.mark_accelerator
    intent = _tdcore.device_intent
    compiling = torch.compiler.is_compiling
    constructors = _constructors()      # torch's own set, built once

    @functools.wraps(original)
    def __torch_function__(self: Any, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        if compiling() or func not in constructors:
            # dynamo traces the mode: torch's own handler, as without us
            # (compiled code forces no copies, docs/policy.md).
            return original(self, func, types, args, kwargs)
        # torch's handler writes the device into the kwargs it is given.
        filled = not kwargs or kwargs.get("device") is None
        replacement = (_context_lowering.get(func)
                       if filled and _context_lowering else None)
        if replacement is not None:
            # Where the device has no float64, the call goes through its
            # replacement with the context's device, as if the program had
            # named it: float64 there (dtype=, float64 data, torch's default
            # dtype) follows the setting (docs/policy.md, "float64 on MPS").
            # torch's handler makes the call, so that torch's warnings name
            # its line, as without us.
            return original(self, replacement, types, args,
                            {**(kwargs or {}), "device": self.device})
        result = original(self, func, types, args, kwargs)
        if filled and intent(self.device) == "accelerator":
            mark(result)
        return result
    return __torch_function__


def _default_device_as_asked(original: Any) -> Any:
    """torch.get_default_device under `set_default_device("cuda")` or `with
    torch.device("cuda"):` is `cuda:0` on CUDA, and programs build tensors
    and generators on it or test its `type`.  torch's code reads the device
    really used, so it answered `cpu`, a host request.  The context's device
    as the program asked for it, with the index filled as torch fills it:
    the current device (docs/policy.md, "What a device reads as")."""
    lookup = _grammar.default_device_lookup()
    asked_device = _tdcore.asked_device
    compiling = torch.compiler.is_compiling

    @functools.wraps(original)
    def get_default_device() -> torch.device:
        asked = None if compiling() else asked_device(lookup())
        if asked is None:
            return original()
        name, index = asked
        if index is None:
            index = torch.cuda.current_device() if name == "cuda" else 0
        return torch.device(name, index)
    return get_default_device


def _host_rng_state(original: Any) -> Any:
    """torch.set_rng_state: an RNG state is host data (a CPU ByteTensor).
    One a program loaded with map_location="cuda" and then took `.cpu()`
    is still on the accelerator in accelerate mode (docs/policy.md);
    torch's own Tensor.cpu brings it home, as `.cpu()` does on CUDA."""
    to_host = _originals["tensor_cpu"]

    @functools.wraps(original)
    def set_rng_state(new_state: Any) -> None:
        if isinstance(new_state, torch.Tensor) and not new_state.is_cpu:
            new_state = to_host(new_state)
        return original(new_state)
    return set_rng_state


def _host_lengths(original: Any) -> Any:
    """torch.nn.utils.rnn.pack_padded_sequence: torch's kernel takes the
    lengths on the host only.  In mode "accelerate" a device-less
    `torch.tensor(lengths)` or a DataLoader batch's lengths are on the
    accelerator while the program made them for the host, where CUDA
    keeps them: torch's own Tensor.cpu brings them home.  Lengths the
    program put on the accelerator itself (`device="cuda"`, `.cuda()`)
    stay there, and torch refuses them, as on CUDA."""
    to_host = _originals["tensor_cpu"]

    @functools.wraps(original)
    def pack_padded_sequence(input: Any, lengths: Any, *args: Any,
                             **kwargs: Any) -> Any:
        if (isinstance(lengths, torch.Tensor)
                and lengths.device.type not in ("cpu", "meta")
                and _tdcore.settings()["mode"] == "accelerate"
                and not _tdcore.on_accelerator(lengths)):
            lengths = to_host(lengths)
        return original(input, lengths, *args, **kwargs)
    return pack_padded_sequence


def _owner_value(owner: Any, name: str) -> Tuple[bool, Any]:
    """(defined on owner itself?, the value to restore)."""
    if isinstance(owner, type):
        if name in owner.__dict__:
            return True, owner.__dict__[name]
        return False, getattr(owner, name, None)
    return True, getattr(owner, name, _MISSING)


def _import(name: str) -> Any:
    import importlib
    return importlib.import_module(name)


# torch's device constructors, for a torch without the private list.
_KNOWN_CONSTRUCTORS = (
    "empty", "empty_permuted", "empty_strided", "empty_quantized", "ones",
    "arange", "bartlett_window", "blackman_window", "eye", "full",
    "hamming_window", "hann_window", "kaiser_window", "linspace", "logspace",
    "rand", "randn", "randint", "randperm", "range", "sparse_coo_tensor",
    "sparse_compressed_tensor", "sparse_csr_tensor", "sparse_csc_tensor",
    "sparse_bsr_tensor", "sparse_bsc_tensor", "tril_indices", "triu_indices",
    "zeros", "asarray", "tensor", "as_tensor", "scalar_tensor",
)


def _constructors() -> Any:
    listed = _torch_compat.get("device_constructors")
    if listed is not None:
        # Priming: the set is cached by identity of what is at torch.<name>
        # on first use; it must hold torch's originals, not our wrappers.
        return listed()
    found = set()
    for name in _KNOWN_CONSTRUCTORS:
        value = unwrapped(getattr(torch, name, None))
        if value is not None:
            found.add(value)
    return found


def _device_constructor_patches() -> List[Patch]:
    """Every callable torch treats as a device constructor (so that
    `with torch.device(...)` fills its device), found by identity in the
    public namespaces, plus the explicit-device-only factories."""
    constructors = _constructors()
    patches: List[Patch] = []
    seen = set()
    for ns_name in _NAMESPACES:
        ns = _import(ns_name)
        for attr in dir(ns):
            if attr.startswith("_"):
                continue
            value = unwrapped(getattr(ns, attr, None))
            try:
                is_ctor = value in constructors
            except TypeError:
                continue
            if is_ctor and (ns_name, attr) not in seen:
                seen.add((ns_name, attr))
                grammar = _grammar.DATA_CONSTRUCTORS.get(
                    attr, _grammar.CONSTRUCTOR)
                patches.append(Patch(ns, attr, factory(f"{ns_name}.{attr}",
                                                       grammar)))
    dispatch = _override_dispatch()
    for attr in _EXPLICIT_ONLY:
        if hasattr(torch, attr) and ("torch", attr) not in seen:
            grammar = (_grammar.FACTORY if attr not in _LIKE
                       else _grammar.LIKE if attr == "normal"
                       else _grammar.LIKE_FUNCTION)
            patches.append(Patch(torch, attr, factory(
                f"torch.{attr}", grammar,
                dispatch=(dispatch if grammar is _grammar.LIKE_FUNCTION
                          else None))))
    return patches


def _override_dispatch() -> Callable[..., Any]:
    """What offers a replaced torch function to `__torch_function__`
    overrides first (TorchDevice/_overrides.py)."""
    return _overrides.make_dispatch(
        _torch_compat.get("len_torch_function_stack"),
        _torch_compat.get("get_function_stack_at"),
        _torch_compat.get("DeviceContext"))


def _result_dtype_patches() -> List[Patch]:
    """Where the device in force has no float64: torch.sum(x,
    dtype=torch.float64), x.cumsum(0, dtype=torch.float64), ... give
    float32 there, as x.to(torch.float64) does, and x.cdouble() complex64.
    Elsewhere these hot operations stay torch's own."""
    if _tdcore.settings()["device_float64"]:
        return []
    dispatch = _override_dispatch()
    table = [Patch(torch.Tensor, "cdouble",
                   simple("Tensor.cdouble", _tdcore.KIND_CDOUBLE)),
             Patch(torch.Tensor, "set_", _set_onto_lowered)]
    for ns_name, names in _RESULT_DTYPE:
        ns = getattr(torch, ns_name, None) if ns_name else torch
        prefix = f"torch.{ns_name}." if ns_name else "torch."
        for name in names:
            if hasattr(ns, name):
                grammar = _grammar.RESULT_DTYPE_FUNCTIONS.get(
                    prefix + name, _grammar.RESULT_DTYPE)
                table.append(Patch(ns, name, factory(
                    prefix + name, grammar, dispatch=dispatch)))
            if ns is torch and hasattr(torch.Tensor, name):
                table.append(Patch(torch.Tensor, name, factory(
                    f"Tensor.{name}", _grammar.RESULT_DTYPE)))
    return table


def _set_onto_lowered(original: Any) -> Any:
    """Tensor.set_ where the device has no float64: `x.new_empty(0,
    device="cuda").set_(storage, offset, size, stride)` rebuilds a float64
    tensor over bytes moved to the device (tensordict's consolidated
    TensorDicts).  The empty tensor was made float32, so those float64 bytes
    would be read as float32: garbage, silently.  Refused instead, unless
    the storage is one made float32 too (docs/policy.md, "float64 on
    MPS")."""
    @functools.wraps(original)
    def set_(self: Any, *args: Any, **kwargs: Any) -> Any:
        source = args[0] if args else kwargs.get("source")
        if (isinstance(source, torch.UntypedStorage)
                and getattr(self.untyped_storage(), LOWERED_MARK, False)
                and not getattr(source, LOWERED_MARK, False)):
            raise TypeError(
                f"Tensor.set_: this tensor was asked for as "
                f"{_grammar.WIDE_OF.get(self.dtype, torch.float64)}, which "
                f"this device does not support, and TorchDevice made it "
                f"{self.dtype} (TORCHDEVICE_FLOAT64=downcast); set_ would "
                f"read the storage's bytes as {self.dtype}, not as the "
                f"values they hold. Keep such data on the host (device=\"cpu\"), or "
                f"convert it to {self.dtype} before its bytes reach the "
                f"device.")
        return original(self, *args, **kwargs)
    return set_


def _storage_on_accelerator(storage: Any) -> bool:
    """Whether the program has `storage` on the accelerator where moves
    copy (its mark, docs/policy.md "Moves copy")."""
    return (getattr(storage, STORAGE_MARK, None) is True
            and _tdcore.get_move_copies())


def _storage_move(original: Any) -> Any:
    """UntypedStorage.cuda / .mps (TypedStorage's call them): the copy they
    make for an accelerator is on the accelerator for the program, as a
    tensor's is (`map_location=lambda s, loc: s.cuda()` in torch.load), and
    a storage the program has there is itself."""
    mark = _tdcore.mark_accelerator

    @functools.wraps(original)
    def move(self: Any, *args: Any, **kwargs: Any) -> Any:
        # torch reads the storage as on the host and copies it; on CUDA a
        # storage already there is returned itself.
        if _storage_on_accelerator(self):
            return self
        result = original(self, *args, **kwargs)
        return result if result is self else mark(result)
    return move


def _storage_cpu(original: Any) -> Any:
    """UntypedStorage.cpu (TypedStorage's calls it): a storage the program
    has on the accelerator comes back as a copy, as CUDA's does, where
    torch would return the storage itself (both on the CPU)."""
    @functools.wraps(original)
    def cpu(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if result is self and _storage_on_accelerator(self):
            result = self.clone()
            setattr(result, STORAGE_MARK, False)
        return result
    return cpu


def _parse_to(original: Any) -> Any:
    """torch._C._nn._parse_to, which reads a `.to(...)` call's arguments for
    code that moves many tensors itself (tensordict, Module.to): torch
    builds a new torch.device from the one it is given, so one the program
    built for "cuda" came back as the device really used, read "cpu" and
    moved as a device read off a tensor (an alias where CUDA copies); and
    an ordinal raised "Cannot access accelerator device" where torch has no
    accelerator.  The device comes back as the program built it (an ordinal
    as torch.device(n) builds it), as on CUDA (docs/policy.md)."""
    device_type = torch.device
    intent = _tdcore.device_intent
    compiling = torch.compiler.is_compiling

    @functools.wraps(original)
    def _parse_to(*args: Any, **kwargs: Any) -> Any:
        by_keyword = "device" in kwargs
        given = kwargs["device"] if by_keyword else args[0] if args else None
        # A string, a dtype or a tensor: torch's answer is the program's.
        if not isinstance(given, (int, device_type)) or compiling():
            return original(*args, **kwargs)
        if isinstance(given, int) and not isinstance(given, bool):
            given = device_type(given)
            if by_keyword:
                kwargs = {**kwargs, "device": given}
            else:
                args = (given,) + args[1:]
        result = original(*args, **kwargs)
        if (isinstance(given, device_type) and result[0] is not given
                and intent(given) != "none"):
            result = (given,) + tuple(result[1:])
        return result
    return _parse_to


def _storage_patches() -> List[Patch]:
    intent = _tdcore.device_intent
    mark = _tdcore.mark_accelerator

    def marking(func: Any, api: str,
                storage_of: Callable[[Any, Any], Any]) -> Any:
        """The factory wrapper of a storage constructor `func`.  The
        wrapper marks the tensors it makes; a storage made for an
        accelerator request is on the accelerator too, so that its .cuda()
        is itself, as on CUDA (_storage_move)."""
        made = _wrapper(func, _tdcore.KIND_FACTORY, api, _grammar.FACTORY)

        def construct(*args: Any, **kwargs: Any) -> Any:
            result = made(*args, **kwargs)
            device = kwargs.get("device")   # keyword-only in both
            if device is not None and intent(device) == "accelerator":
                mark(storage_of(args, result))
            return result
        # torch's own calls (TypedStorage.__init__ building its
        # UntypedStorage) stay torch's for the policy (mode "accelerate").
        return functools.wraps(func)(passthrough(construct))

    def untyped_new(orig: Any) -> Any:
        func = orig.__func__ if isinstance(orig, staticmethod) else orig
        return marking(func, "torch.UntypedStorage",
                       lambda args, result: result)

    def typed_init(orig: Any) -> Any:
        return marking(orig, "torch.TypedStorage",
                       lambda args, result: args[0]._untyped_storage)
    # TypedStorage.__new__ never reads the device or the dtype: __init__
    # does, with the program's own arguments, and builds the UntypedStorage.
    # Wrapped there, the request is judged once, the float64 rule's dtype
    # is the one the storage gets, and the inner UntypedStorage call,
    # handed the device already resolved, is not a second request.
    patches = [Patch(torch.UntypedStorage, "__new__", untyped_new,
                     static=True),
               Patch(torch.TypedStorage, "__init__", typed_init)]
    patches += [Patch(torch.UntypedStorage, name, _storage_move)
                for name in ("cuda", "mps")]
    patches.append(Patch(torch.UntypedStorage, "cpu", _storage_cpu))
    return patches


def patch_table() -> List[Patch]:
    T = torch.Tensor
    M = torch.nn.Module
    tensor_to = lambda: _originals["tensor_to"]  # noqa: E731
    module_to = lambda: _originals["module_to"]  # noqa: E731
    table: List[Patch] = []
    table += _device_constructor_patches()
    table += _storage_patches()
    table += [
        Patch(T, "to", to_method("Tensor.to")),
        # x.type_as(other) is x.to(other) under another name.
        Patch(T, "type_as", to_method("Tensor.type_as")),
        Patch(T, "cuda", move("Tensor.cuda", "cuda", tensor_to)),
        Patch(T, "cpu", move("Tensor.cpu", "cpu", tensor_to)),
        Patch(T, "mps", move("Tensor.mps", "mps", tensor_to)),
        Patch(T, "numpy", simple("Tensor.numpy", _tdcore.KIND_NUMPY)),
        Patch(T, "pin_memory",
              simple("Tensor.pin_memory", _tdcore.KIND_PIN_MEMORY)),
        Patch(T, "is_pinned",
              simple("Tensor.is_pinned", _tdcore.KIND_IS_PINNED)),
        Patch(T, "double", simple("Tensor.double", _tdcore.KIND_DOUBLE)),
    ]
    table += [Patch(T, n, factory(f"Tensor.{n}", _grammar.LIKE))
              for n in _TENSOR_NEW]
    table += _result_dtype_patches()
    table += [
        Patch(M, "to", to_method("Module.to")),
        Patch(M, "cuda", move("Module.cuda", "cuda", module_to)),
        Patch(M, "cpu", move("Module.cpu", "cpu", module_to)),
        Patch(M, "mps", move("Module.mps", "mps", module_to)),
        Patch(M, "to_empty", factory("Module.to_empty", _grammar.FACTORY)),
        Patch(M, "_apply", _module_apply),
        Patch(torch.nn.parameter.UninitializedTensorMixin, "materialize",
              _lazy_materialize),
        Patch(torch, "set_rng_state", _host_rng_state),
        Patch(torch.random, "set_rng_state", _host_rng_state),
        Patch(torch.nn.utils.rnn, "pack_padded_sequence", _host_lengths),
        Patch(torch, "get_default_device", _default_device_as_asked),
    ]
    context = _torch_compat.get("DeviceContext")
    if context is not None:
        table.append(Patch(context, "__torch_function__", _context_marks))
    if _torch_compat.has("nn_bindings", "parse_to"):
        table.append(Patch(_torch_compat.get("nn_bindings"), "_parse_to",
                           _parse_to))
    if (_torch_compat.has("torch_utils", "rebuild_tensor")
            and not _tdcore.settings()["device_float64"]):
        table.append(Patch(_torch_compat.get("torch_utils"),
                           "_rebuild_tensor",
                           _import("TorchDevice._checkpoint")
                           .rebuild_tensor_builder))
    if _torch_compat.get("get_restore_location") is not None:
        table.append(Patch(torch.serialization, "_get_restore_location",
                           _import("TorchDevice._checkpoint")
                           .restore_location_builder))
    table += _import("TorchDevice._streams").patches()
    table += _import("TorchDevice._masquerade").patches()
    table += _import("TorchDevice._dataloader").patches()
    table += _import("TorchDevice._jit").patches()
    table += _import("TorchDevice._distributed").patches()
    table += _import("TorchDevice._syncbn").patches()
    table += _import("TorchDevice._recompute").patches()
    table += _import("TorchDevice._sdpa").patches()
    table += _import("TorchDevice._legacy").patches()
    table += _import("TorchDevice._optim").patches()
    table += _import("TorchDevice._graphs").patches()
    table += _import("TorchDevice._accelerator").patches()
    table += _import("TorchDevice._cuda_tools").patches()
    table += _import("TorchDevice._mps_tools").patches()
    table += _import("TorchDevice._multiprocessing").patches()
    return table


_originals: Dict[str, Any] = {}
_profile_detected: Optional[str] = None
_accelerator: Optional[torch.device] = None


def _generic_accelerator() -> Optional[torch.device]:
    """The device torch.accelerator names, when it is neither CUDA, MPS nor
    the CPU (Intel XPU, Gaudi HPU, Ascend NPU, a PrivateUse1 backend), with
    its current index; None on a torch without torch.accelerator."""
    accelerator = getattr(torch, "accelerator", None)
    current = getattr(accelerator, "current_accelerator", None)
    if current is None:
        return None
    try:
        found = current(check_available=True)
    except TypeError:           # torch 2.6: no check_available
        found = current() if accelerator.is_available() else None
    if found is None or found.type in ("cpu", "cuda", "mps", "meta"):
        return None
    index = found.index
    if index is None:
        index = accelerator.current_device_index()
    return torch.device(found.type, max(int(index), 0))


def detect_profile() -> str:
    """The hardware profile, asked of torch's original functions once:
    CUDA, else MPS, else the accelerator torch.accelerator names, else the
    CPU (docs/policy.md)."""
    global _profile_detected, _accelerator
    if _profile_detected is None:
        if torch.cuda.is_available():
            _profile_detected = "cuda"
        elif torch.backends.mps.is_available():
            _profile_detected = "mps"
        else:
            _accelerator = _generic_accelerator()
            _profile_detected = "cpu" if _accelerator is None \
                else "accelerator"
    return _profile_detected


def accelerator_device() -> Optional[torch.device]:
    """The generic accelerator's device (profile accelerator detected), or
    None."""
    detect_profile()
    return _accelerator


def accelerator_type() -> Optional[str]:
    """Its device type ("xpu", "simaccel", ...), or None."""
    dev = accelerator_device()
    return None if dev is None else dev.type


def device_type_of(profile: str) -> str:
    """The device type a profile's accelerator requests land on."""
    if profile == "accelerator":
        return accelerator_type() or "cpu"
    return profile


def landed_type() -> str:
    """The device type accelerator requests land on now (the profile in
    force)."""
    return device_type_of(_tdcore.settings()["profile"])


def homes(owner: Any, name: str) -> List[Any]:
    """`owner`, and the submodule of it that defines owner.<name> and holds
    the same object (torch.cuda.memory for torch.cuda.MemPool), where
    torch's own functions look the name up as a global: a replacement goes
    into each."""
    value = getattr(owner, name, None)
    defined_in = getattr(value, "__module__", None)
    sub = sys.modules.get(defined_in) if isinstance(defined_in, str) \
        else None
    if (sub is not None and sub is not owner
            and defined_in.startswith(owner.__name__ + ".")
            and getattr(sub, name, None) is value):
        return [owner, sub]
    return [owner]


def record_emulated(api: str, requested: str = "cuda") -> None:
    """A report row: `api`, asked of `requested`, answered by emulation on
    the device requests land on now."""
    _tdcore.record(api, "emulated", requested, landed_type())


def module_on_accelerator(module: Any,
                          input: Optional[torch.Tensor] = None) -> bool:
    """Whether the program put `module` on the accelerator: its first
    parameter (or, without any, its first buffer; without either, the
    input) is there for the program (TorchDevice's mark).  SyncBatchNorm,
    DDP's communication hooks and FSDP ask it before doing what torch does
    only for a module on a GPU."""
    for tensor in module.parameters():
        return bool(_tdcore.on_accelerator(tensor))
    for tensor in module.buffers():
        return bool(_tdcore.on_accelerator(tensor))
    return input is not None and bool(_tdcore.on_accelerator(input))


def available_profiles() -> Tuple[str, ...]:
    found = detect_profile()
    return {"cuda": ("cuda", "cpu"), "mps": ("mps", "cpu"),
            "accelerator": ("accelerator", "cpu"),
            "cpu": ("cpu",)}[found]


def _skip_prefixes() -> Tuple[str, ...]:
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    # typing_extensions' @deprecated wraps torch.cuda.amp.* callables: its
    # frame is not the user's.
    shims = tuple(os.path.abspath(m.__file__) for m in
                  (sys.modules.get("typing_extensions"),)
                  if m is not None and getattr(m, "__file__", None))
    return (here, torch_dir, "<frozen importlib") + shims


def _lazy_allowed_methods() -> List[Any]:
    allowed = _torch_compat.get("lazy_allowed_methods")
    return allowed if allowed is not None else []


def _default_device_probes() -> Tuple[Any, Any, Any]:
    """What the core needs to see torch's default-device context: the mode
    stack's length and items, and the DeviceContext type (None each when
    this torch lacks them)."""
    if not _torch_compat.has("len_torch_function_stack",
                             "get_function_stack_at", "DeviceContext"):
        return None, None, None
    return (_torch_compat.get("len_torch_function_stack"),
            _torch_compat.get("get_function_stack_at"),
            _torch_compat.get("DeviceContext"))


def _capture_originals() -> None:
    """torch's own methods, read before anything is replaced."""
    if not _originals:
        _originals.update(
            module_to=torch.nn.Module.__dict__["to"],
            tensor_to=torch.Tensor.to,
            tensor_cpu=torch.Tensor.cpu,
        )


def made_dtype(fn: Callable[..., Any], *args: Any,
               **kwargs: Any) -> Optional[torch.dtype]:
    """The dtype `fn(*args, **kwargs)` makes, a constructor naming no dtype:
    the call made on the meta device, which allocates and draws nothing
    (the core asks only where torch's default dtype is float64 and the
    device has none, docs/policy.md).  None where the meta device cannot
    tell: the real call then says what is wrong."""
    kwargs["device"] = META
    try:
        made = fn(*args, **kwargs)
    except Exception:
        return None
    return made.dtype if isinstance(made, torch.Tensor) else None


# Where a call is made only to learn what it makes (nothing allocated).
META = torch.device("meta")


def core_objects(mps_device: Optional[torch.device] = None
                 ) -> Dict[str, Any]:
    """The torch objects _tdcore.install() takes (docs/architecture.md).
    `mps_device` replaces the MPS target only in tests that simulate the
    mps profile."""
    _capture_originals()
    mode_stack_len, mode_stack_at, device_context = _default_device_probes()
    return dict(
        device_type=torch.device,
        dtype_type=torch.dtype,
        targets={
            "cpu": torch.device("cpu"),
            "cuda": torch.device("cuda"),
            "mps": (mps_device if mps_device is not None
                    else torch.device("mps", 0)),
            # a new torch.device object: the core hands it out by identity
            "accel": (None if accelerator_device() is None
                      else torch.device(str(accelerator_device()))),
        },
        layout_probes=(torch.device("cpu"), torch.device("cuda"),
                       torch.device("mps", 0)),
        float64=torch.float64,
        float32=torch.float32,
        complex128=torch.complex128,
        complex64=torch.complex64,
        tensor_to=_originals["tensor_to"],
        tensor_cpu=_originals["tensor_cpu"],
        module_to=_originals["module_to"],
        mode_stack_len=mode_stack_len,
        mode_stack_at=mode_stack_at,
        device_context=device_context,
        generator_type=torch.Generator,
        skip_prefixes=_skip_prefixes(),
        report_sink=_log.sink,
        default_dtype=torch.get_default_dtype,
        made_dtype=made_dtype,
    )


def _install_core(mps_device: Optional[torch.device] = None) -> None:
    _tdcore.install(**core_objects(mps_device))


def apply(mps_device: Optional[torch.device] = None) -> None:
    """Installs the hooks and every patch.  Idempotent."""
    global _enabled
    if _enabled:
        return
    detect_profile()
    _install_core(mps_device)
    try:
        fresh = [patch for patch in patch_table() if _install(patch)]
        # Once per replacement: they are built once and reused.
        for patch in fresh:
            _name_for_pickle(patch.owner, patch.name)
        if not _tdcore.settings()["device_float64"]:
            _context_lowering.update(_replaced_constructors())
        allowed = _lazy_allowed_methods()
        for entry in _applied:
            if (entry.patch.owner is torch.Tensor
                    and entry.original in allowed
                    and entry.replacement not in allowed):
                allowed.append(entry.replacement)
    except BaseException:
        restore()
        raise
    _enabled = True
    _lifecycle_hooks("on_apply")


def _install(patch: Patch) -> bool:
    """Puts `patch`'s replacement in place (built at its first use) and
    keeps what restore() needs; whether it was built now."""
    had_own, original = _owner_value(patch.owner, patch.name)
    if original is _MISSING:
        return False
    replacement = _built.get(patch.key)
    built = replacement is None
    if built:
        source = original
        if isinstance(source, staticmethod):
            source = source.__func__
        replacement = patch.build(source)
        if patch.static:
            replacement = staticmethod(replacement)
        _built[patch.key] = replacement
    setattr(patch.owner, patch.name, replacement)
    _applied.append(_Applied(patch, had_own, original, replacement))
    return built


def apply_late(patch: Patch) -> None:
    """One more patch while TorchDevice is applied, which a call of the
    program's turned on (a CUDA default tensor type, TorchDevice/_legacy.py):
    the rest of the run need not pay for it before.  restore() puts torch's
    own back with the others; a later apply() installs it if the table
    says so."""
    if not _enabled or any(e.patch.key == patch.key for e in _applied):
        return
    if _install(patch):
        _name_for_pickle(patch.owner, patch.name)


def _replaced_constructors() -> Dict[Any, Any]:
    """torch's device constructors (originals) -> their applied
    replacements."""
    constructors = _constructors()
    found = {}
    for entry in _applied:
        if isinstance(entry.replacement, _tdcore.Wrapper):
            try:
                if entry.original in constructors:
                    found[entry.original] = entry.replacement
            except TypeError:
                continue       # unhashable: not one of torch's functions
    return found


def _pickle_path(owner: Any, name: str) -> Tuple[str, str]:
    """(module, qualified name) under which pickle finds owner.<name>."""
    if isinstance(owner, types.ModuleType):
        return owner.__name__, name
    return owner.__module__, f"{owner.__qualname__}.{name}"


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module, _MISSING)
    for part in qualname.split("."):
        obj = getattr(obj, part, _MISSING)
    return obj


def _name_for_pickle(owner: Any, name: str) -> None:
    """Makes pickle reduce the replacement at owner.<name> to that path, as
    it does torch's own callables: it loads back as the identical object
    (and, where TorchDevice is not enabled, as torch's own).  A replacement
    that already pickles to itself (worker_loop, by design) keeps its
    name."""
    value = getattr(owner, name, _MISSING)
    if value is _MISSING or not callable(value) or isinstance(value, type):
        return
    try:
        module, qualname = value.__module__, value.__qualname__
    except AttributeError:
        module = qualname = ""
    if module and qualname and _lookup(module, qualname) is value:
        return
    module, qualname = _pickle_path(owner, name)
    if _lookup(module, qualname) is not value:
        return
    if isinstance(value, _tdcore.Wrapper):
        # Their __qualname__ stays torch's (introspection); C's __reduce__
        # reads this name instead.  __module__ changes only where torch's
        # does not hold it (torch._C._fft for torch.fft.*).
        value._td_pickle_name = qualname
        if _lookup(getattr(value, "__module__", ""), qualname) is not value:
            value.__module__ = module
        return
    try:
        value.__module__ = module
        value.__qualname__ = qualname
    except (AttributeError, TypeError):
        pass        # a builtin: named by masq_function() already


def _lifecycle_hooks(event: str) -> None:
    """What is not an attribute patch: the torch.compile polyfills (_compile),
    the checkpoint deserializer (_checkpoint), the DataLoader's pinning
    warning filter (_dataloader), the AMP tables (_amp) and the reducer of
    tensors sent to other processes (_multiprocessing), the note on
    device mismatches (_mismatch), DTensor's placements for the CPU's
    attention (_dtensor) and its random operators (_dtensor_rng),
    FSDP's steps that take the host for a device it offloads to (_fsdp),
    and tensordict's CudaGraphModule device check (_tensordict)."""
    from . import (_amp, _checkpoint, _compile, _dataloader, _dtensor,
                   _dtensor_rng, _fsdp, _mismatch, _multiprocessing,
                   _tensordict)
    for module in (_checkpoint, _compile, _dataloader, _amp,
                   _multiprocessing, _mismatch, _dtensor, _dtensor_rng,
                   _fsdp, _tensordict):
        getattr(module, event)()


def restore() -> None:
    """Puts every original back, in reverse order, and unhooks the core."""
    global _enabled
    allowed = _lazy_allowed_methods()
    while _applied:
        entry = _applied.pop()
        if entry.replacement in allowed:
            allowed.remove(entry.replacement)
        owner, name = entry.patch.owner, entry.patch.name
        if entry.had_own:
            setattr(owner, name, entry.original)
        else:
            try:
                delattr(owner, name)
            except AttributeError:
                pass
    _context_lowering.clear()
    _lifecycle_hooks("on_restore")
    _tdcore.uninstall()
    _enabled = False


def is_applied() -> bool:
    return _enabled


def replaced() -> List[Tuple[Any, str, Any, Any]]:
    """(owner, name, original, replacement) of every applied patch."""
    return [(e.patch.owner, e.patch.name, e.original, e.replacement)
            for e in _applied]


def resolve_device(device: Any = None, index: Optional[int] = None
                   ) -> torch.device:
    """What a request resolves to under the policy in force."""
    if device is None and index is None:
        if _enabled:
            return torch.empty(0).device
        return torch.get_default_device()
    if isinstance(device, str) and type(device) is not str:
        device = str(device)          # a TorchDevice: already resolved
    if index is None:
        return torch.device(device)
    return torch.device(device, index)
