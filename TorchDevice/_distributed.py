"""torch.distributed for scripts written for NCCL, where there is no NCCL.

On every profile but cuda; on NVIDIA machines everything is native.
gloo reduces host tensors only: where "cuda" lands on another accelerator
(MPS, ...) the rewrite warns that collectives cannot run there.

* ``init_process_group`` / ``new_group``: the backend "nccl" becomes "gloo"
  (and where "cuda" lands on the host, no backend at all becomes "gloo");
  in the per-device form ("cuda:nccl,cpu:gloo") every NCCL entry becomes
  gloo and the "cuda" entry is folded into "cpu" (tensors that CUDA code
  puts on "cuda" are on the host here), which leaves plain "gloo".  ``device_id=`` (a CUDA ordinal or
  device) is dropped: gloo binds no device.
* ``dist.get_backend()`` answers "gloo", the truth: code that branches on
  the backend (which collectives, which tensor device) must see the one
  that runs.  Code that *asserts* "nccl" has to be edited; see
  docs/compile-checkpoints-distributed.md.
* ``DistributedDataParallel(model, device_ids=[rank], output_device=rank)``:
  the device arguments are dropped (torch rejects them for a CPU module; a
  single-device module needs none).
* ``dist.barrier(device_ids=[...])``: the ids are dropped (they name CUDA
  devices to run NCCL's barrier on).
* ``DistributedDataParallel.register_comm_hook`` with the bfloat16
  compression hook, which torch refuses without CUDA and NCCL 2.10: for a
  model the program put on "cuda" it runs on gloo (which sums bfloat16 as
  NCCL does); a model on the host keeps the refusal.
* ``ReduceOp.PREMUL_SUM(factor)`` (NCCL's own; FSDP2's gradient divide
  factor) in ``all_reduce`` and the ``reduce_scatter`` family: on the gloo
  given for NCCL, SUM of the inputs times the factor, as NCCL computes it;
  gloo the program chose refuses it, as on CUDA.
* The ``reduce_scatter`` family with ``async_op=True``: on the gloo given
  for NCCL, the work's ``get_future()`` answers, as NCCL's does (gloo's
  raises "Work::getFuture not implemented").
* A reduce-scatter's input or an all-gather's output holding the ranks'
  parts stacked, (world size, *part), which NCCL takes as well as their
  concatenation: on the gloo given for NCCL, the concatenation, a view
  (gloo takes no other form).
* ``nn.DataParallel`` is a pass-through: scattering is CUDA's alone, and
  one device runs the module itself.  torch.nn.parallel's ``scatter``,
  ``scatter_kwargs``, ``gather``, ``replicate`` and ``parallel_apply``
  compute what they do over the GPUs shown, on that device.  Where CUDA
  is announced DataParallel still has CUDA's attributes (``device_ids``,
  ``output_device``, ``src_device_obj``, its module moved to "cuda" as
  over one GPU), which subclasses read; the functional ``data_parallel``
  calls the module the same way.
* At exit, a process that runs gloo (given for NCCL, or chosen by the
  program) releases the GIL for a moment before the interpreter finalizes:
  gloo's worker threads end their last collective then
  (TorchDevice/_exit.py).
"""
from __future__ import annotations

import functools
import importlib
import inspect
import logging
import warnings
import weakref
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.distributed as dist

from . import _exit, _patches, _tdcore, _torch_compat

_log = logging.getLogger("TorchDevice")

_NCCL = "nccl"
_GLOO = "gloo"


def _native() -> bool:
    return _tdcore.settings()["profile"] == "cuda"


def _record(api: str, src: Any, dst: Any) -> None:
    _tdcore.record(api, "redirected", str(src), str(dst))


def rewrite_backend(backend: Any) -> Any:
    """The backend string a CUDA script asked for, as it runs here."""
    if backend is None or not isinstance(backend, str) or _native():
        return backend
    text = backend.strip().lower()
    if ":" not in text:
        return _GLOO if text == _NCCL else backend
    entries: List[str] = []
    for item in text.split(","):
        device, _, name = item.strip().partition(":")
        if name == _NCCL:
            name = _GLOO
        if device == "cuda":
            device = "cpu"
        entry = f"{device}:{name}"
        if not any(e.split(":")[0] == device for e in entries):
            entries.append(entry)
    if entries == [f"cpu:{_GLOO}"]:
        return _GLOO                # the same thing, as get_backend() says it
    return ",".join(entries)


# Whether this process was given gloo where it asked for NCCL (or for
# torch's choice, which is NCCL on CUDA), and the groups the program made
# gloo itself: NCCL's own reduction, PREMUL_SUM, is translated for the
# gloo that stands in for NCCL only (below); gloo the program chose
# refuses it, as it does on CUDA.
_gave_gloo = False
_chosen_gloo: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _note_backend(old: Any, new: Any, group: Any) -> None:
    global _gave_gloo
    if not isinstance(new, str) or _GLOO not in new.lower():
        return
    if new != old:
        _gave_gloo = True
    elif isinstance(group, dist.ProcessGroup):
        _chosen_gloo.add(group)


def _stands_in(group: Any) -> bool:
    """Whether `group` (None: the default one) runs the gloo given for
    NCCL, not gloo the program chose."""
    if not _gave_gloo:
        return False
    group = dist.group.WORLD if group is None else group
    return group not in _chosen_gloo and dist.get_backend(group) == _GLOO


def _premul_factor(op: Any, group: Any) -> Any:
    """The factor of a PREMUL_SUM reduction that gloo, standing in for
    NCCL, is asked to run (None for any other)."""
    return op.factor if _stands_in(group) else None


class _WorkWithFuture(dist.Work if dist.is_available() else object):
    """gloo's work for a reduce-scatter has no future ("Work::getFuture
    not implemented"), where NCCL's has one: distributed optimizers
    launch their reduce-scatters with async_op=True and chain on
    get_future().  The future is made when it is asked for, once the
    collective has ended; its value is NCCL's, the list of the output
    tensor.  The host waits for the collective there, where NCCL's future
    would complete later; the numbers are the same.  Once waited for, it
    is completed, as NCCL's is (gloo's reduce-scatter work never says
    so)."""

    def __init__(self, work: Any, output: Any) -> None:
        super().__init__()
        self._work = work
        self._output = output
        self._future: Any = None
        self._done = False

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        ended = self._work.wait(*args, **kwargs)
        self._done = self._done or ended is not False
        return ended

    def is_completed(self) -> bool:
        return self._done or self._work.is_completed()

    def is_success(self) -> bool:
        return self._work.is_success()

    def exception(self) -> Any:
        return self._work.exception()

    def result(self) -> Any:
        return self._work.result()

    def source_rank(self) -> int:
        return self._work.source_rank()

    def synchronize(self) -> None:
        self._work.synchronize()

    def get_future(self) -> Any:
        if self._future is None:
            future = torch.futures.Future()
            try:
                self.wait()
            except Exception as exc:        # the collective's own error
                future.set_exception(exc)
            else:
                future.set_result([self._output])
            self._future = future
        return self._future


def _as_concatenation(api: str, whole: Any, part: Any,
                      group: Any) -> Tuple[Any, Any]:
    """(whole, part) as gloo takes them.  A reduce-scatter's input and an
    all-gather's output hold every rank's part: NCCL takes them stacked,
    (world size, *part's shape), as torch documents, or concatenated along
    the first dimension; gloo takes only the concatenation ("Check failed:
    outputShape[0] * worldSize == inputShape[0]").  On the gloo given for
    NCCL a stacked tensor becomes its concatenation, a view, so that what
    gloo writes into it lands in the program's tensor (a part without
    dimensions: both one-dimensional)."""
    if (not isinstance(whole, torch.Tensor)
            or not isinstance(part, torch.Tensor)
            or whole.dim() != part.dim() + 1 or not whole.is_contiguous()
            or not part.is_contiguous()
            or tuple(whole.shape[1:]) != tuple(part.shape)
            or not _stands_in(group)
            or whole.shape[0] != dist.get_world_size(group)):
        return whole, part
    _tdcore.record(api, "emulated", "parts stacked",
                   "parts concatenated")
    if part.dim() == 0:
        return whole, part.view(1)
    return whole.flatten(0, 1), part


def _all_gather_builder(api: str) -> Callable[[Any], Any]:
    """all_gather_into_tensor(output, input, ...) and its aliases: an
    output of the parts stacked, on the gloo given for NCCL
    (_as_concatenation)."""
    def build(original: Any) -> Any:
        signature = inspect.signature(original)
        output, input_ = list(signature.parameters)[:2]

        @functools.wraps(original)
        def all_gather(*args: Any, **kwargs: Any) -> Any:
            if not _gave_gloo:
                return original(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            whole, part = _as_concatenation(
                api, bound.arguments.get(output), bound.arguments.get(input_),
                bound.arguments.get("group"))
            if whole is bound.arguments.get(output) and \
                    part is bound.arguments.get(input_):
                return original(*args, **kwargs)
            bound.arguments[output], bound.arguments[input_] = whole, part
            return original(*bound.args, **bound.kwargs)
        return all_gather
    return build


def _reduction_builder(api: str, position: int, data: str,
                       scale: Callable[[Any, Any], Any],
                       no_future: bool = False,
                       stacked: bool = False) -> Callable[[Any], Any]:
    """A reduction taking op at `position` (or op=): PREMUL_SUM becomes
    SUM of the inputs multiplied by its factor, which is NCCL's
    definition; `scale(value, factor)` is the argument named `data` so
    scaled.  `no_future`: gloo's work for it has no future, and the one
    given for NCCL gets one (_WorkWithFuture).  `stacked`: a
    reduce-scatter of one tensor (output, input), whose input may hold the
    parts stacked (_as_concatenation)."""
    def build(original: Any) -> Any:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def reduction(*args: Any, **kwargs: Any) -> Any:
            op = kwargs["op"] if "op" in kwargs else (
                args[position] if len(args) > position else None)
            premul = (getattr(op, "op", None)
                      == dist.ReduceOp.RedOpType.PREMUL_SUM)
            if not premul and not (no_future and _gave_gloo):
                return original(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            group = bound.arguments.get("group")
            output = bound.arguments.get("output")
            if stacked:
                bound.arguments["input"], bound.arguments["output"] = (
                    _as_concatenation(api, bound.arguments["input"], output,
                                      group))
            if premul:
                factor = _premul_factor(op, group)
                if factor is not None:
                    _tdcore.record(api, "emulated", "ReduceOp.PREMUL_SUM",
                                   "SUM of the inputs times the factor")
                    bound.arguments[data] = scale(bound.arguments[data],
                                                  factor)
                    bound.arguments["op"] = dist.ReduceOp.SUM
            work = original(*bound.args, **bound.kwargs)
            if (no_future and work is not None
                    and bound.arguments.get("async_op")
                    and _stands_in(group)):
                return _WorkWithFuture(work, output)
            return work
        return reduction
    return build


def _scale_in_place(tensor: Any, factor: Any) -> Any:
    # all_reduce(tensor, ...): the tensor is overwritten by the result;
    # reduce(tensor, dst, ...): the same on dst, and torch leaves the
    # others' tensor unspecified.
    return tensor.mul_(factor)


def _scale_each_in_place(tensors: Any, factor: Any) -> Any:
    # all_reduce_coalesced(tensors, ...)
    return [t.mul_(factor) for t in tensors]


def _scale(tensor: Any, factor: Any) -> Any:
    # reduce_scatter_single(output, input, ...): the input is left as is.
    return tensor * factor


def _scale_each(tensors: Any, factor: Any) -> Any:
    # reduce_scatter(output, input_list, ...)
    return [t * factor for t in tensors]


def _guard_gloo(backend: Any) -> None:
    """Guards the exit of a process that runs gloo off CUDA, given for
    NCCL or chosen by the program: on CUDA, NCCL has no exit race, so a
    script written for it must not meet gloo's (TorchDevice/_exit.py)."""
    if (not _native() and isinstance(backend, str)
            and _GLOO in backend.lower()):
        _exit.guard(always=True)


def _warn_device_collectives(api: str) -> None:
    """gloo, standing in for NCCL, reduces host (and CUDA) tensors only:
    where "cuda" lands on another accelerator (MPS, ...), tensors there
    cannot take part in collectives, and torch has no backend that can
    (docs/compile-checkpoints-distributed.md)."""
    profile = _tdcore.settings()["profile"]
    if profile in ("cpu", "cuda"):
        return
    from ._patches import device_type_of
    device = device_type_of(profile)
    _log.warning(
        "TorchDevice: %s: gloo stands in for NCCL and reduces host tensors "
        "only; tensors on %s cannot take part in collectives "
        "(DistributedDataParallel, all_reduce).  Run the ranks on the host "
        "with TORCHDEVICE_TARGET=cpu.", api, device)


def _init_builder(api: str) -> Callable[[Any], Any]:
    def build(original: Any) -> Any:
        @functools.wraps(original)
        def init_process_group(backend: Optional[str] = None,
                               *args: Any, **kwargs: Any) -> Any:
            if "backend" in kwargs:
                backend = kwargs.pop("backend")
            new = rewrite_backend(backend)
            if backend is None and _tdcore.settings()["profile"] == "cpu":
                # On CUDA torch would choose NCCL (gloo for host tensors);
                # left to choose here, it asks the machine's accelerator,
                # which "cuda" does not land on (TORCHDEVICE_TARGET=cpu
                # beside MPS or another device), and finds no backend.
                new = _GLOO
            if new != backend:
                _record(api, backend, new)
                _warn_device_collectives(api)
            _guard_gloo(new)
            if (not _native() and kwargs.get("device_id") is not None):
                _record(api, kwargs["device_id"], "no device_id")
                kwargs["device_id"] = None
            result = original(new, *args, **kwargs)
            _note_backend(backend, new, dist.group.WORLD)
            from . import _dtensor_rng
            _dtensor_rng.rank_tag()
            return result
        return init_process_group
    return build


def _new_group_builder(original: Any) -> Any:
    @functools.wraps(original)
    def new_group(*args: Any, **kwargs: Any) -> Any:
        # new_group(ranks=None, timeout=None, backend=None, ...)
        old = new = None
        if "backend" in kwargs:
            old = kwargs["backend"]
            kwargs["backend"] = new = rewrite_backend(old)
        elif len(args) >= 3:
            old = args[2]
            new = rewrite_backend(old)
            args = args[:2] + (new,) + args[3:]
        if new != old:
            _record("torch.distributed.new_group", old, new)
        _guard_gloo(new)
        if not _native() and kwargs.get("device_id") is not None:
            kwargs["device_id"] = None
        group = original(*args, **kwargs)
        _note_backend(old, new, group)
        return group
    return new_group


def _barrier_builder(original: Any) -> Any:
    @functools.wraps(original)
    def barrier(group: Any = dist.GroupMember.WORLD, async_op: bool = False,
                device_ids: Any = None, timeout: Any = None) -> Any:
        if device_ids is not None and not _native():
            _record("torch.distributed.barrier", device_ids, "no device_ids")
            device_ids = None
        # torch before 2.12 has no timeout parameter: passed only when given.
        extra = {} if timeout is None else {"timeout": timeout}
        return original(group, async_op, device_ids, **extra)
    return barrier


def _ddp_init_builder(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self: Any, module: Any, device_ids: Any = None,
                 output_device: Any = None, *args: Any, **kwargs: Any) -> None:
        if (device_ids is not None or output_device is not None) \
                and not _native():
            _record("DistributedDataParallel", device_ids, "no device_ids")
            device_ids = output_device = None
        original(self, module, device_ids, output_device, *args, **kwargs)
    return __init__


# DDP's communication hooks that it refuses without CUDA and NCCL 2.10 (or
# XPU): bfloat16 all-reduce, which gloo computes as NCCL does.
_BF16_HOOKS = ("bf16_compress_hook", "bf16_compress_wrapper_hook")


def _ddp_check_comm_hook_builder(original: Any) -> Any:
    @functools.wraps(original)
    def _check_comm_hook(self: Any, hook: Any) -> Any:
        if (getattr(hook, "__name__", None) in _BF16_HOOKS
                and not _native()
                and _patches.module_on_accelerator(self.module)):
            # torch checks the hook's name against CUDA's build; everything
            # else it checks (a callable of two parameters returning a
            # future) is checked on a stand-in with another name.
            @functools.wraps(hook)
            def stand_in(*args: Any, **kwargs: Any) -> Any:
                return hook(*args, **kwargs)
            stand_in.__name__ = "bf16_compress_on_gloo"
            _tdcore.record("DistributedDataParallel.register_comm_hook",
                           "emulated", _NCCL, _GLOO)
            return original(self, stand_in)
        return original(self, hook)
    return _check_comm_hook


def _dp_device_type_builder(original: Any) -> Any:
    @functools.wraps(original)
    def _get_available_device_type() -> Optional[str]:
        # DataParallel scatters with torch._C._scatter, which only CUDA
        # builds have; everywhere else the one device the program runs on
        # takes the module itself, which is what DataParallel over one GPU
        # computes (torch's own behaviour without a GPU).
        if not _native():
            return None
        return original()
    return _get_available_device_type


def _cuda_announced() -> bool:
    """The program is told CUDA is there (the masquerade, not truthful)."""
    return not _native() and torch.cuda.is_available()


def _index(device: Any) -> int:
    """A DataParallel device id: an int, or a device's index (0 if none)."""
    if isinstance(device, int):
        return device
    index = torch.device(device).index
    return 0 if index is None else index


def _dp_init_builder(original: Any) -> Any:
    """On a profile without CUDA torch's DataParallel finds no device type
    and keeps device_ids empty; where CUDA is announced it gets what it has
    over the GPUs shown (docs/compile-checkpoints-distributed.md)."""
    @functools.wraps(original)
    def __init__(self: Any, module: Any, device_ids: Any = None,
                 output_device: Any = None, dim: int = 0) -> None:
        original(self, module, device_ids, output_device, dim)
        if self.device_ids or not _cuda_announced():
            return
        if device_ids is None:
            device_ids = list(range(torch.cuda.device_count()))
        if not device_ids:
            return
        ids = [_index(d) for d in device_ids]
        self.dim = dim
        self.device_ids = ids
        self.output_device = _index(ids[0] if output_device is None
                                    else output_device)
        self.src_device_obj = torch.device("cuda", ids[0])
        if len(ids) == 1:
            self.module.to(self.src_device_obj)
    return __init__


def _dp_forward_builder(original: Any) -> Any:
    @functools.wraps(original)
    def forward(self: Any, *inputs: Any, **kwargs: Any) -> Any:
        if _native():
            return original(self, *inputs, **kwargs)
        with torch.autograd.profiler.record_function("DataParallel.forward"):
            return self.module(*inputs, **kwargs)
    return forward


# DataParallel's own steps, which subclasses call from their forward
# (GPyTorch's MultiDeviceKernel).  torch's reach torch._C._scatter,
# comm.broadcast_coalesced and comm.gather, which only CUDA builds have;
# these compute what they compute over the GPUs shown, on the one device:
# the same chunks, one module for every replica (replicas share their
# parameters' values, and their gradients reach the module's own), the
# modules run in turn, the outputs concatenated.


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_asdict") \
        and hasattr(obj, "_fields")


def _scatter(obj: Any, device_ids: List[int], dim: int) -> List[Any]:
    """torch.nn.parallel.scatter's chunks of obj, one per device at most."""
    if isinstance(obj, torch.Tensor):
        return [chunk.to(torch.device("cuda", i))
                for chunk, i in zip(obj.chunk(len(device_ids), dim),
                                    device_ids)]
    if _is_namedtuple(obj):
        return [type(obj)(*args)
                for args in zip(*(_scatter(o, device_ids, dim)
                                  for o in obj))]
    if isinstance(obj, tuple) and obj:
        return list(zip(*(_scatter(o, device_ids, dim) for o in obj)))
    if isinstance(obj, list) and obj:
        return [list(i) for i in zip(*(_scatter(o, device_ids, dim)
                                       for o in obj))]
    if isinstance(obj, dict) and obj:
        return [type(obj)(i) for i in zip(*(_scatter(item, device_ids, dim)
                                            for item in obj.items()))]
    return [obj for _ in device_ids]


def _scatter_kwargs(inputs: Any, kwargs: Any, device_ids: Any,
                    dim: int) -> Any:
    """torch.nn.parallel.scatter_kwargs's answer, on the one device."""
    ids = [_index(d) for d in device_ids]
    args = _scatter(inputs, ids, dim) if inputs else []
    kws = _scatter(kwargs, ids, dim) if kwargs else []
    args += [() for _ in range(len(kws) - len(args))]
    kws += [{} for _ in range(len(args) - len(kws))]
    return tuple(args), tuple(kws)


def _parallel_apply(modules: Any, inputs: Any, kwargs: Any) -> List[Any]:
    """The modules run in turn (torch runs one thread per GPU)."""
    if len(modules) != len(inputs):
        raise AssertionError(
            f"The number of modules {len(modules)} is not equal to "
            f"the number of inputs {len(inputs)}")
    if kwargs is None:
        kwargs = ({},) * len(modules)
    outputs = []
    for module, args, kws in zip(modules, inputs, kwargs):
        if not isinstance(args, (list, tuple)):
            args = (args,)
        outputs.append(module(*args, **kws))
    return outputs


def _dp_scatter_builder(original: Any) -> Any:
    @functools.wraps(original)
    def scatter(self: Any, inputs: Any, kwargs: Any,
                device_ids: Any) -> Any:
        if _native() or not device_ids:
            return original(self, inputs, kwargs, device_ids)
        return _scatter_kwargs(inputs, kwargs, device_ids, self.dim)
    return scatter


def _dp_replicate_builder(original: Any) -> Any:
    @functools.wraps(original)
    def replicate(self: Any, module: Any, device_ids: Any) -> Any:
        if _native():
            return original(self, module, device_ids)
        return [module for _ in device_ids]
    return replicate


def _dp_parallel_apply_builder(original: Any) -> Any:
    @functools.wraps(original)
    def parallel_apply(self: Any, replicas: Any, inputs: Any,
                       kwargs: Any) -> Any:
        if _native():
            return original(self, replicas, inputs, kwargs)
        return _parallel_apply(replicas, inputs, kwargs)
    return parallel_apply


# The same steps as torch.nn.parallel's functions, which code that splits
# its own batches calls (captum over a DataParallel model's device_ids);
# each takes torch's arguments.
def _unless_native(ours: Callable[..., Any]) -> Callable[[Any], Any]:
    """A builder: torch's function on profile cuda, `ours` elsewhere."""
    def build(original: Any) -> Any:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            if _native():
                return original(*args, **kwargs)
            return ours(*args, **kwargs)
        return call
    return build


def _fn_scatter(inputs: Any, target_gpus: Any, dim: int = 0) -> Any:
    return _scatter(inputs, [_index(d) for d in target_gpus], dim)


def _fn_scatter_kwargs(inputs: Any, kwargs: Any, target_gpus: Any,
                       dim: int = 0) -> Any:
    return _scatter_kwargs(inputs, kwargs, target_gpus, dim)


def _fn_gather(outputs: Any, target_device: Any, dim: int = 0) -> Any:
    return _gather(list(outputs), dim)


def _fn_replicate(network: Any, devices: Any, detach: bool = False) -> Any:
    return [network for _ in devices]


def _fn_parallel_apply(modules: Any, inputs: Any, kwargs_tup: Any = None,
                       devices: Any = None) -> Any:
    return _parallel_apply(modules, inputs, kwargs_tup)


def _gather(outputs: List[Any], dim: int) -> Any:
    out = outputs[0]
    if isinstance(out, torch.Tensor):
        if dim == 0 and all(t.dim() == 0 for t in outputs):
            warnings.warn("Was asked to gather along dimension 0, but all "
                          "input tensors were scalars; will instead "
                          "unsqueeze and return a vector.")
            outputs = [t.view(1) for t in outputs]
        return torch.cat(outputs, dim)
    if out is None:
        return None
    if isinstance(out, dict):
        if not all(len(out) == len(d) for d in outputs):
            raise ValueError("All dicts must have the same number of keys")
        return type(out)((k, _gather([d[k] for d in outputs], dim))
                         for k in out)
    if _is_namedtuple(out):
        return type(out)._make(_gather(list(o), dim) for o in zip(*outputs))
    return type(out)(_gather(list(o), dim) for o in zip(*outputs))


def _dp_gather_builder(original: Any) -> Any:
    @functools.wraps(original)
    def gather(self: Any, outputs: Any, output_device: Any) -> Any:
        if _native():
            return original(self, outputs, output_device)
        return _gather(list(outputs), self.dim)
    return gather


def _data_parallel_builder(original: Any) -> Any:
    """torch.nn.parallel.data_parallel(module, inputs, ...): the module on
    the inputs, as over one GPU (its device arguments name CUDA's)."""
    @functools.wraps(original)
    def data_parallel(module: Any, inputs: Any, device_ids: Any = None,
                      output_device: Any = None, dim: int = 0,
                      module_kwargs: Any = None) -> Any:
        if _native():
            return original(module, inputs, device_ids, output_device, dim,
                            module_kwargs)
        if not isinstance(inputs, tuple):
            inputs = (inputs,) if inputs is not None else ()
        return module(*inputs, **(module_kwargs or {}))
    return data_parallel


def patches() -> List[Any]:
    from ._patches import Patch
    # `import torch.nn.parallel.data_parallel as m` would give the function
    # torch.nn.parallel exports under the module's name, not the module.
    data_parallel = importlib.import_module("torch.nn.parallel.data_parallel")

    # DataParallel needs no process group: a torch built without
    # torch.distributed still has it.
    table: List[Any] = [
        Patch(data_parallel, "_get_available_device_type",
              _dp_device_type_builder),
        Patch(torch.nn.DataParallel, "__init__", _dp_init_builder),
        Patch(torch.nn.DataParallel, "forward", _dp_forward_builder),
        Patch(torch.nn.DataParallel, "scatter", _dp_scatter_builder),
        Patch(torch.nn.DataParallel, "replicate", _dp_replicate_builder),
        Patch(torch.nn.DataParallel, "parallel_apply",
              _dp_parallel_apply_builder),
        Patch(torch.nn.DataParallel, "gather", _dp_gather_builder),
        Patch(data_parallel, "data_parallel", _data_parallel_builder),
        Patch(torch.nn.parallel, "data_parallel", _data_parallel_builder),
    ]
    # torch.nn.parallel's functions, each where it is defined and where the
    # package exports it (the package's name shadows the module's).
    for module, name, ours in (
            ("scatter_gather", "scatter", _fn_scatter),
            ("scatter_gather", "scatter_kwargs", _fn_scatter_kwargs),
            ("scatter_gather", "gather", _fn_gather),
            ("replicate", "replicate", _fn_replicate),
            ("parallel_apply", "parallel_apply", _fn_parallel_apply)):
        home = importlib.import_module(f"torch.nn.parallel.{module}")
        builder = _unless_native(ours)
        table.append(Patch(home, name, builder))
        if getattr(torch.nn.parallel, name, None) is getattr(home, name):
            table.append(Patch(torch.nn.parallel, name, builder))
    if not dist.is_available():
        return table
    import torch.distributed.distributed_c10d as c10d
    from torch.nn.parallel import DistributedDataParallel

    for owner in (dist, c10d):
        table += [
            Patch(owner, "init_process_group",
                  _init_builder("torch.distributed.init_process_group")),
            Patch(owner, "new_group", _new_group_builder),
            Patch(owner, "barrier", _barrier_builder),
        ]
        for name, position, data, scale, no_future in (
                ("all_reduce", 1, "tensor", _scale_in_place, False),
                ("all_reduce_coalesced", 1, "tensors", _scale_each_in_place,
                 False),
                ("reduce", 2, "tensor", _scale_in_place, False),
                ("reduce_scatter", 2, "input_list", _scale_each, True),
                ("reduce_scatter_single", 2, "input", _scale, True),
                ("reduce_scatter_tensor", 2, "input", _scale, True)):
            if hasattr(owner, name):
                table.append(Patch(owner, name, _reduction_builder(
                    f"torch.distributed.{name}", position, data, scale,
                    no_future, stacked=data == "input")))
        # The single-tensor all-gathers; the older aliases (_all_gather_base)
        # call one of these.
        for name in ("all_gather_single", "all_gather_into_tensor"):
            if hasattr(owner, name):
                table.append(Patch(owner, name, _all_gather_builder(
                    f"torch.distributed.{name}")))
    # DeviceMesh (init_device_mesh) starts the default group with the name
    # it imported from distributed_c10d.
    device_mesh = importlib.import_module("torch.distributed.device_mesh")
    if getattr(device_mesh, "init_process_group", None) is not None:
        table.append(Patch(device_mesh, "init_process_group",
                           _init_builder("torch.distributed.init_process_group")))
    table.append(Patch(DistributedDataParallel, "__init__", _ddp_init_builder))
    if _torch_compat.get("ddp_check_comm_hook") is not None:
        table.append(Patch(DistributedDataParallel, "_check_comm_hook",
                           _ddp_check_comm_hook_builder))
    return table
