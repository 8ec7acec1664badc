"""torch's private names are used in one place (docs/reliability.md).

TorchDevice/_torch_compat.py lists every private torch name the package
touches, with the feature that needs it.  Here each one is removed in turn
(monkeypatched away): enabling TorchDevice still works, the feature is
switched off with one warning naming it and the torch version, and
everything else keeps redirecting.  With all of them removed at once,
``import TorchDevice`` in a fresh interpreter still works.  And no other
module of the package reaches a private torch name itself.
"""
from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest
import torch

import TorchDevice
from TorchDevice import (_compile, _dtensor, _dtensor_rng, _fsdp, _graphs,
                         _masquerade, _patches, _torch_compat)
from conftest import HAS_CUDA, ROOT, run_python


def _remove(monkeypatch, p: _torch_compat.Private) -> None:
    if not p.attr:
        monkeypatch.setitem(sys.modules, p.module, None)
        return
    owner = __import__(p.module, fromlist=["_"])
    *path, last = p.attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    monkeypatch.delattr(owner, last)


def _use(p: _torch_compat.Private) -> None:
    """Runs the feature that needs p."""
    if p.feature == _torch_compat.JIT:
        def scripted(x: torch.Tensor) -> torch.Tensor:
            return x + 1
        torch.jit.script(scripted)
    elif p.feature == _torch_compat.COMPILE:
        importlib.import_module("torch._dynamo")
        _compile.register()
    elif p.feature == _torch_compat.MPS_RNG:
        _masquerade._target_generator("mps")
    elif p.feature == _torch_compat.DTENSOR:
        assert _dtensor.register() is False
    elif p.feature == _torch_compat.DTENSOR_RNG:
        _dtensor_rng.register()
    elif p.feature == _torch_compat.GRAPHS:
        assert _graphs._mode_class() is None
    elif p.feature == _torch_compat.FSDP_SYNC:
        # what the import of FSDP's module runs where "cuda" is the host
        _fsdp._register_states_check()


@pytest.mark.parametrize("p", _torch_compat.PRIVATE,
                         ids=[p.key for p in _torch_compat.PRIVATE])
def test_each_private_name_missing(monkeypatch, restore_config, p):
    if HAS_CUDA and p.feature == _torch_compat.LIBRARIES:
        pytest.skip("profile cuda: CUDA's own library switches are left alone")
    TorchDevice.disable()
    _torch_compat.forget()
    _remove(monkeypatch, p)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            TorchDevice.enable()
            _use(p)
            assert TorchDevice.is_enabled()
            assert torch.zeros(1, device="cuda").device.type == \
                TorchDevice.policy()["device"]
        texts = [str(w.message) for w in caught
                 if issubclass(w.category, RuntimeWarning)]
        mine = [t for t in texts if p.feature in t]
        assert len(mine) == 1, texts
        assert torch.__version__ in mine[0]
    finally:
        monkeypatch.undo()
        _torch_compat.forget()
        TorchDevice.disable()
        TorchDevice.enable()


def test_import_works_with_every_private_name_gone():
    # Every module is imported first: torch's own imports need the names.
    removals = sorted({f"import {p.module}" for p in _torch_compat.PRIVATE
                       if p.attr and p.feature != _torch_compat.COMPILE})
    hidden = []
    for p in _torch_compat.PRIVATE:
        if p.feature == _torch_compat.COMPILE:
            continue          # not imported by TorchDevice until dynamo is
        if not p.attr:
            hidden.append(f"sys.modules[{p.module!r}] = None")
        else:
            # sys.modules, not attribute access: torch.optim deletes its
            # submodules' names from its namespace.
            *path, last = p.attr.split(".")
            owner = "".join([f"sys.modules[{p.module!r}]"]
                            + [f".{part}" for part in path])
            removal = f"delattr({owner}, {last!r})"
            if removal not in removals:     # two features, one name
                removals.append(removal)
    # Modules are hidden last: some names above live in them.
    code = "import sys, warnings, torch\n" + "\n".join(removals + hidden) \
        + """
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import TorchDevice
print(TorchDevice.is_enabled(), torch.zeros(1, device="cuda").device.type)
for w in caught:
    print("WARNING", w.message)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0].split()
    assert first == ["True", TorchDevice.policy()["device"]]
    for feature in (_torch_compat.DEFAULT_DEVICE, _torch_compat.CONSTRUCTORS,
                    _torch_compat.DATALOADER, _torch_compat.LAZY):
        assert feature in proc.stdout, proc.stdout


def test_a_torch_without_torch_accelerator_enables():
    # torch.accelerator is public from torch 2.6; on older releases
    # `import TorchDevice` raised AttributeError while enabling.
    proc = run_python("""
import sys, warnings, torch
delattr(torch, "accelerator")
sys.modules["torch.accelerator"] = None
warnings.simplefilter("error")
import TorchDevice
x = torch.ones(2, device="cuda")
y = x.cpu()
y.add_(1)
print(TorchDevice.is_enabled(), torch.cuda.is_available(),
      torch.device("cuda").type, x.sum().item(), y is x)
TorchDevice.disable()
TorchDevice.enable()
print(hasattr(torch, "accelerator"))
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "True", "cuda", "2.0", "False",
                                   "False"]


def test_compile_with_a_dynamo_that_passes_no_translator():
    # Before torch 2.11 dynamo called TensorVariable's method handlers
    # without the instruction translator (handler(*args)); TorchDevice's
    # handlers took it as their first parameter, so x.to("cuda") in
    # compiled code stopped with "Unhandled args for method" there.  The
    # older calling convention is emulated by wrapping the handlers.
    proc = run_python("""
import torch, torch._dynamo
import TorchDevice
from torch._dynamo.symbolic_convert import InstructionTranslatorBase
from torch._dynamo.variables.tensor import TensorVariable
for name in ("to", "cuda", "cpu"):
    handler = getattr(TensorVariable, "method_" + name)
    def older(self, *args, _handler=handler, **kwargs):
        if args and isinstance(args[0], InstructionTranslatorBase):
            args = args[1:]
        return _handler(self, *args, **kwargs)
    setattr(TensorVariable, "method_" + name, older)

def f(x):
    return x.to("cuda") + x.cuda() + x.to(device="cuda", dtype=torch.float64)

x = torch.ones(2, device="cpu")
eager = f(x)
got = torch.compile(f, fullgraph=True, backend="eager")(x)
print(torch.equal(got, eager), got.dtype == eager.dtype,
      got.device == eager.device)
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "True", "True"]


def test_streams_and_events_pass_torchs_abstract_base_checks():
    # torch 2.5's dynamo asserts, when imported, that torch.cuda.Event and
    # Stream derive from the abstract bases torch._streambase declares;
    # with TorchDevice enabled `import torch._dynamo` failed there.  Bases
    # of that kind are emulated on torch's classes before the import.
    proc = run_python("""
import abc, torch
class StreamBase(abc.ABC):
    pass
class EventBase(abc.ABC):
    pass
class Stream(StreamBase, torch.cuda.streams.Stream):
    pass
class Event(EventBase, torch.cuda.streams.Event):
    pass
torch.cuda.streams.Stream = torch.cuda.Stream = Stream
torch.cuda.streams.Event = torch.cuda.Event = Event
import TorchDevice
if TorchDevice.policy()["device"] == "cuda":
    print("True True True")   # torch's own classes stay
else:
    print(torch.cuda.Event is not Event, issubclass(torch.cuda.Event, EventBase),
          issubclass(torch.cuda.Stream, StreamBase))
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "True", "True"]


def test_polyfills_register_with_a_dynamo_before_polyfilled_ids():
    # Before torch 2.6 dynamo had no set of polyfilled ids: it routes a
    # callable to its polyfill through VariableBuilder's id table.  The
    # registration of a callable object (TorchDevice's wrappers) used the
    # set alone, so on torch 2.5 no redirected call compiled ("call_method
    # UserDefinedObjectVariable(Wrapper) __call__").  trace_rules without
    # that set is emulated with a namespace holding the rest.
    proc = run_python("""
import types, torch, torch._dynamo
from torch._dynamo import trace_rules
import TorchDevice
from TorchDevice import _compile, _torch_compat
older = types.SimpleNamespace(
    get_torch_obj_rule_map=trace_rules.get_torch_obj_rule_map)
_torch_compat._found["dynamo_trace_rules"] = older

class Plus:          # a callable object, as TorchDevice's wrappers are
    def __call__(self, x):
        return x + 1
plus = Plus()
_compile._substitute(plus, lambda x: x + 2)
f = torch.compile(lambda x: plus(x) * 1, fullgraph=True, backend="eager")
print(f(torch.zeros(1)).item())
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["2.0"]


def _private_uses(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "torch":
                if any(p.startswith("_") and not p.startswith("__")
                       for p in parts):
                    yield node.lineno, "torch." + ".".join(reversed(parts))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names])
            for name in names:
                if name.startswith("torch") and any(
                        p.startswith("_") for p in name.split(".")):
                    yield node.lineno, name


def test_no_other_module_reaches_a_private_torch_name():
    found = []
    for path in sorted((ROOT / "TorchDevice").glob("*.py")):
        if path.name == "_torch_compat.py":
            continue
        found += [f"{path.name}:{line}: {what}"
                  for line, what in _private_uses(path)]
    assert not found, found


# torch's own modules read attributes of the functions TorchDevice replaces
# when they are imported after it: torch._dynamo (torch 2.14) builds its
# constant-folding table from ``torch.backends.mps.is_available.__wrapped__``
# (an lru_cache).  Importing it failed where MPS is announced with
# "'builtin_function_or_method' object has no attribute '__wrapped__'".

def _wraps(obj):
    """What a (static) function names as ``__wrapped__``, or None."""
    return getattr(getattr(obj, "__func__", obj), "__wrapped__", None)


def test_replacements_of_decorated_functions_name_what_they_wrap():
    missing = [f"{getattr(owner, '__name__', owner)}.{name}"
               for owner, name, original, replacement in _patches.replaced()
               if _wraps(original) is not None and _wraps(replacement) is None]
    assert not missing, missing


@pytest.mark.parametrize("announce", ["cuda", "mps"])
def test_dynamo_imported_after_enable(announce):
    proc = run_python("""
        import torch, TorchDevice
        from TorchDevice import _patches
        decorated = [(o, n, r) for o, n, orig, r in _patches.replaced()
                     if getattr(getattr(orig, "__func__", orig),
                                "__wrapped__", None) is not None]
        for owner, name, replacement in decorated:
            inner = getattr(replacement, "__func__", replacement).__wrapped__
            assert callable(inner), (owner, name)
        import torch._dynamo

        def step(x):
            if torch.backends.mps.is_available():
                x = x + 1
            if torch.cuda.is_available():
                x = x * 2
            return x

        x = torch.arange(4.0, device="cuda")
        compiled = torch.compile(step, backend="eager")
        assert torch.equal(compiled(x), step(x)), (compiled(x), step(x))
        print("ok", torch.backends.mps.is_available(), len(decorated))
    """, env={"TORCHDEVICE_ANNOUNCE": announce})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")
