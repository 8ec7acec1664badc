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
3. rewrites the result's graphs (inlined first): every ``Device`` constant
   becomes the device the policy sends it to, and ``aten::cuda(x)`` becomes
   ``aten::to(x, <that device>)``.

Devices that only exist at run time inside the script (a device built from
a string argument) are not rewritten; devices and tensors handed in from
Python already are.  ``torch.jit.trace`` needs nothing: tracing runs the
Python code, wrappers included, and records the devices they chose.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, List

import torch

from . import _patches

_lock = threading.Lock()


def _register_builtins() -> None:
    from torch.jit import _builtins
    table = _builtins._get_builtin_table()
    for _owner, _name, original, replacement in _patches.replaced():
        if isinstance(original, staticmethod):
            continue
        op = table.get(id(original))
        if op is not None and id(replacement) not in table:
            _builtins._register_builtin(replacement, op)


def _target(value: str) -> torch.device:
    return torch.device(value)            # the policy, through the hook


def _rewrite_graph(graph: Any) -> int:
    """Redirects the device constants and .cuda() calls of one graph;
    returns how many were changed."""
    changed = 0
    device_type = torch._C.DeviceObjType.get()
    for node in graph.findAllNodes("prim::Constant"):
        out = node.output()
        if out.type() != device_type or not node.hasAttribute("value"):
            continue
        requested = node.s("value")
        target = _target(requested)
        if str(target) != requested:
            node.s_("value", str(target))
            changed += 1
    for node in graph.findAllNodes("aten::cuda"):
        inputs = list(node.inputs())
        if len(inputs) != 1:
            continue
        target = _target("cuda")
        if target.type == "cuda":
            continue
        with graph.insert_point_guard(node):
            dev = graph.insertConstant(target)
            none = graph.insertConstant(None)
            false = graph.insertConstant(False)
            to = graph.create("aten::to", [inputs[0], dev, none, false, false])
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
    for graph in _graphs_of(obj):
        torch._C._jit_pass_inline(graph)
        _rewrite_graph(graph)
    return obj


def _build(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def script(obj: Any, *args: Any, **kwargs: Any) -> Any:
        if not _patches.is_applied():
            return original(obj, *args, **kwargs)
        with _lock:
            _register_builtins()
        return _redirect(original(obj, *args, **kwargs))
    return script


def patches() -> List[Any]:
    from ._patches import Patch
    return [Patch(torch.jit, "script", _build)]
