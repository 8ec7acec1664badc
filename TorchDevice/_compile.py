"""torch.compile support: teaches dynamo what TorchDevice's replacements do.

Dynamo cannot look inside the C wrappers at ``torch.zeros``, ``Tensor.to``
and friends: to it they are opaque objects, and calling one inside a
``fullgraph=True`` region fails.  This module gives each replacement a Python
polyfill that does what the wrapper does (ask the policy where the request
goes, then call torch's original with the answer), so dynamo inlines it and
the graph holds torch's own ops on the redirected device.

The policy question itself, ``_tdcore.trace_plan``, is constant-folded:
dynamo calls it once at trace time and bakes the device into the graph.

Nothing here imports ``torch._dynamo``.  When TorchDevice is enabled before
dynamo is imported, an import hook registers the polyfills the moment
``torch/_dynamo/__init__.py`` has finished; when dynamo is already there,
they are registered at once.  Either way the result is the same.
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import torch

from . import _grammar, _imports, _patches, _tdcore, _torch_compat

_log = logging.getLogger("TorchDevice")

_DYNAMO = "torch._dynamo"
# dynamo's internals the polyfills are registered through.
_DYNAMO_NAMES = tuple(p.key for p in _torch_compat.PRIVATE
                      if p.feature == _torch_compat.COMPILE)

# Queries whose answer is a constant for the life of the process: inside a
# compiled region they are answered once, at trace time, as the user's code
# would see them (not as torch's own code, which the masquerade tells the
# truth).  Only replacements installed by TorchDevice are affected.
QUERIES = frozenset({
    "torch.cuda.is_available", "torch.cuda.device_count",
    "torch.cuda.current_device", "torch.cuda.is_initialized",
    "torch.cuda.get_device_name", "torch.cuda.get_device_capability",
    "torch.cuda.get_device_properties", "torch.cuda.is_bf16_supported",
    "torch.cuda.get_arch_list", "torch.cuda.get_allocator_backend",
    "torch.backends.cuda.is_built",
    "torch.backends.mps.is_available", "torch.backends.mps.is_built",
    "torch.mps.is_available", "torch.mps.device_count",
    "torch.accelerator.is_available", "torch.accelerator.device_count",
    "torch.accelerator.current_accelerator",
    "torch.accelerator.current_device_index",
})

_lock = threading.RLock()
_registered: Set[int] = set()      # ids of objects dynamo now knows
_keep: List[Any] = []              # keeps those objects (and their ids) alive


# ---- polyfills ---------------------------------------------------------------
#
# Each builder takes a replacement and returns the Python function dynamo
# inlines in its place.  They only use what dynamo traces: argument
# shuffling, isinstance on constants, and calls of torch's originals.

def _plan(request: Any, dtype: Any = None, none_policy: bool = False,
          api: Optional[str] = None, here: bool = False) -> Any:
    return _tdcore.trace_plan(request, dtype, none_policy, api, here)


def _float64_changed(request: Any, none_policy: bool) -> bool:
    """Whether float64 asked of this request would not stay float64
    (lowered to float32, or refused).  Called at trace time, as a constant
    (register())."""
    try:
        return _plan(request, torch.float64, none_policy)[1] \
            is not torch.float64
    except TypeError:
        return True


# The polyfills read the grammar entry when they are built and keep plain
# values: dynamo traces them, and cannot wrap the entry itself.

def _argument(keyword: str, pos: int, args: Sequence[Any],
              kwargs: Dict[str, Any]) -> Any:
    """The device a call passes, by keyword or position (None: none)."""
    if keyword and keyword in kwargs:
        return kwargs[keyword]
    if 0 <= pos < len(args):
        return args[pos]
    return None


def _factory_polyfill(w: Any) -> Callable[..., Any]:
    original = w.__wrapped__
    g: _grammar.DeviceArg = w.td_grammar
    keyword, pos, none_policy = g.keyword, g.position, g.none_policy
    dtype_keyword = g.dtype_keyword
    data_pos, data_keyword = g.data_position, g.data_keyword
    api = str(w.td_api)
    context_device = _grammar.default_device_lookup()

    def data_of(args: Sequence[Any], kwargs: Dict[str, Any]) -> Any:
        if 0 <= data_pos < len(args):
            return args[data_pos]
        return kwargs.get(data_keyword) if data_keyword else None

    def polyfill(*args: Any, **kwargs: Any) -> Any:
        request = _argument(keyword, pos, args, kwargs)
        if request is None and not none_policy:
            # Made where the input tensor is, with the dtype by keyword or
            # by position after it (C's call_like_where_it_is).
            data = data_of(args, kwargs)
            if not isinstance(data, torch.Tensor):
                return original(*args, **kwargs)
            if dtype_keyword and kwargs.get(dtype_keyword) is not None:
                if kwargs[dtype_keyword] in _grammar.WIDE_DTYPES:
                    kwargs[dtype_keyword] = _plan(
                        data.device, kwargs[dtype_keyword], False, api,
                        True)[1]
                return original(*args, **kwargs)
            for i in range(data_pos + 1, len(args)):
                if isinstance(args[i], torch.dtype):
                    if args[i] in _grammar.WIDE_DTYPES:
                        lowered = _plan(data.device, args[i], False, api,
                                        True)[1]
                        args = args[:i] + (lowered,) + args[i + 1:]
                    break
            return original(*args, **kwargs)
        if request is None:
            device = context_device()
            if device is not None:
                # torch's default-device context fills the device, as in
                # eager code.  Named here: dynamo does not apply the
                # context's handler to a call made inside a polyfill, and
                # would trace the tensor on the host.
                return original(*args, **{**kwargs, keyword: device})
        dtype = kwargs.get(dtype_keyword) if dtype_keyword else None
        if dtype is None and not any(isinstance(a, torch.dtype)
                                     for a in args[data_pos + 1:]):
            # Unnamed, the dtype is the data's, else what the call makes
            # (C's float64_data_check and default_float64_check).
            data = data_of(args, kwargs)
            if isinstance(data, torch.Tensor):
                dtype = data.dtype
            elif (none_policy and "out" not in kwargs
                    and torch.get_default_dtype() is torch.float64
                    and _float64_changed(request, none_policy)):
                # float64 is torch's default dtype: learnt on the meta device
                dtype = original(*args, **{**kwargs,
                                           keyword: _patches.META}).dtype
        target, new_dtype = _plan(request, dtype, none_policy, api)
        if target is not None:
            if keyword not in kwargs and 0 <= pos < len(args):
                args = args[:pos] + (target,) + args[pos + 1:]
            else:
                kwargs[keyword] = target
        if dtype_keyword and (dtype_keyword in kwargs
                              or new_dtype is not dtype):
            kwargs[dtype_keyword] = new_dtype
        return original(*args, **kwargs)

    return polyfill


def _to_polyfill(w: Any) -> Callable[..., Any]:
    """Module.to (Tensor.to is a method of the tensor: see _TensorHandlers)."""
    original = w.__wrapped__
    g: _grammar.DeviceArg = w.td_grammar
    keyword = g.keyword
    api = str(w.td_api)
    pos = g.position - 1          # the polyfill gets self apart

    def polyfill(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get(keyword) is not None:
            target, _ = _plan(kwargs[keyword], None, False, api)
            if target is not None:
                kwargs[keyword] = target
        elif (0 <= pos < len(args) and args[pos] is not None
              and _grammar.is_device_value(args[pos])):
            target, _ = _plan(args[pos], None, False, api)
            if target is not None:
                args = args[:pos] + (target,) + args[pos + 1:]
        return original(self, *args, **kwargs)

    return polyfill


def _move_polyfill(w: Any) -> Callable[..., Any]:
    """Module.cuda/cpu/mps: the module's `to` with the planned device."""
    original = w.__wrapped__
    fallback = w.td_fallback
    g: _grammar.DeviceArg = w.td_grammar
    keyword = g.keyword
    pos = g.position - 1          # the polyfill gets self apart
    api = str(w.td_api)
    kind = api.rsplit(".", 1)[-1]

    def polyfill(self: Any, *args: Any, **kwargs: Any) -> Any:
        device = _argument(keyword, pos, args, kwargs)
        kwargs.pop(keyword, None)
        if 0 <= pos < len(args):
            args = args[:pos] + args[pos + 1:]
        if device is None:
            request: Any = kind
        elif type(device) is int:
            request = kind + ":" + str(device)
        else:
            request = device
        target, _ = _plan(request, None, False, api)
        if target is None and original is not None:
            return original(self, *args, **kwargs)
        return fallback(self, target if target is not None else request)

    return polyfill


def _method_polyfill(w: Any) -> Callable[..., Any]:
    """A Tensor method met as a value (``torch.Tensor.to(x, "cuda")``):
    becomes the method call, which _TensorHandlers rewrites."""
    name = str(w.td_api).rsplit(".", 1)[-1]

    def polyfill(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, name)(*args, **kwargs)

    return polyfill


_BUILDERS: Dict[int, Callable[[Any], Callable[..., Any]]] = {
    _tdcore.KIND_FACTORY: _factory_polyfill,
    _tdcore.KIND_TO: _to_polyfill,
    _tdcore.KIND_MOVE: _move_polyfill,
}


def _polyfill_for(owner: Any, w: Any) -> Optional[Callable[..., Any]]:
    if isinstance(owner, type) and issubclass(owner, torch.Tensor):
        return _method_polyfill(w)
    build = _BUILDERS.get(w.td_kind)
    return build(w) if build is not None else None


# ---- tensor methods ---------------------------------------------------------------
#
# ``x.to("cuda")`` on a traced tensor never looks at torch.Tensor.to: dynamo
# records a call_method node that AOTAutograd later replays on its own
# tensor subclasses (whose .cuda() asks torch.cuda.current_device()).  So the
# device is rewritten where dynamo handles the call, through the
# ``method_<name>`` handlers of its TensorVariable: a handler that returns a
# variable replaces the generic path, one that returns None keeps it.

def _rewrite_to(args: Sequence[Any], kwargs: Dict[str, Any],
                data_dtype: Any = None) -> Any:
    """New (args, kwargs) for Tensor.to, or None when nothing changes.
    `args` lacks the tensor itself, which the grammar's positions count;
    `data_dtype` is the tensor's dtype, which a call naming none keeps
    (float64 where the device has none: the grammar's data_position)."""
    g = _grammar.METHODS["Tensor.to"]
    dev_kw, dt_kw = g.keyword, g.dtype_keyword

    def plan(request: Any, dtype: Any) -> Any:
        """(target, dtype to pass): a call naming no dtype keeps the
        data's, and passes one only where the policy changes it."""
        if dtype is not None:
            return _plan(request, dtype, False, "Tensor.to")
        target, new_dtype = _plan(request, data_dtype, False, "Tensor.to")
        return target, None if new_dtype is data_dtype else new_dtype

    if kwargs.get(dev_kw) is not None:
        dtype = kwargs.get(dt_kw)
        target, new_dtype = plan(kwargs[dev_kw], dtype)
        if target is None and new_dtype is dtype:
            return None
        kwargs = dict(kwargs)
        if target is not None:
            kwargs[dev_kw] = target
        if dt_kw in kwargs or new_dtype is not None:
            kwargs[dt_kw] = new_dtype
        return tuple(args), kwargs
    pos, dpos = g.position - 1, g.dtype_position - 1
    if 0 <= pos < len(args) and _grammar.is_device_value(args[pos]):
        has_dtype = (0 <= dpos < len(args)
                     and isinstance(args[dpos], torch.dtype))
        dtype = args[dpos] if has_dtype else kwargs.get(dt_kw)
        target, new_dtype = plan(args[pos], dtype)
        if target is None and new_dtype is dtype:
            return None
        args = list(args)
        if target is not None:
            args[pos] = target
        if has_dtype or (0 <= dpos < len(args) and args[dpos] is None):
            args[dpos] = new_dtype
        elif dt_kw in kwargs or new_dtype is not None:
            kwargs = dict(kwargs)
            kwargs[dt_kw] = new_dtype
        return tuple(args), kwargs
    return None


def _rewrite_move(kind: str, args: Sequence[Any],
                  kwargs: Dict[str, Any], data_dtype: Any = None) -> Any:
    """x.cuda()/.cpu()/.mps() as (args, kwargs) of x.to, or None to keep;
    `data_dtype` as for _rewrite_to."""
    g = _grammar.METHODS[f"Tensor.{kind}"]
    kwargs = dict(kwargs)
    device = kwargs.pop(g.keyword, None)
    pos = g.position - 1                 # args lacks the tensor itself
    if pos >= 0 and len(args) > pos:
        device = args[pos]
        if len(args) > pos + 1:
            kwargs["non_blocking"] = args[pos + 1]
    elif args:
        return None                      # torch reports the bad call
    if device is None:
        request: Any = kind
    elif type(device) is int:
        request = f"{kind}:{device}"
    else:
        request = device
    target, new_dtype = _plan(request, data_dtype, False, f"Tensor.{kind}")
    if new_dtype is not data_dtype:
        kwargs["dtype"] = new_dtype
    elif target is None:
        return None
    return (target,), kwargs


def _translator(args: Sequence[Any]) -> Any:
    """(tx, args) from a TensorVariable handler's arguments.  torch 2.11
    and later pass the instruction translator first; earlier releases pass
    only the method's arguments, and their own handlers read the translator
    from dynamo's thread-local, as this does (tx None: not found)."""
    base = _torch_compat.get("dynamo_InstructionTranslatorBase")
    if args and base is not None and isinstance(args[0], base):
        return args[0], args[1:]
    root = _torch_compat.get("dynamo_InstructionTranslator")
    current = getattr(root, "current_tx", None)
    return (current() if current is not None else None), args


def _variable_builder() -> Optional[Callable[[Any, Any], Any]]:
    """What makes a dynamo variable of a constant: VariableTracker.build
    (torch 2.6 and later), or SourcelessBuilder.create (None: neither)."""
    VariableTracker = _torch_compat.get("dynamo_VariableTracker")
    build = getattr(VariableTracker, "build", None)
    if build is not None:
        return build
    builder = _torch_compat.get("dynamo_SourcelessBuilder")
    return getattr(builder, "create", None)


def _tensor_handler(name: str) -> Callable[..., Any]:
    def handler(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _patches.is_applied():
            return None
        tx, args = _translator(args)
        if tx is None:
            return None
        values = list(args) + list(kwargs.values())
        if not all(v.is_python_constant() for v in values):
            return None                  # x.to(other_tensor): nothing to plan
        py_args = [v.as_python_constant() for v in args]
        py_kwargs = {k: v.as_python_constant() for k, v in kwargs.items()}
        data_dtype = getattr(self, "dtype", None)
        if name == "to":
            new = _rewrite_to(py_args, py_kwargs, data_dtype)
        else:
            new = _rewrite_move(name, py_args, py_kwargs, data_dtype)
        if new is None:
            return None
        build = _variable_builder()
        if build is None:
            return None
        new_args, new_kwargs = new
        # The planned device plans to itself, so this call takes the
        # generic path.
        return self.call_method(
            tx, "to", [build(tx, a) for a in new_args],
            {k: build(tx, v) for k, v in new_kwargs.items()})
    handler.__name__ = f"method_{name}"
    return handler


_TENSOR_METHODS = ("to", "cuda", "cpu", "mps")


def _install_tensor_handlers() -> None:
    TensorVariable = _torch_compat.get("dynamo_TensorVariable")
    if TensorVariable is None:
        return
    for name in _TENSOR_METHODS:
        attr = f"method_{name}"
        current = getattr(TensorVariable, attr, None)
        if current is None:
            setattr(TensorVariable, attr, _tensor_handler(name))
        elif not getattr(current, "__module__", "").startswith(__name__):
            _log.warning("TorchDevice: torch %s handles Tensor.%s in "
                         "torch.compile itself; leaving it", torch.__version__,
                         name)


_as_user_made: Dict[int, Callable[..., Any]] = {}


def _as_user(fn: Any) -> Callable[..., Any]:
    """A Python function that calls fn from this module, so a replacement
    that answers torch's own callers differently (the masquerade) gives the
    answer the user's code gets.  One per replacement: enable() runs many
    times, and each new one would be registered with dynamo for good."""
    made = _as_user_made.get(id(fn))
    if made is not None:
        return made

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)
    call.__name__ = getattr(fn, "__name__", "query")
    call.__qualname__ = f"as_user.{call.__name__}"
    _as_user_made[id(fn)] = call
    _keep.append(fn)     # the id stays valid while the entry does
    return call


# ---- registration with dynamo -------------------------------------------------

def _substitute(obj: Any, traceable: Callable[..., Any],
                fold: bool = False) -> None:
    """Makes dynamo inline `traceable` wherever it meets `obj` (or, with
    `fold`, call `obj` at trace time when every argument is a constant).

    `torch.compiler.substitute_in_graph` does this for functions dynamo does
    not know yet.  It refuses objects that are not functions (our Wrapper
    instances) and ones dynamo already has a rule for (a replacement
    installed before dynamo was imported, which dynamo filed under the
    original's name); those get the same registration directly, through
    the handler table PolyfilledFunctionVariable reads."""
    if id(obj) in _registered:
        return
    try:
        torch.compiler.substitute_in_graph(
            obj, can_constant_fold_through=fold,
            skip_signature_check=True)(traceable)
    except (TypeError, ValueError):
        trace_rules = _torch_compat.get("dynamo_trace_rules")
        PolyfilledFunctionVariable = _torch_compat.get(
            "dynamo_PolyfilledFunctionVariable")
        if trace_rules is None or PolyfilledFunctionVariable is None:
            return

        @functools.wraps(traceable)
        def handler(*args: Any, **kwargs: Any) -> Any:
            return obj(*args, **kwargs)

        handler.__torch_dynamo_original__ = obj  # type: ignore[attr-defined]
        handler.__torch_dynamo_polyfill__ = traceable  # type: ignore[attr-defined]
        handler.__torch_dynamo_can_constant_fold_through__ = fold  # type: ignore[attr-defined]
        handlers = PolyfilledFunctionVariable._get_polyfill_handlers()
        handlers[obj] = handler
        if not _route_to_polyfill(obj, trace_rules,
                                  PolyfilledFunctionVariable):
            del handlers[obj]
            return
        _keep.append(handler)
    _registered.add(id(obj))
    _keep.append(obj)


def _route_to_polyfill(obj: Any, trace_rules: Any,
                       PolyfilledFunctionVariable: Any) -> bool:
    """Makes dynamo wrap `obj` in a PolyfilledFunctionVariable: the set of
    polyfilled ids it consults from torch 2.6, or in torch 2.5 the id table
    of its VariableBuilder (as substitute_in_graph did there).  False where
    neither is found."""
    ids = getattr(trace_rules, "_polyfilled_function_ids", None)
    if ids is not None:
        ids.add(id(obj))
        return True
    VariableBuilder = _torch_compat.get("dynamo_VariableBuilder")
    GuardBuilder = _torch_compat.get("dynamo_GuardBuilder")
    if VariableBuilder is None or GuardBuilder is None:
        return False

    def dispatch(builder: Any, value: Any) -> Any:
        return PolyfilledFunctionVariable(
            value, source=builder.source,
            **builder.install_guards(GuardBuilder.FUNCTION_MATCH))

    VariableBuilder._id_dispatch()[id(obj)] = dispatch
    trace_rules.get_torch_obj_rule_map()[obj] = PolyfilledFunctionVariable
    _keep.append(dispatch)
    return True


def _share_rules(original: Any, replacement: Any) -> None:
    """Dynamo files torch's callables by identity, under whatever object was
    at the public name when it built its table.  Whichever of the pair it
    saw, the other gets the same rule: the polyfills call the originals,
    and code that captured either (``from torch import zeros``) traces."""
    trace_rules = _torch_compat.get("dynamo_trace_rules")
    if trace_rules is None:
        return
    rules = trace_rules.get_torch_obj_rule_map()
    try:
        known_o = original in rules
        known_r = replacement in rules
    except TypeError:          # unhashable
        return
    if known_o and not known_r:
        rules[replacement] = rules[original]
    elif known_r and not known_o:
        rules[original] = rules[replacement]


def _cache_key(fn: Any) -> Any:
    """Dynamo files a functools.cache-wrapped function under the function
    inside (torch.get_device_module)."""
    inner = getattr(fn, "__wrapped__", None)
    if inner is not None and hasattr(fn, "cache_info"):
        return inner
    return fn


def _share_handlers(entries: Sequence[Any]) -> None:
    """TorchInGraphFunctionVariable's table of special handlers is built
    on first use by reading ``torch.<name>`` (``torch.full``,
    ``torch.get_device_module.__wrapped__``, ...).  It is built here with
    torch's originals in place, then every replacement gets its original's
    handler, so that both import orders end with the same table."""
    variable = _torch_compat.get("dynamo_TorchInGraphFunctionVariable")
    if variable is None:
        return
    build = variable._get_handlers
    swapped = []
    if build.cache_info().currsize == 0:
        for owner, name, original, replacement in entries:
            if (not isinstance(owner, type) and original is not None
                    and owner.__dict__.get(name) is replacement):
                setattr(owner, name, original)
                swapped.append((owner, name, replacement))
    try:
        handlers = build()
    finally:
        for owner, name, replacement in swapped:
            setattr(owner, name, replacement)
    for _owner, _name, original, replacement in entries:
        key = _cache_key(_unwrap(original))
        try:
            if key in handlers and replacement not in handlers:
                handlers[replacement] = handlers[key]
        except TypeError:
            continue


def _qualname(owner: Any, name: str) -> str:
    base = getattr(owner, "__name__", "")
    if isinstance(owner, type):
        base = f"{owner.__module__}.{owner.__qualname__}"
    return f"{base}.{name}"


def _unwrap(value: Any) -> Any:
    return value.__func__ if isinstance(value, staticmethod) else value


def register(entries: Optional[Sequence[Any]] = None) -> None:
    """Registers a polyfill for every applied replacement (or for the
    given (owner, name, original, replacement) entries).  Needs
    torch._dynamo imported; idempotent."""
    with _lock:
        if not _torch_compat.has(*_DYNAMO_NAMES):
            return
        if entries is None:
            entries = _patches.replaced()
        amp = [e for e in entries if _is_amp(e[3])]
        entries = [e for e in entries if not _is_amp(e[3])]
        _substitute(_tdcore.trace_plan, _trace_plan_traced, fold=True)
        _substitute(_float64_changed, _constant_only(_float64_changed),
                    fold=True)
        _install_tensor_handlers()
        _share_handlers(entries)
        _inline_amp(amp)
        for owner, name, original, replacement in entries:
            original, replacement = _unwrap(original), _unwrap(replacement)
            if not callable(replacement) or replacement is original:
                continue
            if original is not None and callable(original):
                _share_rules(original, replacement)
            if isinstance(replacement, _tdcore.Wrapper):
                polyfill = _polyfill_for(owner, replacement)
                if polyfill is not None:
                    _substitute(replacement, polyfill)
            elif _qualname(owner, name) in QUERIES:
                as_user = _as_user(replacement)
                _substitute(as_user, _constant_only(as_user), fold=True)
                _substitute(replacement, _forward_to(as_user))


def _is_amp(replacement: Any) -> bool:
    from . import _amp
    return any(replacement is r for r in _amp.replacements())


def _inline_amp(entries: Sequence[Any]) -> None:
    """The AMP replacements (TorchDevice/_amp.py) are Python functions that
    dynamo inlines like user code; the torch functions they call keep the
    rules dynamo has for them (is_autocast_enabled and get_autocast_dtype
    are folded to constants at trace time).  Dynamo builds those tables by
    reading ``torch.<name>``: when TorchDevice was enabled first, the
    entries name the replacements, so they are moved back to the
    originals."""
    trace_rules = _torch_compat.get("dynamo_trace_rules")
    variable = _torch_compat.get("dynamo_TorchInGraphFunctionVariable")
    if trace_rules is None or variable is None:
        return
    try:
        rules = trace_rules.get_torch_obj_rule_map()
        folds = sys.modules[variable.__module__].constant_fold_functions
        handlers = variable._get_handlers()
    except AttributeError as exc:
        _log.warning("TorchDevice: torch %s changed torch._dynamo (%s); "
                     "autocast inside torch.compile may graph-break",
                     torch.__version__, exc)
        return
    for _owner, _name, original, replacement in entries:
        original, replacement = _unwrap(original), _unwrap(replacement)
        if id(replacement) in _registered:
            continue
        for table in (rules, handlers):
            value = table.pop(replacement, None)
            if value is not None and original not in table:
                table[original] = value
        if replacement in folds:
            del folds[replacement]
            folds[original] = None
        _registered.add(id(replacement))
        _keep.append(replacement)


def _trace_plan_traced(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError(
        "TorchDevice: a device request inside torch.compile must be a "
        "constant (a str, int or torch.device known at trace time)")


def _constant_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    def traced(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"TorchDevice: {fn.__name__}() inside torch.compile needs "
            f"constant arguments")
    return traced


def _forward_to(fn: Callable[..., Any]) -> Callable[..., Any]:
    def traced(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)
    return traced


_FAILED = ("could not register torch.compile polyfills; compiled code "
           "that calls redirected APIs will graph-break")


# ---- after torch._dynamo's import -------------------------------------------

def _dynamo_imported() -> None:
    if _patches.is_applied():
        register()


def _reset_dynamo() -> None:
    """Code compiled before a change of patches has the old devices baked
    in (and guards only on what it called), so it is thrown away."""
    dynamo = sys.modules.get(_DYNAMO)
    reset = getattr(dynamo, "reset", None)
    if reset is not None:
        reset()


def on_apply() -> None:
    """Called at the end of _patches.apply()."""
    with _lock:
        if _DYNAMO in sys.modules:
            _reset_dynamo()
        _imports.after(_DYNAMO, _dynamo_imported, _FAILED)


def on_restore() -> None:
    """Called by _patches.restore().  Registered polyfills stay: they are
    keyed by the replacement objects, which are no longer installed, and the
    same objects come back on the next enable().  Compiled code is thrown
    away: it has the redirected devices baked in."""
    _imports.cancel(_DYNAMO, _dynamo_imported)
    _reset_dynamo()
