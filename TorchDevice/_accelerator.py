"""torch.accelerator where the masquerade announces a GPU that is not there.

torch's generic accelerator API answers for the accelerator torch was
built for and found.  On profile cpu there is none, yet
``torch.accelerator.is_available()`` answers as ``torch.cuda.is_available()``
does (True), so a program that goes on to use the rest of the API must get
the same emulation ``torch.cuda`` gives: its streams, its device switching,
its capability, its (absent) pinned-memory cache.  torch's own raise
"Cannot access accelerator device when none is available" there.

``torch.accelerator.Graph`` is emulated wherever ``torch.cuda.CUDAGraph``
is (TorchDevice/_graphs.py): a graph written against the generic API is a
CUDA graph on CUDA, and no other device that "cuda" lands on records one.
docs/masquerade.md, "torch.accelerator and torch.get_device_module".
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Dict, List, Optional

import torch

from . import _graphs, _patches, _tdcore

_GRAPH_API = "torch.accelerator.Graph"


@functools.cache
def get_device_capability(device: Any = None, /) -> Dict[str, Any]:
    """What the device "cuda" lands on computes: the CPU allocates and
    converts every dtype torch has, which is also what torch answers for a
    device that does not narrow c10's default capability (CUDA)."""
    _masquerade_function("_get_device_index")(device, True)
    return {"supported_dtypes": {value for value in vars(torch).values()
                                 if isinstance(value, torch.dtype)}}


def empty_host_cache() -> None:
    """Pinned host memory is ordinary host memory here: nothing is cached
    to give back."""


class device_index:
    """torch.accelerator.device_index(i) over the masquerade's current
    device, which torch.cuda.device(i) switches too."""

    def __init__(self, device: Optional[int], /) -> None:
        self.idx = device
        self.prev_idx = -1

    def __enter__(self) -> None:
        if self.idx is not None:
            _patches.record_emulated("torch.accelerator.device_index")
            self.prev_idx = _masquerade_function("_exchange_device")(self.idx)

    def __exit__(self, *exc_info: object) -> None:
        if self.idx is not None:
            _masquerade_function("_maybe_exchange_device")(self.prev_idx)


def _masquerade_function(name: str) -> Any:
    from . import _masquerade
    return _masquerade._function(name, "torch.cuda")


class Graph(_graphs.CUDAGraph):
    """torch.accelerator.Graph over the recording CUDAGraph: the same
    capture and replay, with the generic API's constructor and its
    ``with stream, graph:`` form."""

    _api = _GRAPH_API

    def __init__(self, keep_graph: bool = False, *, pool: Any = None,
                 capture_error_mode: str = "default") -> None:
        super().__init__(keep_graph)
        self.graph_pool = pool
        self.capture_error_mode = capture_error_mode

    def capture_begin(self) -> None:  # type: ignore[override]
        # "default" is the backend's choice; CUDA's is "global".
        mode = self.capture_error_mode
        super().capture_begin(
            pool=self.graph_pool,
            capture_error_mode="global" if mode == "default" else mode)

    def __enter__(self) -> None:
        torch.accelerator.synchronize()
        self.capture_begin()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.capture_end()
        except RuntimeError:
            if exc[0] is None:
                raise           # else the block's own error goes on
        if exc[0] is not None:
            self.reset()        # a block that did not finish is no graph


def _for_user_code(ours: Any, torchs: Any, api: str) -> Any:
    """`ours` for the program, recorded as emulated at its line; torch's own
    function for torch's code: torch routes its work by what its
    accelerator API answers (torch._dynamo asks for the current stream when
    it starts tracing), as it does by is_available() (docs/masquerade.md)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller == "torch" or caller.startswith("torch."):
            return torchs(*args, **kwargs)
        _patches.record_emulated(api)
        return ours(*args, **kwargs)

    call.__name__ = call.__qualname__ = torchs.__name__
    call.__doc__ = torchs.__doc__
    call.__wrapped__ = torchs  # type: ignore[attr-defined]
    return call


def patches() -> List[Any]:
    from ._patches import Patch
    from ._masquerade import cuda_emulated
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None:
        return []                   # torch before 2.6
    profile = _tdcore.settings()["profile"]
    replacements: Dict[str, Any] = {}
    if profile == "cpu":
        replacements.update(
            current_stream=_tdcore.current_stream,
            set_stream=_tdcore.set_stream,
            device_index=device_index,
            get_device_capability=get_device_capability,
            empty_host_cache=empty_host_cache)
    if cuda_emulated(profile):
        replacements["Graph"] = Graph
    table: List[Any] = []
    for name, value in replacements.items():
        torchs = getattr(accelerator, name, None)
        if torchs is None:
            continue                # an older torch
        if not isinstance(value, type):
            value = _for_user_code(value, torchs, f"torch.accelerator.{name}")
        table += [Patch(owner, name, lambda orig, value=value: value)
                  for owner in _patches.homes(accelerator, name)]
    return table
