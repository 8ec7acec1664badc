"""DTensor's random operators on a mesh whose "cuda" lands elsewhere.

On CUDA, torch draws the numbers of a sharded DTensor (``nn.init`` of a
sharded parameter, dropout on a DTensor, ``torch.distributed.tensor.rand``)
from CUDA's counter-based generator: each rank moves the generator's offset
to its shard's place in one draw of the whole tensor, so the whole DTensor
does not depend on how it is sharded.  The host's and MPS's generators
have no offset to move, so where a "cuda" mesh lands there torch stops with
"OffsetBasedRNGTracker instantiation requires the presence of cuda device".
Drawing each shard from each rank's own generator instead (what torch does
on a CPU mesh) would repeat the same numbers in every shard: a computation
CUDA does not make.

So on every profile but cuda, a mesh whose device type is redirected gets
TorchDevice's tracker (a subclass of torch's, put in its place once
``torch.distributed.tensor`` is imported): every rank draws the *whole*
tensor from the generator "cuda" code draws from, synchronised from rank 0
as torch synchronises CUDA's, and keeps its own shard.  The whole DTensor
then equals the same draw made on one device, at any parallelism, and every
rank's generator advances alike.  The price is memory: for the duration of
the operator each rank holds the whole tensor and an index of it
(docs/compile-checkpoints-distributed.md, "DTensor").
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch

from . import _imports, _tdcore, _torch_compat

_log = logging.getLogger("TorchDevice")
_DTENSOR = "torch.distributed.tensor"
_FAILED = ("could not give DTensor's random operators a generator where "
           "\"cuda\" lands; they stop where torch's do")
# Device types whose requests TorchDevice sends elsewhere (a mesh of the
# profile's own type is torch's to handle).
_REDIRECTABLE = ("cuda", "mps")

_lock = threading.Lock()
_torch_tracker: Optional[type] = None    # torch's class while ours stands in
# The target generator's seed when TorchDevice was first enabled: the one
# the process started with, unless the program seeded before.
_startup_seed: Optional[int] = None


def _lands_elsewhere(device_type: str) -> bool:
    return (device_type in _REDIRECTABLE
            and device_type != _tdcore.settings()["profile"])


def _generator() -> torch.Generator:
    """The generator "cuda" code draws from on the device really used."""
    from . import _masquerade
    found = _masquerade._target_generator(_tdcore.settings()["profile"])
    return found if found is not None else torch.default_generator


def _positions(spec: Any, device: torch.device) -> torch.Tensor:
    """Where the rank's shard of `spec` lies in the whole tensor: the flat
    index of each of its elements, in the shard's shape.  torch's own
    sharding computes it (any placement, uneven shards included); a partial
    placement holds the whole tensor, as torch draws it."""
    from torch.distributed.tensor import Replicate, distribute_tensor
    placements = [Replicate() if p.is_partial() else p
                  for p in spec.placements]
    index = torch.arange(math.prod(spec.shape), device=device)
    whole = index.view(tuple(spec.shape))
    # src_data_rank=None: each rank shards its own copy, no communication.
    return distribute_tensor(whole, spec.mesh, placements,
                             src_data_rank=None).to_local().to(device)


def _wrong_shape(func: Any, shape: Sequence[int], spec: Any) -> RuntimeError:
    return RuntimeError(
        f"TorchDevice: {func} inside a DTensor random operator works on "
        f"shape {tuple(shape)}, which is not this rank's shard of the "
        f"DTensor of shape {tuple(spec.shape)} ({list(spec.placements)}); "
        f"drawing it per rank would not be CUDA's computation")


class _Draw:
    """One random operator drawn whole and cut to the rank's shard."""

    def __init__(self, spec: Any, user: Optional[torch.Generator]) -> None:
        self.spec = spec
        self.user = user
        self.pos: Optional[torch.Tensor] = None

    def _pos(self, device: torch.device) -> torch.Tensor:
        if self.pos is None or self.pos.device != device:
            self.pos = _positions(self.spec, device)
        return self.pos

    def run(self, func: Any, args: Tuple[Any, ...],
            kwargs: Dict[str, Any]) -> Any:
        first, rest = args[0], args[1:]
        out = kwargs.pop("out", None)
        in_place = _writes_first(func)
        if isinstance(first, torch.Tensor):
            pos = self._pos(first.device)
            if tuple(first.shape) != tuple(pos.shape):
                raise _wrong_shape(func, first.shape, self.spec)
            if in_place:
                # normal_, uniform_, bernoulli_(p)...: the draw overwrites
                # the values, none is read.
                whole_first: Any = first.new_empty(tuple(self.spec.shape))
            else:
                # The shard's values at their places (what dropout or
                # bernoulli(p) reads); the host's kernels draw the same
                # numbers for an element whatever the values around it.
                whole_first = first.new_zeros(tuple(self.spec.shape))
                whole_first.view(-1).index_copy_(0, pos.reshape(-1),
                                                 first.reshape(-1))
        else:
            device = kwargs.get("device") or torch.device("cpu")
            if tuple(first) != tuple(self._pos(device).shape):
                raise _wrong_shape(func, first, self.spec)
            whole_first = list(self.spec.shape)
        if out is not None:
            kwargs["out"] = out.new_empty(tuple(self.spec.shape))
        result = self._call(func, (whole_first, *rest), kwargs)
        if in_place or out is not None:
            target = first if out is None else out
            source = whole_first if out is None else kwargs["out"]
            target.copy_(self._cut(func, source, target.device))
            return target
        tensors = result if isinstance(result, tuple) else (result,)
        device = next(t.device for t in tensors
                      if isinstance(t, torch.Tensor))
        cut = tuple(self._cut(func, t, device) for t in tensors)
        return cut if isinstance(result, tuple) else cut[0]

    def _cut(self, func: Any, whole: Any, device: torch.device) -> Any:
        """The rank's shard of an operator's whole result."""
        if not isinstance(whole, torch.Tensor):
            return whole
        if tuple(whole.shape) != tuple(self.spec.shape):
            raise _wrong_shape(func, whole.shape, self.spec)
        pos = self._pos(device)
        return whole.reshape(-1).index_select(0, pos.reshape(-1)).view(
            pos.shape)

    def _call(self, func: Any, args: Tuple[Any, ...],
              kwargs: Dict[str, Any]) -> Any:
        if self.user is None:
            return func(*args, **kwargs)
        # The program's own generator, as torch's tracker uses it: its
        # state drives the draw and takes the advance back.
        gen = _generator()
        saved = gen.get_state()
        gen.set_state(self.user.get_state())
        try:
            return func(*args, **kwargs)
        finally:
            self.user.set_state(gen.get_state())
            gen.set_state(saved)


def _writes_first(func: Any) -> bool:
    schema = _torch_compat.op_schema(func)
    if schema is None or not schema.arguments:
        return func.overloadpacket.__name__.endswith("_")
    alias = schema.arguments[0].alias_info
    return alias is not None and alias.is_write


def _region_mode(base: type) -> type:
    class WholeDrawMode(base):  # type: ignore[misc, valid-type]
        """Draws every seeded operator of the region whole (see _Draw)."""

        def __init__(self, draw: _Draw, api_type: str) -> None:
            super().__init__()
            self.draw = draw
            self.api_type = api_type

        def __torch_dispatch__(self, func: Any, types: Any,
                               args: Tuple[Any, ...] = (),
                               kwargs: Optional[Dict[str, Any]] = None) -> Any:
            kwargs = dict(kwargs or {})
            if torch.Tag.nondeterministic_seeded not in func.tags:
                return func(*args, **kwargs)
            _tdcore.record(f"DTensor {func.overloadpacket.__name__}",
                           "emulated", self.api_type,
                           "whole tensor drawn, shard kept")
            return self.draw.run(func, args, kwargs)

    return WholeDrawMode


def _tracker_class(torch_tracker: type, mode_base: type) -> type:
    region_mode = _region_mode(mode_base)

    class WholeDrawRNGTracker(torch_tracker):  # type: ignore[misc, valid-type]
        """torch's tracker where the mesh's device type lands elsewhere:
        each random operator is drawn whole on every rank (module
        docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # (device_mesh, run_state_sync=True); torch 2.6 and earlier
            # took the device type itself.
            mesh = args[0] if args else kwargs.get(
                "device_mesh", kwargs.get("device_type", "cuda"))
            mesh_type = mesh if isinstance(mesh, str) else mesh.device_type
            self.whole_draw = _lands_elsewhere(mesh_type)
            if not self.whole_draw:
                super().__init__(*args, **kwargs)
                return
            self.mesh_type = mesh_type
            self.distribute_region_enabled = True
            if kwargs.get("run_state_sync", args[1] if len(args) > 1
                          else True):
                self._sync_from_rank0()

        def _sync_from_rank0(self) -> None:
            gen = _generator()
            mine = gen.get_state()
            state = mine.clone()
            torch.distributed.broadcast(state, 0)
            # A process the program never seeded starts from a random
            # host seed, where every GPU starts from the same fixed one:
            # torch warns only of states the program made differ.
            if (not torch.equal(mine, state)
                    and gen.initial_seed() != _startup_seed):
                _log.warning(
                    "TorchDevice: DTensor's random operators take rank 0's "
                    "generator state, as torch does on CUDA; call "
                    "torch.manual_seed() with the same seed on every rank "
                    "to make this explicit")
            gen.set_state(state)

        def _get_device_state(self) -> torch.Tensor:
            if not self.whole_draw:
                return super()._get_device_state()
            return _generator().get_state()

        def _set_device_state(self, state: torch.Tensor) -> None:
            if not self.whole_draw:
                super()._set_device_state(state)
                return
            _generator().set_state(state.to("cpu"))

        @contextlib.contextmanager
        def _distribute_region(
                self, spec: Any,
                generator: Optional[torch.Generator] = None) -> Iterator[None]:
            if not self.whole_draw:
                with super()._distribute_region(spec, generator):
                    yield
                return
            if not self.distribute_region_enabled:
                yield
                return
            if _tag_missing():
                rank_tag()      # a process group torch.distributed made
            with region_mode(_Draw(spec, generator), self.mesh_type):
                yield

    return WholeDrawRNGTracker


# torch.compiler.config.cache_key_tag before TorchDevice added the rank to
# it (None: not added), and the tag it set.
_tag_before: Optional[str] = None
_tag_ours: Optional[str] = None


def rank_tag() -> None:
    """Adds this rank to the key of torch.compile's caches while the
    tracker stands in and a process group is up.  A compiled draw cuts the
    rank's shard at positions fixed when it was traced; the caches' keys do
    not hold the rank, so ranks sharing a cache folder loaded one rank's
    code and every shard held the same numbers."""
    global _tag_before, _tag_ours
    dist = torch.distributed
    config = _compile_config()
    if config is None or _torch_tracker is None or not (
            dist.is_available() and dist.is_initialized()):
        return
    with _lock:
        current = config.cache_key_tag
        if _tag_ours is None or current != _tag_ours:
            _tag_before = current      # first time, or the program set one
        mine = f"TorchDevice DTensor rank {dist.get_rank()}"
        _tag_ours = f"{_tag_before}|{mine}" if _tag_before else mine
        config.cache_key_tag = _tag_ours


def _compile_config() -> Any:
    """torch.compiler.config where it has the cache key's tag (torch 2.6 and
    later; older releases key no cache by it), else None."""
    config = getattr(torch.compiler, "config", None)
    return config if hasattr(config, "cache_key_tag") else None


def _tag_missing() -> bool:
    config = _compile_config()
    return config is not None and config.cache_key_tag != _tag_ours


def _drop_rank_tag() -> None:
    global _tag_before, _tag_ours
    config = _compile_config()
    if (config is not None and _tag_ours is not None
            and config.cache_key_tag == _tag_ours):
        config.cache_key_tag = _tag_before
    _tag_before = _tag_ours = None


def register() -> bool:
    """Puts TorchDevice's tracker in the place of torch's (once); whether
    it stands there."""
    global _torch_tracker
    module = _torch_compat.get("dtensor_random")
    mode_base = _torch_compat.get("dtensor_dispatch_mode")
    if module is None or mode_base is None:
        return False
    torch_tracker = getattr(module, "OffsetBasedRNGTracker", None)
    if not isinstance(torch_tracker, type):
        return False
    with _lock:
        if _torch_tracker is None:
            _torch_tracker = torch_tracker
            module.OffsetBasedRNGTracker = _tracker_class(torch_tracker,
                                                          mode_base)
    rank_tag()
    return True


def unregister() -> None:
    """torch's tracker back; a tracker of ours already made is dropped, so
    that the next random operator makes torch's."""
    global _torch_tracker
    with _lock:
        if _torch_tracker is None:
            return
        module = _torch_compat.get("dtensor_random")
        if module is not None:
            ours = module.OffsetBasedRNGTracker
            module.OffsetBasedRNGTracker = _torch_tracker
            if isinstance(getattr(module, "_rng_tracker", None), ours):
                setattr(module, "_rng_tracker", None)
        _torch_tracker = None
        _drop_rank_tag()


def on_apply() -> None:
    """Called at the end of _patches.apply()."""
    global _startup_seed
    if _tdcore.settings()["profile"] != "cuda":
        if _startup_seed is None:
            _startup_seed = _generator().initial_seed()
        _imports.after(_DTENSOR, register, _FAILED)


def on_restore() -> None:
    """Called by _patches.restore()."""
    _imports.cancel(_DTENSOR, register)
    unregister()
