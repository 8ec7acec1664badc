"""DataLoader worker processes stay on the CPU; batches go where host
requests go.

A worker is a child process that only prepares host data; MPS and CUDA
contexts do not survive ``fork`` and a worker that allocates on the
accelerator competes with the training process for it.  So TorchDevice turns
the CPU override on in every worker before the user's dataset code runs:
factories without a device (or with "cpu") stay on the host there, whatever
the mode.  The loop function torch starts workers with is replaced by one
that does this and then runs torch's own; it is a module-level function, so
``spawn`` and ``forkserver`` workers pickle it by reference (and importing
it there enables TorchDevice in the child, with the parent's environment).

Batches: torch collates them on the host (its own code, never promoted),
so in mode "accelerate", where the program's host requests land on the
accelerator, a batch would be the one host tensor among accelerator ones:
`pred.cpu() == labels` fails.  So the loader's iterator hands them out
where a device-less request goes now (the accelerator in "accelerate",
unless the CPU override is on; the host otherwise), as host tensors for
the program (a later `.cuda()` copies, as on CUDA).  Containers torch's
pytree knows (tuples, lists, dicts, named tuples) are walked; other
objects are left as they are (docs/policy.md, "Real programs under each
mode").

Pinned memory: on the cpu profile there is nothing to pin, so
``Tensor.pin_memory`` is the identity and ``is_pinned`` is False (the core's
PIN_MEMORY wrapper), ``.cuda(non_blocking=True)`` is an ordinary redirected
move, and the DataLoader, which asks torch.accelerator as torch's own code
(told the truth), does not pin either: ``pin_memory=True`` behaves the same
at every level.  torch's warning that "no accelerator is found" would
contradict what the program was told (CUDA is available), so while
TorchDevice is enabled on that profile that one warning is filtered
(docs/compile-checkpoints-distributed.md).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import _tdcore, _torch_compat

# torch's loop, found when the patch table is built.
_original_loop: Any = None


def worker_loop(*args: Any, **kwargs: Any) -> Any:
    """torch.utils.data's worker loop, with the CPU override on, and the
    dataset's tensors that mode "accelerate" put on the accelerator brought
    back to the host the worker computes on."""
    target = _accelerator_target()
    _tdcore.set_cpu_override(True)
    assert _original_loop is not None    # only installed when found
    if target is not None:
        dataset = kwargs["dataset"] if "dataset" in kwargs else \
            args[1] if len(args) > 1 else None
        if dataset is not None:
            _to_host(dataset, target.type, 0, set(), {})
    return _original_loop(*args, **kwargs)


# How deep into a dataset's attributes, containers and nested datasets
# (Subset, ConcatDataset, a user's wrapper) the worker looks for tensors.
_DEPTH = 6


def _to_host(obj: Any, device_type: str, depth: int, seen: Set[int],
             copies: Dict[int, Any]) -> Any:
    """`obj` with every tensor on `device_type` replaced by a host copy:
    tensors and the containers holding them are rebuilt, other objects are
    changed in place (the worker's own copy of the dataset: the training
    process's is untouched).  A Dataset built in the training process holds
    tensors made without a device, which "accelerate" placed on the
    accelerator; the program wrote them as host tensors and the worker, on
    the host, combines them with host tensors.  Modules, and what cannot be
    moved (a device a forked child cannot use), are left as they are."""
    import torch
    if isinstance(obj, torch.Tensor):
        if obj.device.type != device_type:
            return obj
        if id(obj) not in copies:      # one tensor held twice: one copy
            try:
                copies[id(obj)] = (_original_to or torch.Tensor.to)(obj, "cpu")
            except RuntimeError:
                copies[id(obj)] = obj
        return copies[id(obj)]
    if depth >= _DEPTH or id(obj) in seen or isinstance(
            obj, (str, bytes, int, float, bool, type(None), torch.nn.Module,
                  type)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            moved = _to_host(item, device_type, depth + 1, seen, copies)
            if moved is not item:
                obj[i] = moved
    elif isinstance(obj, tuple):
        items = [_to_host(x, device_type, depth + 1, seen, copies)
                 for x in obj]
        if any(a is not b for a, b in zip(items, obj)):
            try:
                return type(obj)(*items) if hasattr(obj, "_fields") \
                    else type(obj)(items)
            except TypeError:       # a tuple type built some other way
                return obj
    elif isinstance(obj, dict):
        for key, value in list(obj.items()):
            moved = _to_host(value, device_type, depth + 1, seen, copies)
            if moved is not value:
                obj[key] = moved
    else:
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            _to_host(attrs, device_type, depth, seen, copies)
    return obj


def _accelerator_target() -> Any:
    """The accelerator device-less requests go to now (mode "accelerate",
    the CPU override off), else None.  meta: a stand-in holds no data."""
    from . import _patches
    if _tdcore.settings()["mode"] != "accelerate":
        return None
    target = _patches.resolve_device(None)
    return None if target.type in ("cpu", "meta") else target


def _placer() -> Optional[Callable[[Any], Any]]:
    """The function that moves a batch's host tensors where a device-less
    request goes now, or None when that is the host."""
    target = _accelerator_target()
    if target is None:
        return None
    import torch
    tree_map = _torch_compat.get("pytree_tree_map")
    if tree_map is None:
        return None
    # The public Tensor.to, with the device object torch made (no request
    # of the program's, so the batch stays a host tensor for the program),
    # applies the float64 rule where the device has none: float64 batches
    # arrive as float32, or stop with the policy's error, at the program's
    # line (docs/policy.md, "float64 on MPS").
    to = torch.Tensor.to

    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.device.type == "cpu":
            return to(x, target, non_blocking=x.is_pinned())
        return x
    return lambda batch: tree_map(move, batch)


# torch's Tensor.to, for the workers' host copies of the dataset.
_original_to: Any = None


def make_next(original: Any) -> Any:
    def __next__(self: Any) -> Any:
        batch = original(self)
        place = _placer()
        return batch if place is None else place(batch)
    __next__.__wrapped__ = original  # type: ignore[attr-defined]
    __next__.__qualname__ = getattr(original, "__qualname__", "__next__")
    __next__.__name__ = "__next__"
    return __next__


def patches() -> List[Any]:
    from ._patches import Patch
    found: List[Any] = []
    worker = _torch_compat.get("worker_loop_module")
    if worker is not None and _torch_compat.has("worker_loop"):
        def build(original: Any) -> Any:
            global _original_loop
            _original_loop = original
            worker_loop.__wrapped__ = original  # type: ignore[attr-defined]
            return worker_loop
        found.append(Patch(worker, "_worker_loop", build))
    iterator = _torch_compat.get("BaseDataLoaderIter")
    # Both are needed to place batches: asked for together, so that a
    # missing one is reported when TorchDevice is enabled.
    if iterator is not None and _torch_compat.has("pytree_tree_map"):
        found.append(Patch(iterator, "__next__", make_next))
    return found


# The one torch warning that contradicts the announced device, by message
# and by the module that issues it (warnings.filters entry, or None).
_PIN_MESSAGE = r"'pin_memory' argument is set as true but no accelerator"
_PIN_MODULE = r"torch\.utils\.data\.dataloader\Z"
_pin_filter: Optional[Tuple[Any, ...]] = None


def on_apply() -> None:
    """Filters torch's "no accelerator is found" pinning warning on the cpu
    profile (MPS and CUDA have an accelerator: torch's messages stay), and
    finds torch's Tensor.to for placing batches."""
    global _pin_filter, _original_to
    from . import _patches
    _original_to = _patches._originals.get("tensor_to")
    if _pin_filter is not None or _tdcore.settings()["profile"] != "cpu":
        return
    warnings.filterwarnings("ignore", message=_PIN_MESSAGE,
                            category=UserWarning, module=_PIN_MODULE)
    _pin_filter = warnings.filters[0]


def on_restore() -> None:
    global _pin_filter
    if _pin_filter is None:
        return
    try:
        warnings.filters.remove(_pin_filter)
        warnings._filters_mutated()   # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        pass    # the application reset the filters itself
    _pin_filter = None
