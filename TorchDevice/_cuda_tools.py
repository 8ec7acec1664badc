"""CUDA's tool switches where "cuda" is not CUDA: the profiler hooks, the
CUDA runtime handle, NVTX ranges for autograd, the profiler's CUDA
activity, the preferred linear algebra and BLAS libraries, the cuFFT
plan cache, and the caching allocator's memory pools (docs/masquerade.md,
"Flags and tools").

A CUDA program calls these to tune or to profile, never for its results:
``torch.cuda.profiler.start()`` / ``stop()`` / ``profile()`` tell an
attached profiler (Nsight) where to record, ``emit_nvtx()`` labels the
ranges it records, ``preferred_linalg_library("cusolver")`` picks among
CUDA's libraries for the same operator.  On a torch built without CUDA
each of them raises, so a CUDA program that profiles or tunes stops at
that line.  Here each does what it does on a GPU with no profiler
attached and no such library to pick: nothing that changes a result.
The switches remember what they were set to and answer it back, as on
CUDA, and the report gets an ``emulated`` row.
"""
from __future__ import annotations

import contextlib
import enum
import functools
import operator
import threading
import time
from typing import Any, Callable, Dict, List

import torch

from . import _patches, _tdcore, _torch_compat


# ---- the CUDA runtime handle: torch.cuda.cudart() -----------------------


class cudaError(enum.IntEnum):
    """The codes torch.cuda.check_error and CudaError read."""
    success = 0
    cudaErrorInvalidValue = 1
    cudaErrorNotReady = 34


class _Cudart:
    """What torch's own Python asks of the CUDA runtime module: the
    profiler's start and stop, host memory registration (pinning, which a
    host tensor here does not need), memory info, the error strings."""
    cudaError = cudaError

    @staticmethod
    def cudaGetErrorString(code: Any) -> str:
        try:
            return cudaError(int(code)).name
        except ValueError:
            return f"cudaError {int(code)}"

    @staticmethod
    def cudaProfilerStart() -> cudaError:
        _patches.record_emulated("torch.cuda.cudart().cudaProfilerStart")
        return cudaError.success

    @staticmethod
    def cudaProfilerStop() -> cudaError:
        _patches.record_emulated("torch.cuda.cudart().cudaProfilerStop")
        return cudaError.success

    @staticmethod
    def cudaHostRegister(ptr: int, size: int, flags: int) -> cudaError:
        _patches.record_emulated("torch.cuda.cudart().cudaHostRegister")
        return cudaError.success

    @staticmethod
    def cudaHostUnregister(ptr: int) -> cudaError:
        _patches.record_emulated("torch.cuda.cudart().cudaHostUnregister")
        return cudaError.success

    @staticmethod
    def cudaMemGetInfo(device: int) -> Any:
        return torch.cuda.mem_get_info(device)

    def __repr__(self) -> str:
        return "<CUDA runtime (TorchDevice: no CUDA here, profiler calls " \
               "and host registration succeed and do nothing)>"


CUDART = _Cudart()


def cudart() -> _Cudart:
    """torch.cuda.cudart(): the runtime handle."""
    return CUDART


def check_error(res: int) -> None:
    """torch.cuda.check_error: torch's CudaError for a code other than
    success, with the handle's name for it."""
    if res != cudaError.success:
        error = torch.cuda.CudaError.__new__(torch.cuda.CudaError)
        RuntimeError.__init__(
            error, f"{CUDART.cudaGetErrorString(res)} ({int(res)})")
        raise error


# ---- NVTX ranges around autograd's operators ----------------------------


class emit_nvtx(contextlib.ContextDecorator):
    """torch.autograd.profiler.emit_nvtx: each operator becomes an NVTX
    range, which only an attached Nsight records.  None is attached here,
    so, as on a GPU without one, the ranges go nowhere."""

    def __init__(self, enabled: bool = True,
                 record_shapes: bool = False) -> None:
        self.enabled = enabled
        self.record_shapes = record_shapes
        self.entered = False

    def __enter__(self) -> "emit_nvtx":
        if self.entered:
            raise RuntimeError("NVTX annotation context manager is not "
                               "reentrant")
        self.entered = True
        if self.enabled:
            _patches.record_emulated("torch.autograd.profiler.emit_nvtx")
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.entered = False
        return False


# ---- torch.cuda._sleep: a kernel that spins on the stream ----------------

# Where the device's properties give no clock rate (kHz), the cycles are
# counted at 1 GHz.  Any rate keeps a program consistent with itself: the
# ones that care (torch's own tests, torchtune's) measure cycles per
# millisecond with events around a first sleep, as CUDA code must too.
_FALLBACK_CLOCK_KHZ = 1_000_000


def _sleep(cycles: int) -> None:
    """torch.cuda._sleep(cycles): on CUDA a kernel that keeps the current
    stream busy for `cycles` of the GPU's clock, which tests and
    benchmarks use to make work that takes time (an offload overlapping
    a slow backward pass, an event that is not yet done).  Where "cuda"
    is not CUDA the work of a stream runs as the host reaches it
    (docs/streams.md), so the host waits as long, at the clock rate the
    device's properties answer; the GIL is released, as the GPU's would
    leave other threads running."""
    cycles = operator.index(cycles)
    _patches.record_emulated("torch.cuda._sleep")
    if cycles <= 0:
        return
    began = time.perf_counter()
    # The masquerade's own properties, built as get_device_properties()
    # builds them: calling that would add a report row the program did
    # not write.
    from ._masquerade import device_properties
    khz = device_properties(_tdcore.settings()["profile"]).clock_rate
    seconds = cycles / ((khz or _FALLBACK_CLOCK_KHZ) * 1000.0)
    time.sleep(max(0.0, seconds - (time.perf_counter() - began)))


# ---- preferred libraries --------------------------------------------------


def _preference(original: Callable[..., Any], api: str,
                names: Dict[str, Any]) -> Callable[..., Any]:
    """One of torch.backends.cuda's library preferences: torch's checks of
    the value, and the value a program set, answered back (CUDA's
    libraries are not there to pick from)."""
    state = {"value": original()}
    # torch's answer is a member of the enum it accepts.
    enum_type = type(state["value"])
    lock = threading.Lock()

    @functools.wraps(original)
    def preference(backend: Any = None) -> Any:
        if backend is None:
            return state["value"]
        if isinstance(backend, str):
            if backend not in names:
                raise RuntimeError("Unknown input value. Choose from: "
                                   + ", ".join(names) + ".")
            backend = names[backend]
        elif not isinstance(backend, enum_type):
            raise RuntimeError("Unknown input value type.")
        with lock:
            state["value"] = backend
        _patches.record_emulated(api)
        return backend
    return preference


def _preference_builder(name: str, names: Dict[str, Any]
                        ) -> Callable[[Any], Any]:
    def build(original: Callable[..., Any]) -> Callable[..., Any]:
        return _preference(original, "torch.backends.cuda." + name,
                           dict(names))
    return build


# ---- the cuFFT plan cache -------------------------------------------------


class _PlanCache:
    """One device's cuFFT plan cache: no plans are ever made here (FFTs run
    on the device's own library), so its size is 0; its capacity is what
    the program set."""

    def __init__(self, index: int) -> None:
        self.device_index = index
        self._max_size = 4096

    @property
    def size(self) -> int:
        return 0

    @size.setter
    def size(self, value: Any) -> None:
        raise RuntimeError(
            ".size is a read-only property showing the number of plans "
            "currently in the cache. To change the cache capacity, set "
            "cufft_plan_cache.max_size.")

    @property
    def max_size(self) -> int:
        return self._max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        if int(value) < 0:
            raise RuntimeError("cuFFT plan cache size must be non-negative, "
                               f"but got {value}")
        self._max_size = int(value)
        _patches.record_emulated("torch.backends.cuda.cufft_plan_cache")

    def clear(self) -> None:
        pass


class PlanCacheManager:
    """torch.backends.cuda.cufft_plan_cache: every device index is the one
    device (docs/masquerade.md, "Devices shown"), and so is its cache,
    also when the manager is used directly."""

    def __init__(self) -> None:
        object.__setattr__(self, "cache", _PlanCache(0))

    def __getitem__(self, device: Any) -> _PlanCache:
        if not isinstance(device, (int, str, torch.device)):
            raise ValueError(f"Expected a torch.device, a string or an "
                             f"integer; but got {device!r}")
        return self.cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self[torch.cuda.current_device()], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self[torch.cuda.current_device()], name, value)


# ---- torch.profiler.profile(activities=[..., ProfilerActivity.CUDA]) ------


def _device_activities() -> List[Any]:
    """What records the work of the device "cuda" lands on: the CPU's
    activity, whose operators run or launch every kernel there (the CPU
    itself; MPS, and a device without a profiler of its own, record
    nothing else), and the device's own where torch's profiler has one."""
    activity = torch.profiler.ProfilerActivity
    landed = _patches.landed_type()
    if landed in ("cpu", "mps"):
        return [activity.CPU]
    own = getattr(activity, landed.upper(), None)
    if own is None:
        own = getattr(activity, "PrivateUse1", None)
    if own is None or own not in torch.profiler.supported_activities():
        return [activity.CPU]
    return [activity.CPU, own]


def _profile_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """A CUDA program profiles the GPU's work: ``activities=[CUDA]`` or
    ``[CPU, CUDA]``.  Where CUDA is not there, torch drops the activity
    with a warning, and a list that held only CUDA stops the program
    ("No activities specified for the profiler").  The CUDA activity is
    the device's here, as a device= "cuda" is (report row
    ``redirected``); CUDA's own filters (kernel and memcpy names) name
    nothing on another device, so a ``{CUDA: [...]}`` entry becomes the
    device's whole activities."""
    cuda = torch.profiler.ProfilerActivity.CUDA

    def names_cuda(item: Any) -> bool:
        return item == cuda or (isinstance(item, dict) and cuda in item)

    def mapped(items: List[Any], into: List[Any]) -> List[Any]:
        out: List[Any] = []
        seen: set = set()
        for item in items:
            if isinstance(item, dict):
                rest = {k: v for k, v in item.items() if k != cuda}
                if rest:
                    out.append(rest)
                    seen.update(rest)
                if cuda not in item:
                    continue
                item = cuda
            for one in (into if item == cuda else [item]):
                if one not in seen:
                    out.append(one)
                    seen.add(one)
        return out

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        activities = kwargs.get("activities")
        if activities is not None:
            # Read once: a generator handed in would be empty for torch.
            items = list(activities)
            if any(names_cuda(item) for item in items):
                into = _device_activities()
                kwargs["activities"] = mapped(items, into)
                _tdcore.record("torch.profiler.profile", "redirected",
                               "cuda", _patches.landed_type())
                original(self, *args, **kwargs)
                # The profiler reads back the activities the program named
                # (torchtune's set-up compares them), as a device reads as
                # the one asked for, beside those that record the work:
                # torch has taken its device from them, and reads the CPU's
                # from this set when it starts.
                for item in items:
                    self.activities.update(
                        item if isinstance(item, dict) else (item,))
                return
            kwargs["activities"] = items
        original(self, *args, **kwargs)
    return __init__


# ---- the patch table -------------------------------------------------------


# ---- memory pools: torch.cuda.MemPool, torch.cuda.use_mem_pool ---------


class MemPool:
    """torch.cuda.MemPool where "cuda" is not CUDA's caching allocator: a
    pool is a name for allocations that go to the device's own memory, as
    every allocation there does.  Its id is unique, as CUDA's, and a graph
    capture accepts it (``pool=``)."""

    def __init__(self, allocator: Any = None, use_on_oom: bool = False,
                 no_split: bool = False) -> None:
        if allocator is not None:
            raise RuntimeError(
                "torch.cuda.MemPool(allocator=...): a CUDA allocator "
                "(CUDAPluggableAllocator) needs CUDA; without one the pool "
                "uses the device's own memory (docs/masquerade.md)")
        from ._graphs import graph_pool_handle
        _patches.record_emulated("torch.cuda.MemPool")
        self.allocator = None
        self.use_on_oom = bool(use_on_oom)
        self.no_split = bool(no_split)
        self._id = graph_pool_handle()
        self._in_use = 0

    @property
    def id(self) -> Any:
        return self._id

    def use_count(self) -> int:
        """The pool, and each use_mem_pool block routing to it."""
        return 1 + self._in_use

    def snapshot(self, include_traces: bool = True) -> List[Any]:
        """No segments are the pool's own: the device allocates them."""
        return []


@contextlib.contextmanager
def use_mem_pool(pool: MemPool, device: Any = None) -> Any:
    """Allocations in the block go where they go anyway (MemPool above)."""
    if not isinstance(pool, MemPool):
        raise TypeError(f"use_mem_pool(): expected a torch.cuda.MemPool, "
                        f"got {type(pool).__name__}")
    if device is not None:      # refused as torch.cuda refuses it
        from ._masquerade import _function
        _function("_get_device_index", "torch.cuda")(device)
    _patches.record_emulated("torch.cuda.use_mem_pool")
    pool._in_use += 1
    try:
        yield
    finally:
        pool._in_use -= 1


def patches() -> List[Any]:
    from ._masquerade import cuda_emulated
    from ._patches import Patch
    # Where torch.cuda is torch's own (CUDA, or CUDA not announced), so
    # are these.
    if not cuda_emulated():
        return []
    import torch.autograd.profiler as autograd_profiler
    import torch.backends.cuda as backends_cuda
    import torch.cuda.profiler as cuda_profiler
    table = [
        Patch(torch.cuda, "cudart", lambda orig: cudart),
        Patch(cuda_profiler, "cudart", lambda orig: cudart),
        Patch(torch.cuda, "check_error", lambda orig: check_error),
        Patch(cuda_profiler, "check_error", lambda orig: check_error),
        Patch(autograd_profiler, "emit_nvtx", lambda orig: emit_nvtx),
        Patch(torch.profiler.profile, "__init__", _profile_init),
        Patch(torch.cuda, "_sleep", lambda orig: _sleep),
        Patch(backends_cuda, "cufft_plan_cache",
              lambda orig: PlanCacheManager()),
    ]
    for name, value in (("MemPool", MemPool), ("use_mem_pool", use_mem_pool)):
        if hasattr(torch.cuda, name):
            table += [Patch(home, name, lambda orig, value=value: value)
                      for home in _patches.homes(torch.cuda, name)]
    from . import _tunable
    table += _tunable.patches()
    for name, key in (("preferred_linalg_library", "linalg_backends"),
                      ("preferred_blas_library", "blas_backends")):
        names = _torch_compat.get(key)
        if getattr(backends_cuda, name, None) is None \
                or not isinstance(names, dict):
            continue
        table.append(Patch(backends_cuda, name,
                           _preference_builder(name, names)))
    return table
