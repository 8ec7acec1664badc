"""Streams and events: which torch attributes get the C types of
``csrc/streams/stream.c`` / ``csrc/streams/event.c``, and the torch objects their backends
are handed.

* profile cpu, mps or accelerator: ``torch.cuda.Stream``,
  ``ExternalStream``, ``Event``, ``StreamContext``, ``stream``,
  ``current_stream``, ``default_stream``, ``set_stream``, ``synchronize``,
  ``get_stream_from_external`` and ``Tensor.record_stream`` are replaced;
  the backend is CPU (host clock), Metal (``torch.mps.Event`` /
  ``torch.mps.synchronize``, or the accelerator's ``torch.Event`` where its
  capability record is MPS's) or device (the accelerator's ``torch.Event``).
* profile cuda: ``torch.mps.Event`` becomes the same C type with the CUDA
  backend (native ``torch.cuda.Event`` underneath), and ``torch.mps``'s
  stream functions, where the installed torch has them, are torch.cuda's.
* profile cpu with MPS announced (``TORCHDEVICE_ANNOUNCE=mps``):
  ``torch.mps.Event`` is the C type with the CPU backend; ``torch.cuda`` is
  left as torch has it.
* profile cpu or accelerator with CUDA announced: as the first case, and
  ``torch.mps.Event`` (and ``torch.mps``'s stream functions) too, so an
  MPS-written program that times without asking for MPS runs.
* every profile: ``torch.Stream("cuda")`` / ``torch.Event("cuda")`` give our
  objects where CUDA is emulated (and ``"mps"`` on profile cpu), and
  ``"mps"`` means the GPU on profile cuda (tp_new hooks in
  ``csrc/streams/stream_generic.c``).

Which set of attributes is replaced follows the profile in force when
``enable()`` runs; the backend of each new stream or event follows the
profile in force when it is made.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, List, Optional, Tuple

import torch

from . import _tdcore

# torch's own objects, captured before anything is patched.
_CUDA_STREAM = torch.cuda.streams.Stream
_CUDA_EXTERNAL = torch.cuda.streams.ExternalStream
_CUDA_EVENT = torch.cuda.streams.Event
_CUDA_SYNCHRONIZE = torch.cuda.synchronize
_MPS_EVENT = torch.mps.Event
_MPS_SYNCHRONIZE = torch.mps.synchronize
_TORCH_EVENT = getattr(torch, "Event", None)
# torch's own: setup() may run again while ours is installed (tests hand
# simulated backends), and ours calls the one it was handed.
_RECORD_STREAM = torch.Tensor.record_stream

# torch.mps stream API of newer torch releases (absent from 2.13).
_MPS_STREAM_NAMES = ("Stream", "StreamContext", "stream", "current_stream",
                     "default_stream", "set_stream")

Ops = Tuple[Callable[..., Any], ...]


def ops_of(event_cls: Any, synchronize: Callable[[], Any]) -> Ops:
    """The ops tuple a backend is handed: the event class, the device-wide
    synchronize, and the class's methods taken unbound (order fixed by
    TD_OPS_* in csrc/streams/streams.h)."""
    return (event_cls, synchronize, event_cls.record, event_cls.wait,
            event_cls.query, event_cls.synchronize, event_cls.elapsed_time)


def device_ops(device: torch.device, synchronize: Callable[[], Any]) -> Ops:
    """The ops tuple of a generic accelerator: its torch.Event (made with
    CUDA's keywords, or torch.mps's one positional enable_timing, which is
    how the Metal backend calls it) and torch.Event's methods."""
    event_type = _TORCH_EVENT

    def event(enable_timing: bool = False, blocking: bool = False,
              interprocess: bool = False) -> Any:
        return event_type(device=device, enable_timing=enable_timing,
                          blocking=blocking, interprocess=interprocess)
    return (event, synchronize, event_type.record, event_type.wait,
            event_type.query, event_type.synchronize,
            event_type.elapsed_time)


def _accelerator_ops() -> Tuple[Optional[Ops], Optional[Ops]]:
    """(metal_ops, device_ops) of the generic accelerator: its capability
    record chooses the backend (MPS's: one queue, Metal's code)."""
    from . import _capabilities, _masquerade, _patches
    device = _patches.accelerator_device()
    if device is None or _TORCH_EVENT is None:
        return None, None
    module = _masquerade._device_module()
    synchronize = getattr(module, "synchronize", None) \
        or torch.accelerator.synchronize
    ops = device_ops(device, synchronize)
    if _capabilities.current().events == "metal":
        return ops, None
    return None, ops


def setup(metal: Optional[Any] = None, cuda: Optional[Any] = None) -> None:
    """Hands the backends their torch objects (needs the core installed).

    `metal` is a torch.mps-like module with ``Event`` and ``synchronize``;
    by default the real torch.mps where MPS hardware is present, or the
    generic accelerator's events where its capability record is MPS's.
    `cuda` is the same for torch.cuda (default: the real one where CUDA is
    present).  Tests pass simulated ones: no Apple hardware is available to
    this project, and CI has no GPU.
    """
    from . import _patches
    hardware = _patches.detect_profile()
    metal_ops = accel_ops = None
    if hardware == "accelerator":
        metal_ops, accel_ops = _accelerator_ops()
    if metal is not None:
        metal_ops = ops_of(metal.Event, metal.synchronize)
    elif hardware == "mps":
        metal_ops = ops_of(_MPS_EVENT, _MPS_SYNCHRONIZE)
    cuda_ops = None
    if cuda is not None:
        cuda_ops = ops_of(cuda.Event, cuda.synchronize)
    elif hardware == "cuda":
        cuda_ops = ops_of(_CUDA_EVENT, _CUDA_SYNCHRONIZE)
    _tdcore.streams_setup(
        metal_ops=metal_ops,
        cuda_ops=cuda_ops,
        device_ops=accel_ops,
        record_stream=_RECORD_STREAM,
        generic_stream=getattr(torch, "Stream", None),
        generic_event=getattr(torch, "Event", None),
    )


def _const(value: Any) -> Callable[[Any], Any]:
    return lambda original: value


# __new__ of torch's own classes, reached by code that captured them before
# TorchDevice was enabled: they build our objects instead.  Module-level
# functions, so that pickle finds them by name (torch's classes are not at
# their names while ours are).

def new_stream(cls: type, *args: Any, **kwargs: Any) -> Any:
    """torch.cuda.Stream.__new__ while TorchDevice is enabled."""
    return _tdcore.Stream(*args, **kwargs)


def new_external_stream(cls: type, *args: Any, **kwargs: Any) -> Any:
    """torch.cuda.ExternalStream.__new__ while TorchDevice is enabled."""
    return _tdcore.ExternalStream(*args, **kwargs)


def new_event(cls: type, *args: Any, **kwargs: Any) -> Any:
    """torch.cuda.Event.__new__ while TorchDevice is enabled."""
    return _tdcore.Event(*args, **kwargs)


def _record_stream(original: Any) -> Any:
    return _tdcore.record_stream_method(torch.Tensor)


def _share_abstract_bases() -> None:
    """Our classes pass the issubclass() checks against abstract bases that
    torch's pass: torch 2.5's dynamo asserts, when it is imported, that
    torch.cuda.Stream and Event derive from torch._streambase's.  (A
    registration outlives disable(); it only widens issubclass().)"""
    for theirs, ours in ((_CUDA_STREAM, _tdcore.Stream),
                         (_CUDA_EXTERNAL, _tdcore.ExternalStream),
                         (_CUDA_EVENT, _tdcore.Event)):
        for base in theirs.__mro__[1:]:
            if isinstance(base, abc.ABCMeta) and not issubclass(ours, base):
                base.register(ours)


def _cuda_patches() -> List[Any]:
    from ._patches import Patch
    _share_abstract_bases()
    C, S, T = torch.cuda, torch.cuda.streams, _tdcore
    table = [Patch(C, name, _const(getattr(T, name))) for name in (
        "Stream", "ExternalStream", "Event", "StreamContext", "stream",
        "current_stream", "default_stream", "set_stream", "synchronize",
        "get_stream_from_external")]
    table += [Patch(S, name, _const(getattr(T, name)))
              for name in ("Stream", "ExternalStream", "Event")]
    table += [
        Patch(_CUDA_STREAM, "__new__", _const(new_stream), static=True),
        Patch(_CUDA_EXTERNAL, "__new__", _const(new_external_stream),
              static=True),
        Patch(_CUDA_EVENT, "__new__", _const(new_event), static=True),
        Patch(torch.Tensor, "record_stream", _record_stream),
    ]
    return table


def _mps_patches(streams: Any = torch.cuda) -> List[Any]:
    """torch.mps.Event as our event type (its subclass that the report
    names torch.mps.Event), and torch.mps's stream functions
    (where this torch has them) as those of `streams`: torch.cuda's on
    profile cuda, ours (_tdcore's) where the device is not MPS."""
    from ._patches import Patch
    table = [Patch(torch.mps, "Event", _const(_tdcore.MpsEvent)),
             Patch(torch.mps.event, "Event", _const(_tdcore.MpsEvent))]
    table += [Patch(torch.mps, name, _const(getattr(streams, name)))
              for name in _MPS_STREAM_NAMES if hasattr(torch.mps, name)]
    return table


def patches() -> List[Any]:
    """Sets the backends up and returns the patch-table entries for the
    profile in force (called by _patches.patch_table() during apply())."""
    setup()
    from . import _masquerade
    if "cuda" not in _masquerade.announced():
        # MPS announced where neither kind is real: torch.mps.Event on the
        # CPU backend; torch.cuda stays torch's (CUDA is not announced).
        return _mps_patches(_tdcore)
    profile = _tdcore.settings()["profile"]
    if profile == "cuda":
        return _mps_patches()
    if profile == "mps":
        return _cuda_patches()
    # CUDA announced where MPS is not real either: torch.mps's actions run
    # for an MPS-written program that does not ask first (_masquerade), its
    # timing events included, on the backend "mps" requests land on.
    return _cuda_patches() + _mps_patches(_tdcore)
