"""TorchScript: scripted code that names "cuda" runs on the redirected device.

TorchScript compiles ``torch.zeros(3, device="cuda")`` to ``aten::zeros``
with the device as a constant of the graph; at run time the interpreter
calls the aten op directly, so TorchDevice's Python wrappers never see it.
``torch.jit.script`` is therefore replaced by a function that

1. tells the compiler that each wrapper stands for the same aten op as
   torch's original (TorchScript resolves ``torch.zeros`` by identity, in a
   table it builds on first use: built after enable() it would hold the
   wrapper, built before it would not know it), then
2. scripts with torch's own ``torch.jit.script``, and
3. rewrites the result's graphs (inlined first) with the same decisions as
   eager calls and torch.compile: the node of each replaced op names its
   arguments, so the op's entry in the device-argument grammar
   (_grammar.py) finds its device and dtype there, and
   ``_tdcore.trace_plan`` says where the request goes; a missing device of
   a device constructor follows the policy; every other ``Device`` constant
   becomes the device the policy sends it to, and ``aten::cuda(x)`` becomes
   ``aten::to(x, <that device>)``.

Devices that only exist at run time inside the script (a device built from
a string argument) are not rewritten; devices and tensors handed in from
Python already are.  ``torch.jit.trace`` needs nothing for devices: tracing
runs the Python code, wrappers included, and records the devices they
chose.  Its check does: torch compares the trace's outputs with the
function's in float64 (``.double()``), which MPS (and a device with MPS's
record) refuses, so a trace made there fails in its own check, natively
too.  ``_trace_build`` makes such a trace again without the check, and
says so; and while it traces, moves do what torch does (no forced copy:
the check re-traces with cloned inputs, which the moves-copy rule would
read as host tensors), so the graph is the one CUDA records
(docs/compile-checkpoints-distributed.md, "TorchScript").
"""
from __future__ import annotations

import functools
import inspect
import threading
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from . import _grammar, _patches, _tdcore, _torch_compat

_lock = threading.Lock()
# aten op name -> the grammar of the replaced callable that stands for it.
_ops: Dict[str, _grammar.DeviceArg] = {}
# c10::ScalarType values of the dtypes the policy changes (stable: Float=6,
# Double=7, ComplexFloat=9, ComplexDouble=10).
_SCALAR = {6: torch.float32, 7: torch.float64, 9: torch.complex64,
           10: torch.complex128}
_SCALAR_OF = {v: k for k, v in _SCALAR.items()}
# torch's internals the rewrite needs; without any, scripts are torch's.
_JIT_NAMES = tuple(p.key for p in _torch_compat.PRIVATE
                   if p.feature == _torch_compat.JIT)


def _register_builtins() -> None:
    table_fn = _torch_compat.get("jit_builtin_table")
    register = _torch_compat.get("jit_register_builtin")
    if table_fn is None or register is None:
        return
    table = table_fn()
    for owner, name, original, replacement in _patches.replaced():
        if isinstance(original, staticmethod):
            continue
        if owner is torch.Tensor and isinstance(replacement,
                                                _tdcore.Wrapper):
            # Tensor methods are aten ops of the same name in a graph.
            _ops.setdefault(f"aten::{name}", replacement.td_grammar)
        op = table.get(id(original))
        if op is None:
            continue
        if id(replacement) not in table:
            register(replacement, op)
        if isinstance(replacement, _tdcore.Wrapper):
            _ops.setdefault(op, replacement.td_grammar)


def _plan(request: Any, dtype: Any = None, none_policy: bool = False
          ) -> Tuple[Optional[torch.device], Any]:
    return _tdcore.trace_plan(request, dtype, none_policy, "torch.jit.script")


def _constant(value: Any) -> Tuple[bool, Any]:
    """(is a constant, its value) of a graph value."""
    node = value.node()
    if node.kind() != "prim::Constant":
        return False, None
    if not node.hasAttribute("value"):
        return True, None                        # None
    return True, value.toIValue()


def _argument_names(node: Any) -> List[str]:
    parse = _torch_compat.get("parse_schema")
    try:
        schema = node.schema()
    except RuntimeError:
        return []
    if parse is None or schema == "(no schema)":
        return []
    return [a.name for a in parse(schema).arguments]


def _rewrite_op(graph: Any, node: Any, g: _grammar.DeviceArg) -> int:
    """Redirects the device (and the dtype that goes with it) of one node
    of a replaced op, by its grammar.  Returns 1 when it changed it."""
    names = _argument_names(node)
    if g.keyword not in names:
        return 0
    inputs = list(node.inputs())
    d_index = names.index(g.keyword)
    t_index = (names.index(g.dtype_keyword)
               if g.dtype_keyword in names else -1)
    is_const, request = _constant(inputs[d_index])
    if not is_const or (request is None and not g.none_policy):
        return 0
    dtype = None
    if t_index >= 0:
        t_const, t_value = _constant(inputs[t_index])
        if t_const and t_value in _SCALAR:
            dtype = _SCALAR[t_value]
    req = None if request is None else str(request)
    target, new_dtype = _plan(req, dtype, g.none_policy)
    changed = 0
    with graph.insert_point_guard(node):
        if target is not None and str(target) != str(request):
            node.replaceInput(d_index, graph.insertConstant(target))
            changed = 1
        if new_dtype is not dtype and new_dtype in _SCALAR_OF:
            node.replaceInput(t_index,
                              graph.insertConstant(_SCALAR_OF[new_dtype]))
            changed = 1
        elif (t_index >= 0 and _constant(inputs[t_index]) == (True, None)
              and _lowers_float64(req, g.none_policy)):
            made = _made_by(graph, node, g, names, d_index)
            if made is not None:
                node.replaceInput(t_index, _dtype_lowered(graph, made))
                changed = 1
    return changed


def _made_by(graph: Any, node: Any, g: _grammar.DeviceArg, names: List[str],
             d_index: int) -> Any:
    """The graph value whose dtype a call naming none makes: its data
    tensor, or, where float64 is torch's default dtype (as when the function
    was scripted), the same call made on the meta device.  None: neither."""
    inputs = list(node.inputs())
    if (0 <= g.data_position < len(inputs)
            and inputs[g.data_position].type().kind() == "TensorType"):
        return inputs[g.data_position]
    if (not g.none_policy or "out" in names
            or torch.get_default_dtype() is not torch.float64):
        return None
    inputs[d_index] = graph.insertConstant(_patches.META)
    probe = graph.insertNode(graph.create(node.kind(), inputs))
    probe.output().setType(node.output().type())
    return probe.output()


def _lowers_float64(request: Optional[str], none_policy: bool) -> bool:
    """Whether float64 data arriving by this request becomes float32."""
    try:
        return _plan(request, torch.float64, none_policy)[1] is torch.float32
    except TypeError:
        # TORCHDEVICE_FLOAT64=error: whether the data is float64 is known
        # only at run time, where the device's own TypeError says it.
        return False


def _dtype_lowered(graph: Any, data: Any) -> Any:
    """A graph value: data's dtype, float32 where it is float64 and
    complex64 where it is complex128 (the dtype a call naming none keeps is
    its data's, docs/policy.md), as the ints TorchScript passes dtypes by:
    dtype - (dtype == Double) - (dtype == ComplexDouble), the narrow one
    being one less in each pair."""
    int_type = _torch_compat.get("IntType").get()

    def insert(kind: str, inputs: List[Any], out_type: Any) -> Any:
        node = graph.insertNode(graph.create(kind, inputs))
        node.output().setType(out_type)
        return node.output()
    dtype = insert("prim::dtype", [data], int_type)
    lowered = dtype
    for wide in _grammar.WIDE_DTYPES:
        is_wide = insert("aten::eq",
                         [dtype, graph.insertConstant(_SCALAR_OF[wide])],
                         _torch_compat.get("BoolType").get())
        lowered = insert("aten::sub", [lowered, insert("aten::Int", [is_wide],
                                                       int_type)], int_type)
    return lowered


def _rewrite_graph(graph: Any) -> int:
    """Redirects the devices of one graph; returns how many were changed."""
    changed = 0
    for node in list(graph.nodes()):
        g = _ops.get(node.kind())
        if g is not None and g.keyword:
            changed += _rewrite_op(graph, node, g)
    obj_type = _torch_compat.get("DeviceObjType")
    device_type = obj_type.get() if obj_type is not None else None
    for node in graph.findAllNodes("prim::Constant"):
        out = node.output()
        if out.type() != device_type or not node.hasAttribute("value"):
            continue
        requested = node.s("value")
        target, _ = _plan(requested)
        if target is not None and str(target) != requested:
            node.s_("value", str(target))
            changed += 1
    for node in graph.findAllNodes("aten::cuda"):
        inputs = list(node.inputs())
        if len(inputs) != 1:
            continue
        target, _ = _plan("cuda")
        if target is None or target.type == "cuda":
            continue
        with graph.insert_point_guard(node):
            dev = graph.insertConstant(target)
            dtype = (_dtype_lowered(graph, inputs[0])
                     if _lowers_float64("cuda", False)
                     else graph.insertConstant(None))
            false = graph.insertConstant(False)
            to = graph.create("aten::to", [inputs[0], dev, dtype, false, false])
            graph.insertNode(to)
            to.output().setType(node.output().type())
        node.output().replaceAllUsesWith(to.output())
        node.destroy()
        changed += 1
    return changed


def _graphs_of(obj: Any) -> List[Any]:
    if isinstance(obj, torch.jit.ScriptModule):
        graphs = []
        seen = set()
        for module in obj.modules():
            c = getattr(module, "_c", None)
            if c is None or id(c) in seen:
                continue
            seen.add(id(c))
            for name in c._method_names():
                graphs.append(c._get_method(name).graph)
        return graphs
    graph = getattr(obj, "graph", None)
    return [graph] if graph is not None else []


def _redirect(obj: Any) -> Any:
    inline = _torch_compat.get("jit_pass_inline")
    if inline is None:
        return obj
    for graph in _graphs_of(obj):
        inline(graph)
        _rewrite_graph(graph)
    return obj


def _frames_up_position(original: Callable[..., Any]) -> Optional[int]:
    """Where torch.jit.script takes `_frames_up` among the arguments after
    `obj`, or None where it has no such parameter."""
    try:
        names = list(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return None
    if "_frames_up" not in names or names.index("_frames_up") == 0:
        return None
    return names.index("_frames_up") - 1


def _build(original: Callable[..., Any]) -> Callable[..., Any]:
    position = _frames_up_position(original)

    def one_frame_up(args: Tuple[Any, ...],
                     kwargs: Dict[str, Any]) -> Tuple[Any, ...]:
        # torch.jit.script resolves the names a class uses in the frame
        # `_frames_up` frames above its own, its caller's by default; this
        # replacement is one frame more between them.
        if position is None:
            return args
        if len(args) > position:
            return (args[:position] + (args[position] + 1,)
                    + args[position + 1:])
        kwargs["_frames_up"] = kwargs.get("_frames_up", 0) + 1
        return args

    @functools.wraps(original)
    def script(obj: Any, *args: Any, **kwargs: Any) -> Any:
        args = one_frame_up(args, kwargs)
        if not _patches.is_applied() or not _torch_compat.has(*_JIT_NAMES):
            return original(obj, *args, **kwargs)
        with _lock:
            _register_builtins()
        return _redirect(original(obj, *args, **kwargs))
    return script


def _refused_float64(err: TypeError) -> bool:
    """torch's refusal of float64 on MPS ("Cannot convert a MPS Tensor to
    float64 dtype ..."), which a device with MPS's record repeats, or
    TorchDevice's own under TORCHDEVICE_FLOAT64=error ("... does not
    support float64")."""
    text = str(err)
    return "float64" in text and ("MPS" in text
                                  or "does not support float64" in text)


def _trace_build(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def trace(*args: Any, **kwargs: Any) -> Any:
        paused = _tdcore.pause_move_copies(True)
        try:
            return _traced(args, kwargs)
        finally:
            _tdcore.pause_move_copies(paused)

    def _traced(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        try:
            return original(*args, **kwargs)
        except TypeError as err:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                raise err from None
            if not _refused_float64(err) \
                    or not bound.arguments.get("check_trace", True):
                raise
        bound.arguments["check_trace"] = False
        warnings.warn(
            f"TorchDevice: {original.__name__}() checks a trace by comparing "
            f"its outputs in float64, which {_patches.landed_type()} does "
            f"not have; the trace was made again without that check "
            f"(check_trace=False)", torch.jit.TracerWarning, stacklevel=3)
        _patches.record_emulated(f"torch.jit.{original.__name__}")
        return original(*bound.args, **bound.kwargs)
    return trace


def patches() -> List[Any]:
    from ._patches import Patch
    table = [Patch(torch.jit, "script", _build)]
    if _tdcore.settings()["profile"] != "cuda":
        table += [Patch(torch.jit, "trace", _trace_build),
                  Patch(torch.jit, "trace_module", _trace_build)]
    return table
