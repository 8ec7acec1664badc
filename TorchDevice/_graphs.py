"""CUDA graphs where "cuda" is not CUDA: capture records, replay re-runs.

A CUDA graph is a recording of the kernels a block of code launched, on
tensors whose addresses stay fixed; ``replay()`` launches them again, and
the program sees the results in the same tensors (``static_out``).  Off
CUDA, ``torch.cuda.CUDAGraph`` records the same thing one level up: every
operator torch dispatches while the capture is underway on this thread,
with the tensors it read and wrote (a ``TorchDispatchMode``).  ``replay()``
runs those operators again, in order, on the same tensor objects, and
writes each result into the tensor the capture returned.  So the outputs,
the gradients backward left in ``.grad``, and the parameters an optimizer
step updated change on every replay, exactly where the program reads them.

What capture does, as on CUDA:

- Nothing that existed before the capture changes during it: an operator
  that writes into its arguments (``add_``, ``copy_``, ``out=``, an
  optimizer's ``_foreach_*_``, batch norm's running statistics) is recorded
  and not run, or run on copies when it also returns new tensors.  The
  first ``replay()`` is the first time the block's writes happen.
- Views, in-place metadata changes (``view``, ``t``, ``squeeze_``) and
  operators with no tensor in or out (profiler markers) are host-side
  bookkeeping on CUDA: they happen once, at capture, and replay does not
  repeat them (the views share the memory that replay writes).
- Reading a value back to the host (``.item()``, ``bool(t)``,
  ``nonzero``...) raises, as CUDA does ("operation not permitted when
  stream is capturing"): its answer would be frozen into every replay.
- Random operators draw again on every replay, and the capture leaves the
  generators where it found them (CUDA's graph-safe RNG does the same), so
  replays draw what the same code draws eagerly.

What differs: on the CPU profile a host tensor cannot be told from a
"cuda" one, so host operators inside the block are replayed too (CUDA runs
them once, at capture); replay runs operator by operator in Python, so it
saves no time.  ``make_graphed_callables`` stays eager (docs/masquerade.md,
"CUDA graphs").
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.cuda.graphs as _torch_graphs

from . import _patches, _tdcore, _torch_compat

_API = "torch.cuda.CUDAGraph"
_DYNAMO_FRAME = os.path.join("torch", "_dynamo", "eval_frame.py")

# Operators whose answer needs the device's data on the host.
_SYNC_NAMES = (
    "_local_scalar_dense.default", "nonzero.default",
    "masked_select.default", "_unique2.default", "unique_dim.default",
    "unique_consecutive.default", "equal.default", "bincount.default",
)
# Memory whose contents are undefined: replaying it would only copy
# garbage over what later operators write anyway.
_ALLOCATE_NAMES = (
    "empty.memory_format", "empty_strided.default", "empty_like.default",
    "new_empty.default", "new_empty_strided.default",
    "empty_permuted.default",
)
# In-place metadata changes torch does not tag as such.
_METADATA_NAMES = (
    "resize_.default", "resize_as_.default", "set_.source_Storage",
    "set_.source_Storage_storage_offset", "set_.source_Tensor",
    "set_.default", "detach_.default",
)


def _ops(names: Tuple[str, ...]) -> frozenset:
    found = []
    for name in names:
        packet, overload = name.split(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if op is not None:
            found.append(op)
    return frozenset(found)


class _Known:
    """The operator sets above, resolved at the first capture (resolving
    them costs import time every program would pay)."""

    sync: frozenset = frozenset()
    allocate: frozenset = frozenset()
    metadata: frozenset = frozenset()
    batch_norm: Any = None
    repeat_interleave: Any = None
    lift_fresh: Any = None
    copy: Any = None
    resolved = False

    @classmethod
    def get(cls) -> "type[_Known]":
        if not cls.resolved:
            cls.sync = _ops(_SYNC_NAMES)
            cls.allocate = _ops(_ALLOCATE_NAMES)
            cls.metadata = _ops(_METADATA_NAMES)
            aten = torch.ops.aten
            cls.batch_norm = getattr(aten.native_batch_norm, "default", None)
            cls.repeat_interleave = getattr(aten.repeat_interleave, "Tensor",
                                            None)
            cls.lift_fresh = getattr(aten.lift_fresh, "default", None)
            cls.copy = aten.copy_.default
            cls.resolved = True
        return cls


# How capture treats an operator.
_RUN_ONCE = "once"        # views, metadata: run now, never replayed
_FUNCTIONAL = "fresh"     # new outputs: run now, replayed
_WRITES = "writes"        # writes its arguments: deferred to replay

_state = threading.local()
_pool_ids = itertools.count(1)


class _Kind:
    """What the schema says about one operator, worked out once."""

    __slots__ = ("how", "written", "returns_written", "fresh_returns")

    def __init__(self, how: str, written: Tuple[int, ...] = (),
                 returns_written: Tuple[Optional[int], ...] = (),
                 fresh_returns: bool = True) -> None:
        self.how = how
        self.written = written                  # argument positions
        self.returns_written = returns_written  # argument behind each return
        self.fresh_returns = fresh_returns


_kinds: Dict[Any, _Kind] = {}


def _kind(func: Any) -> _Kind:
    kind = _kinds.get(func)
    if kind is not None:
        return kind
    schema = _torch_compat.op_schema(func)
    if (func in _Known.get().metadata
            or torch.Tag.inplace_view in func.tags
            or getattr(func, "is_view", False)):
        kind = _Kind(_RUN_ONCE)
    elif schema is None:
        kind = _Kind(_FUNCTIONAL)
    else:
        written = [i for i, a in enumerate(schema.arguments)
                   if a.alias_info is not None and a.alias_info.is_write]
        if func is _Known.get().batch_norm:
            written = [3, 4]     # running_mean, running_var: not annotated
        sets = {i: schema.arguments[i].alias_info.before_set
                for i in written if schema.arguments[i].alias_info}
        returns: List[Optional[int]] = []
        for r in schema.returns:
            behind = None
            if r.alias_info is not None and r.alias_info.is_write:
                behind = next((i for i, s in sets.items()
                               if s == r.alias_info.before_set), None)
            returns.append(behind)
        if not written:
            kind = _Kind(_FUNCTIONAL)
        else:
            kind = _Kind(_WRITES, tuple(written), tuple(returns),
                         fresh_returns=any(b is None for b in returns))
    _kinds[func] = kind
    return kind


def _argument(schema: Any, args: tuple, kwargs: dict, index: int) -> Any:
    if index < len(args):
        return args[index]
    return kwargs.get(schema.arguments[index].name)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


class _CaptureInvalidated(RuntimeError):
    pass


def _under_compile() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        # The entry of a torch.compile'd function (torch's own dispatch
        # machinery passes through other functions of the same file).
        if (frame.f_code.co_name == "compile_wrapper"
                and frame.f_code.co_filename.endswith(_DYNAMO_FRAME)):
            return True
        frame = frame.f_back
    return False


def _sync_error(func: Any) -> RuntimeError:
    hint = ""
    if _under_compile():
        hint = (" The block calls a torch.compile'd function, which runs "
                "eagerly inside this capture (torch.compile does not trace "
                "under the dispatch mode that records it), so code that "
                "reads only when not compiling reads here.")
    return _CaptureInvalidated(
        f"{func}: reads a value back to the host while torch.cuda."
        "CUDAGraph is capturing (operation not permitted when stream is "
        "capturing, as on CUDA): every replay would reuse the value read "
        f"now. Move the read out of the captured block.{hint}")


class _Op:
    __slots__ = ("func", "args", "kwargs", "fresh")

    def __init__(self, func: Any, args: tuple, kwargs: dict,
                 fresh: List[Tuple[int, torch.Tensor]]) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.fresh = fresh          # (position among outputs, tensor)


def _fresh_outputs(out: Any, skip: Tuple[Any, ...]) -> List[Tuple[int, Any]]:
    return [(i, t) for i, t in enumerate(_tensors(out))
            if not any(t is s for s in skip)]


def _capture(ops: List[_Op], func: Any, args: tuple, kwargs: dict) -> Any:
    """One operator dispatched during a capture: what it returns now, and
    what replay will run."""
    known = _Known.get()
    if func in known.sync or (func is known.repeat_interleave
                              and kwargs.get("output_size") is None):
        raise _sync_error(func)
    if func is known.lift_fresh:
        # A tensor made from host data (torch.tensor(0.0)): a constant that
        # a compiled block on CUDA creates afresh in every replay, so one
        # the block accumulates into starts from its value each time.
        out = func(*args, **kwargs)
        ops.append(_Op(known.copy, (out, out.clone()), {}, []))
        return out
    kind = _kind(func)
    if kind.how == _RUN_ONCE:
        return func(*args, **kwargs)
    if kind.how == _FUNCTIONAL:
        out = func(*args, **kwargs)
        fresh = _fresh_outputs(out, ())
        # Neither tensors in nor tensors out (the profiler's record_function
        # markers): host bookkeeping, which CUDA does once, at capture.
        host_only = not fresh and not any(
            True for v in (*args, *kwargs.values()) for _ in _tensors(v))
        if func in known.allocate:
            # Memory nothing wrote yet: CUDA leaves it undefined, and a
            # graph pool's memory, new from the driver, usually reads
            # zeros.  Host memory reused from freed tensors would hold
            # garbage, which a program that steps an optimizer on
            # gradients the capture has not written yet turns into NaN.
            for _, tensor in fresh:
                tensor.zero_()
        elif not host_only:
            ops.append(_Op(func, args, kwargs, fresh))
        return out
    schema = _torch_compat.op_schema(func)
    originals = {i: _argument(schema, args, kwargs, i) for i in kind.written}
    if kind.fresh_returns:
        # Run on copies of what it writes: its new outputs are needed now,
        # the writes are not (they happen at replay).
        call_args = list(args)
        call_kwargs = dict(kwargs)
        for i, value in originals.items():
            if i < len(args):
                call_args[i] = _clone(value)
            else:
                call_kwargs[schema.arguments[i].name] = _clone(value)
        out = func(*call_args, **call_kwargs)
    else:
        out = None
    results = []
    for n, behind in enumerate(kind.returns_written):
        if behind is not None:
            results.append(originals[behind])
        else:
            results.append(out[n] if isinstance(out, (tuple, list))
                           and len(kind.returns_written) > 1 else out)
    written = tuple(t for v in originals.values() for t in _tensors(v))
    returned: Any
    if not results:
        returned = None
    elif len(results) == 1:
        returned = results[0]
    else:
        returned = tuple(results)
    fresh = _fresh_outputs(returned, written) if kind.fresh_returns else []
    ops.append(_Op(func, args, kwargs, fresh))
    return returned


def _no_autocast(stack: contextlib.ExitStack) -> None:
    """Replay runs the operators as captured: the casts autocast made are
    among them, and an autocast around replay() must not add more."""
    landed = _patches.landed_type()
    for device_type in dict.fromkeys(("cpu", landed)):
        try:
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type,
                                                   enabled=False))
        except RuntimeError:      # a device type without autocast
            pass


def _replay(ops: List[_Op]) -> None:
    with contextlib.ExitStack() as stack:
        _no_autocast(stack)
        stack.enter_context(torch.inference_mode())
        for op in ops:
            out = op.func(*op.args, **op.kwargs)
            if not op.fresh:
                continue
            now = list(_tensors(out))
            for position, kept in op.fresh:
                new = now[position]
                if new.shape != kept.shape:
                    raise RuntimeError(
                        f"{_API}.replay: {op.func} returned shape "
                        f"{tuple(new.shape)}, captured as "
                        f"{tuple(kept.shape)}; a captured block must not "
                        "depend on the data's values for its shapes")
                kept.copy_(new)


def _mode_class() -> Any:
    base = _torch_compat.get("TorchDispatchMode")
    if base is None:
        return None

    class _CaptureMode(base):  # type: ignore[misc, valid-type]
        def __init__(self, ops: List[_Op]) -> None:
            super().__init__()
            self.ops = ops
            self.invalid: Optional[str] = None
            self.recording = True

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                               kwargs: Optional[dict] = None) -> Any:
            if not self.recording:
                return func(*args, **(kwargs or {}))
            try:
                return _capture(self.ops, func, args, kwargs or {})
            except _CaptureInvalidated as error:
                # As on CUDA, the whole capture is lost, not just this op.
                self.invalid = str(error)
                raise

    return _CaptureMode


def capturing() -> bool:
    """Whether a CUDAGraph capture is underway on this thread."""
    return getattr(_state, "graph", None) is not None


def is_current_stream_capturing() -> bool:
    return capturing()


def graph_pool_handle() -> Tuple[int, int]:
    """An opaque memory-pool token: pools mean nothing here."""
    return (0, next(_pool_ids))


class CUDAGraph:
    """torch.cuda.CUDAGraph where "cuda" is not CUDA: capture records the
    operators the block dispatches, replay runs them again on the same
    tensors (module docstring)."""

    # The name errors and the report give (the generic API's subclass has
    # its own).
    _api = _API

    def __init__(self, keep_graph: bool = False) -> None:
        self._keep_graph = bool(keep_graph)
        self._ops: Optional[List[_Op]] = None
        self._mode: Any = None
        self._pool = graph_pool_handle()
        self._debug = False
        self._generators: List[Any] = []
        self._rng_states: List[Tuple[Any, Any]] = []

    def capture_begin(self, pool: Any = None,
                      capture_error_mode: str = "global",
                      check_input_liveness: bool = False) -> None:
        if capture_error_mode not in ("global", "thread_local", "relaxed"):
            raise RuntimeError(
                f"Unknown capture error mode. Expected `global`, "
                f"`thread_local`, or `relaxed`, got {capture_error_mode}")
        if self._mode is not None or capturing():
            raise RuntimeError(
                f"{self._api}.capture_begin: a capture is already underway on "
                "this thread")
        if self._ops is not None:
            raise RuntimeError(
                f"{self._api}.capture_begin: this graph was already captured; "
                "call reset() first")
        mode_class = _mode_class()
        if mode_class is None:
            raise RuntimeError(
                f"{self._api}: this torch has no TorchDispatchMode, which "
                "capture needs")
        if pool is not None:
            self._pool = tuple(pool)
        _patches.record_emulated(self._api)
        # CUDA's generators do not advance during a capture, only at each
        # replay (by what the graph draws): the draws capture makes here
        # are undone at capture_end, so that replays draw what the same
        # code run eagerly would.
        self._rng_states = [(g, g.get_state()) for g in self._rng_owners()]
        from ._graph_functions import CaptureFunctions
        mode = mode_class([])
        mode.__enter__()
        functions = CaptureFunctions()
        functions.__enter__()
        self._mode = (mode, functions)
        _state.graph = self

    def capture_end(self) -> None:
        mode = self._mode
        if mode is None or getattr(_state, "graph", None) is not self:
            raise RuntimeError(
                f"{self._api}.capture_end: no capture of this graph is "
                "underway on this thread")
        self._mode = None
        _state.graph = None
        mode, functions = mode
        functions.__exit__(None, None, None)
        mode.__exit__(None, None, None)
        for generator, state in self._rng_states:
            generator.set_state(state)
        self._rng_states = []
        if mode.invalid is not None:
            raise RuntimeError(f"{self._api}.capture_end: the capture was "
                               f"invalidated: {mode.invalid}")
        self._ops = mode.ops

    def instantiate(self) -> None:
        self._captured("instantiate")

    def replay(self) -> None:
        _replay(self._captured("replay"))

    def reset(self) -> None:
        if self._mode is not None:
            raise RuntimeError(f"{self._api}.reset: a capture is underway")
        self._ops = None

    def pool(self) -> Tuple[int, int]:
        return self._pool

    def enable_debug_mode(self) -> None:
        self._debug = True

    def debug_dump(self, debug_path: str) -> None:
        """Writes the recorded operators, one per line (CUDA writes a DOT
        file of its kernels)."""
        if not self._debug:
            return
        with open(debug_path, "w", encoding="utf-8") as f:
            for op in self._captured("debug_dump"):
                f.write(f"{op.func}\n")

    def register_generator_state(self, generator: Any) -> None:
        """Every generator draws again at replay; a registered one, like
        the default, is not advanced by the capture itself."""
        if isinstance(generator, torch.Generator) and not any(
                generator is g for g in self._generators):
            self._generators.append(generator)

    def _rng_owners(self) -> List[Any]:
        from ._masquerade import _target_generator
        default = _target_generator(_tdcore.settings()["profile"])
        owners = [default] if default is not None else []
        return owners + [g for g in self._generators if g is not default]

    def raw_cuda_graph(self) -> int:
        raise self._no_cuda_object("raw_cuda_graph")

    def raw_cuda_graph_exec(self) -> int:
        raise self._no_cuda_object("raw_cuda_graph_exec")

    def _captured(self, what: str) -> List[_Op]:
        if self._ops is None:
            raise RuntimeError(
                f"{self._api}.{what}: the graph has not been captured "
                "(capture_begin/capture_end, or torch.cuda.graph)")
        return self._ops

    @staticmethod
    def _no_cuda_object(what: str) -> RuntimeError:
        return RuntimeError(
            f"{_API}.{what}: there is no cudaGraph_t here: TorchDevice "
            "records the captured operators instead (docs/masquerade.md)")


class graph(_torch_graphs.graph):  # type: ignore[misc, name-defined]
    """torch.cuda.graph for CUDAGraph above: torch's own context manager
    also empties CUDA's host allocator, which a CPU build does not have."""

    default_capture_stream: Any = None

    def __init__(self, cuda_graph: Any, pool: Any = None, stream: Any = None,
                 capture_error_mode: str = "global", **kwargs: Any) -> None:
        if stream is None and graph.default_capture_stream is None:
            graph.default_capture_stream = torch.cuda.Stream()
        self.pool = () if pool is None else (pool,)
        self.capture_stream = (stream if stream is not None
                               else graph.default_capture_stream)
        self.stream_ctx = torch.cuda.stream(self.capture_stream)
        self.cuda_graph = cuda_graph
        self.capture_error_mode = capture_error_mode

    def __enter__(self) -> None:
        torch.cuda.synchronize()
        self.stream_ctx.__enter__()
        self.cuda_graph.capture_begin(
            *self.pool, capture_error_mode=self.capture_error_mode)

    def __exit__(self, *exc: Any) -> None:
        try:
            self.cuda_graph.capture_end()
        except RuntimeError:
            if exc[0] is None:
                raise           # else the block's own error goes on
        finally:
            self.stream_ctx.__exit__(*exc)
        if exc[0] is not None and isinstance(self.cuda_graph, CUDAGraph):
            # A block that did not finish is not a graph to replay.
            self.cuda_graph.reset()


def _make_capturable(optimizer: Any,
                     groups: List[Dict[str, Any]]) -> None:
    """What torch.compile traces for an optimizer's step (torch's Note
    [torch.compile x capturable]): its step count in a tensor on the
    parameters' device, so the step reads nothing back."""
    graph = getattr(_state, "graph", None)
    mode = graph._mode[0] if graph is not None and graph._mode else None
    for group in groups:
        group["capturable"] = True
        for p in group["params"]:
            state = optimizer.state.get(p)
            step = state.get("step") if state else None
            if isinstance(step, torch.Tensor) and step.device != p.device:
                # Set-up, as a warm-up step would have made it: a move
                # recorded would put the old count back at every replay.
                if mode is not None:
                    mode.recording = False
                try:
                    state["step"] = step.to(p.device)
                finally:
                    if mode is not None:
                        mode.recording = True


def _health_check_builder(original: Any) -> Any:
    """Optimizer._accelerator_graph_capture_health_check during a capture.
    Told the truth, torch's check finds no CUDA here and passes, and the
    step then fails reading its step count back.  As on CUDA: a step
    captured eagerly needs capturable=True; a step inside a
    torch.compile'd function is traced as capturable, which the capture
    (running that function eagerly) does by setting the flag."""
    @functools.wraps(original)
    def _accelerator_graph_capture_health_check(self: Any) -> None:
        if capturing() and not torch.compiler.is_compiling():
            groups = [g for g in self.param_groups
                      if "capturable" in g and not g["capturable"]]
            if groups and _under_compile():
                _make_capturable(self, groups)
                _tdcore.record(f"{type(self).__name__}.step", "emulated",
                               "capturable=False",
                               "capturable=True (compiled, captured)")
            elif groups:
                raise RuntimeError(
                    "Attempting CUDA graph capture of step() for an instance "
                    f"of {type(self).__name__} but param_groups' capturable "
                    "is False.")
        original(self)
    return _accelerator_graph_capture_health_check


def patches() -> List[Any]:
    from ._patches import Patch
    from ._masquerade import cuda_emulated
    if not cuda_emulated():
        return []
    table = []
    check = _torch_compat.get("optim_capture_check")
    if check is not None:
        table.append(Patch(torch.optim.Optimizer, check.__name__,
                           _health_check_builder))
    for owner in (torch.cuda, _torch_graphs):
        table += [
            Patch(owner, "CUDAGraph", lambda orig: CUDAGraph),
            Patch(owner, "is_current_stream_capturing",
                  lambda orig: is_current_stream_capturing),
            Patch(owner, "graph_pool_handle", lambda orig: graph_pool_handle),
            Patch(owner, "graph", lambda orig: graph),
        ]
    return table
