"""Coverage: the torch.cuda names CUDA code commonly calls, each called with
typical arguments under TorchDevice on this machine.  None may raise unless
docs/masquerade.md lists it as unsupported, and each returns the type CUDA
returns.  Streams and events (docs/streams.md) are in the list too."""
from __future__ import annotations

import contextlib
import re
import types
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pytest
import torch

import TorchDevice  # noqa: F401
from conftest import HAS_CUDA, ROOT

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="profile cuda keeps torch.cuda native")

c = torch.cuda
CTX = contextlib.AbstractContextManager


def _tensor() -> torch.Tensor:
    return torch.ones(4, device="cuda")


def _ctx(factory: Callable[[], Any]) -> Callable[[], Any]:
    """Enters and leaves the context manager the factory returns."""
    def run() -> Any:
        manager = factory()
        with manager:
            pass
        return manager
    return run


def _has(*attrs: str) -> Callable[[Any], bool]:
    return lambda obj: all(hasattr(obj, a) for a in attrs)


def _int_pair(obj: Any) -> bool:
    return (isinstance(obj, tuple) and len(obj) == 2
            and all(isinstance(v, int) for v in obj))


def _graphed() -> Any:
    model = torch.nn.Linear(2, 2)
    return c.make_graphed_callables(model, (torch.randn(1, 2),))


# (name, call, expected type or predicate); CUDA's return types.
CASES: List[Tuple[str, Callable[[], Any], Any]] = [
    # device queries
    ("is_available", lambda: c.is_available(), bool),
    ("is_initialized", lambda: c.is_initialized(), bool),
    ("init", lambda: c.init(), type(None)),
    ("device_count", lambda: c.device_count(), int),
    ("current_device", lambda: c.current_device(), int),
    ("set_device(int)", lambda: c.set_device(0), type(None)),
    ("set_device(str)", lambda: c.set_device("cuda:0"), type(None)),
    ("set_device(device)", lambda: c.set_device(torch.device("cuda")),
     type(None)),
    ("device", _ctx(lambda: c.device(0)), c.device),
    ("device(str)", _ctx(lambda: c.device("cuda:0")), c.device),
    ("device_of", _ctx(lambda: c.device_of(_tensor())), c.device_of),
    ("get_device_name", lambda: c.get_device_name(), str),
    ("get_device_name(0)", lambda: c.get_device_name(0), str),
    ("get_device_capability", lambda: c.get_device_capability(), _int_pair),
    ("get_device_properties", lambda: c.get_device_properties(0),
     _has("name", "major", "minor", "total_memory",
          "multi_processor_count", "is_integrated")),
    ("get_arch_list", lambda: c.get_arch_list(), list),
    ("get_gencode_flags", lambda: c.get_gencode_flags(), str),
    ("is_bf16_supported", lambda: c.is_bf16_supported(), bool),
    ("is_tf32_supported", lambda: c.is_tf32_supported(), bool),
    ("can_device_access_peer", lambda: c.can_device_access_peer(0, 0),
     bool),
    # memory
    ("memory_allocated", lambda: c.memory_allocated(), int),
    ("memory_allocated(0)", lambda: c.memory_allocated(0), int),
    ("max_memory_allocated", lambda: c.max_memory_allocated(), int),
    ("memory_reserved", lambda: c.memory_reserved(), int),
    ("max_memory_reserved", lambda: c.max_memory_reserved(), int),
    ("reset_peak_memory_stats", lambda: c.reset_peak_memory_stats(),
     type(None)),
    ("reset_max_memory_allocated", lambda: c.reset_max_memory_allocated(),
     type(None)),
    ("reset_accumulated_memory_stats",
     lambda: c.reset_accumulated_memory_stats(), type(None)),
    ("memory_stats", lambda: c.memory_stats(), dict),
    ("memory_stats_as_nested_dict", lambda: c.memory_stats_as_nested_dict(),
     dict),
    ("memory_summary", lambda: c.memory_summary(), str),
    ("mem_get_info", lambda: c.mem_get_info(), _int_pair),
    ("empty_cache", lambda: c.empty_cache(), type(None)),
    ("set_per_process_memory_fraction",
     lambda: c.set_per_process_memory_fraction(1.0), type(None)),
    ("get_per_process_memory_fraction",
     lambda: c.get_per_process_memory_fraction(), float),
    ("memory_snapshot", lambda: c.memory_snapshot(), list),
    ("list_gpu_processes", lambda: c.list_gpu_processes(), str),
    ("utilization", lambda: c.utilization(), int),
    ("host_memory_stats", lambda: c.host_memory_stats(), dict),
    ("reset_peak_host_memory_stats",
     lambda: c.reset_peak_host_memory_stats(), type(None)),
    ("reset_accumulated_host_memory_stats",
     lambda: c.memory.reset_accumulated_host_memory_stats(), type(None)),
    ("memory._record_memory_history",
     lambda: c.memory._record_memory_history(None), type(None)),
    ("memory._snapshot", lambda: c.memory._snapshot(), dict),
    # RNG
    ("manual_seed", lambda: c.manual_seed(0), type(None)),
    ("manual_seed_all", lambda: c.manual_seed_all(0), type(None)),
    ("seed", lambda: c.seed(), type(None)),
    ("seed_all", lambda: c.seed_all(), type(None)),
    ("initial_seed", lambda: c.initial_seed(), int),
    ("get_rng_state", lambda: c.get_rng_state(), torch.Tensor),
    ("set_rng_state", lambda: c.set_rng_state(c.get_rng_state()),
     type(None)),
    ("get_rng_state_all", lambda: c.get_rng_state_all(), list),
    ("set_rng_state_all", lambda: c.set_rng_state_all(c.get_rng_state_all()),
     type(None)),
    ("default_generators", lambda: c.default_generators[0],
     torch.Generator),
    ("Generator(device='cuda')", lambda: torch.Generator(device="cuda"),
     torch.Generator),
    ("fork_rng(device_type='cuda')",
     _ctx(lambda: torch.random.fork_rng(device_type="cuda")), CTX),
    # AMP
    ("amp.autocast", _ctx(lambda: c.amp.autocast()), torch.autocast),
    ("torch.autocast('cuda')", _ctx(lambda: torch.autocast("cuda")),
     torch.autocast),
    ("amp.autocast(device_type='cuda')",
     _ctx(lambda: torch.amp.autocast(device_type="cuda")), torch.autocast),
    ("amp.GradScaler", lambda: c.amp.GradScaler(), torch.amp.GradScaler),
    ("torch.amp.GradScaler('cuda')", lambda: torch.amp.GradScaler("cuda"),
     torch.amp.GradScaler),
    ("is_autocast_enabled('cuda')", lambda: torch.is_autocast_enabled("cuda"),
     bool),
    ("get_autocast_dtype('cuda')", lambda: torch.get_autocast_dtype("cuda"),
     torch.dtype),
    # flags and tools
    ("backends.cuda.matmul.allow_tf32",
     lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", False),
     type(None)),
    ("backends.cudnn.benchmark",
     lambda: setattr(torch.backends.cudnn, "benchmark", False), type(None)),
    ("backends.cudnn.deterministic",
     lambda: setattr(torch.backends.cudnn, "deterministic", False),
     type(None)),
    ("backends.cudnn.is_available",
     lambda: torch.backends.cudnn.is_available(), bool),
    ("backends.cuda.is_built", lambda: torch.backends.cuda.is_built(), bool),
    ("nvtx.range_push", lambda: c.nvtx.range_push("x"), int),
    ("nvtx.range_pop", lambda: c.nvtx.range_pop(), int),
    ("nvtx.mark", lambda: c.nvtx.mark("x"), type(None)),
    ("nvtx.range", _ctx(lambda: c.nvtx.range("x")), CTX),
    ("ipc_collect", lambda: c.ipc_collect(), type(None)),
    ("set_sync_debug_mode", lambda: c.set_sync_debug_mode(0), type(None)),
    ("get_sync_debug_mode", lambda: c.get_sync_debug_mode(), int),
    ("OutOfMemoryError", lambda: c.OutOfMemoryError, type),
    ("is_current_stream_capturing", lambda: c.is_current_stream_capturing(),
     bool),
    ("make_graphed_callables", _graphed, torch.nn.Module),
    ("CUDAGraph", lambda: c.CUDAGraph(), object),
    ("graph", lambda: c.graph(c.CUDAGraph()), object),
    ("graph_pool_handle", lambda: c.graph_pool_handle(), object),
    ("cudart", lambda: c.cudart(), _has("cudaProfilerStart", "cudaError")),
    ("profiler.start", lambda: c.profiler.start(), type(None)),
    ("profiler.profile", _ctx(lambda: c.profiler.profile()), CTX),
    ("check_error", lambda: c.check_error(0), type(None)),
    ("get_device_module('cuda')", lambda: torch.get_device_module("cuda"),
     type(torch)),
    ("accelerator.is_available", lambda: torch.accelerator.is_available(),
     bool),
    ("accelerator.current_accelerator",
     lambda: torch.accelerator.current_accelerator(), torch.device),
    ("accelerator.current_stream",
     lambda: torch.accelerator.current_stream(),
     _has("synchronize", "query", "wait_event", "record_event")),
    ("accelerator.set_stream",
     lambda: torch.accelerator.set_stream(torch.accelerator.current_stream()),
     type(None)),
    ("accelerator.device_index",
     _ctx(lambda: torch.accelerator.device_index(0)), object),
    ("accelerator.get_device_capability",
     lambda: torch.accelerator.get_device_capability(), dict),
    ("accelerator.empty_host_cache",
     lambda: torch.accelerator.empty_host_cache(), type(None)),
    ("accelerator.Graph", lambda: torch.accelerator.Graph(),
     _has("capture_begin", "capture_end", "replay", "pool")),
    ("torch.Event()", lambda: torch.Event(enable_timing=True),
     _has("record", "synchronize", "elapsed_time")),
    # streams and events
    ("synchronize", lambda: c.synchronize(), type(None)),
    ("current_stream", lambda: c.current_stream(), c.Stream),
    ("default_stream", lambda: c.default_stream(), c.Stream),
    ("Stream", lambda: c.Stream(), c.Stream),
    ("Event", lambda: c.Event(enable_timing=True), c.Event),
    ("stream", _ctx(lambda: c.stream(c.Stream())), CTX),
    ("set_stream", lambda: c.set_stream(c.current_stream()), type(None)),
    ("Tensor.record_stream",
     lambda: _tensor().record_stream(c.current_stream()), type(None)),
]


def _documented_unsupported() -> set:
    """Names listed under "## Unsupported" in docs/masquerade.md."""
    text = Path(ROOT, "docs", "masquerade.md").read_text()
    match = re.search(r"^## Unsupported\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "docs/masquerade.md has no '## Unsupported' section"
    return set(re.findall(r"`torch\.cuda\.([A-Za-z_.]+)`", match.group(1)))


def test_list_is_large_enough():
    assert len(CASES) >= 80
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name,call,expected", CASES,
                         ids=[n for n, _, _ in CASES])
def test_cuda_name(name, call, expected):
    base = name.split("(")[0]
    if base in _documented_unsupported():
        with pytest.raises(RuntimeError, match="NVIDIA GPU"):
            call()
        return
    try:
        result = call()
    except AttributeError as error:
        owner = getattr(error, "obj", None)
        if isinstance(owner, types.ModuleType) and \
                owner.__name__.startswith("torch"):
            # An older torch: TorchDevice emulates the names torch has and
            # adds none.
            pytest.skip(f"torch {torch.__version__} has no "
                        f"{owner.__name__}.{error.name}")
        raise
    if isinstance(expected, type):
        assert isinstance(result, expected), (name, type(result))
    else:
        assert expected(result), (name, result)


def test_a_memory_snapshot_saves_and_loads(tmp_path):
    """Memory-debugging code saves a snapshot for the visualizer; here it
    is empty (no allocator keeps segments) and of CUDA's shape."""
    import pickle
    path = tmp_path / "snapshot.pickle"
    torch.cuda.memory._record_memory_history(max_entries=100)
    torch.cuda.memory._dump_snapshot(str(path))
    snapshot = pickle.loads(path.read_bytes())
    assert snapshot["segments"] == [] and snapshot["device_traces"] == [[]]
