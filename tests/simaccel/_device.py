"""`torch.simaccel`: the simulated accelerator's device module.

torch looks a PrivateUse1 backend's Python API up here (torch.get_device_module,
torch.accelerator, autocast, torch.manual_seed, serialization); it is shaped
like torch.cuda / torch.mps where those exist.  All work runs synchronously
on the host, so synchronisation is a no-op and streams are always idle.
"""
from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import torch

NAME = "simaccel"

def _op(name: str, *args: Any) -> Any:
    """Calls one of the device's runtime ops.  They answer questions (a
    count, a generator, statistics) and compute nothing, so a torch.jit.trace
    running now must not record them, as it records none of CUDA's or MPS's
    runtime calls (and it cannot record an int or a Generator output)."""
    op = getattr(torch.ops.simaccel, name)
    tracing = torch._C._get_tracing_state()
    if tracing is None:
        return op(*args)
    torch._C._set_tracing_state(None)
    try:
        return op(*args)
    finally:
        torch._C._set_tracing_state(tracing)


def _index(device: Any = None, optional: bool = True) -> int:
    """The device index `device` names (the current one for None)."""
    if device is None and optional:
        return current_device()
    if isinstance(device, str):
        device = torch.device(device)
    if isinstance(device, torch.device):
        if device.type != NAME:
            raise ValueError(f"Expected a {NAME} device, but got: {device}")
        return current_device() if device.index is None else device.index
    if isinstance(device, int) and not isinstance(device, bool):
        if not 0 <= device < device_count():
            raise RuntimeError(f"Invalid device index {device} for {NAME}: there are "
                               f"{device_count()} simulated device(s)")
        return device
    raise ValueError(f"Expected a {NAME} device, but got: {device!r}")


# ------------------------------------------------------------------ devices

def is_available() -> bool:
    return device_count() > 0


def is_initialized() -> bool:
    return True


def init() -> None:
    """Nothing to initialise: the device exists once the library is loaded."""


_lazy_init = init


def device_count() -> int:
    return int(_op("device_count"))


def current_device() -> int:
    return torch._C._accelerator_hooks_get_current_device()


def set_device(device: Any) -> None:
    torch._C._accelerator_hooks_set_current_device(_index(device, optional=False))


def synchronize(device: Any = None) -> None:
    """Waits for the device's work: there is none pending, ever."""
    _index(device)


def get_device_name(device: Any = None) -> str:
    return f"{NAME} (simulated accelerator {_index(device)} on the host CPU)"


def get_device_properties(device: Any = None) -> SimpleNamespace:
    index = _index(device)
    return SimpleNamespace(name=get_device_name(index), type=NAME, index=index,
                           total_memory=mem_get_info(index)[1])


def get_device_capability(device: Any = None) -> tuple[int, int]:
    _index(device)
    return (0, 0)


class device:
    """Context manager that makes `device` the current simaccel device."""

    def __init__(self, device: Any):
        self.idx = -1 if device is None else _index(device, optional=False)
        self.prev_idx = -1

    def __enter__(self):
        if self.idx >= 0:
            self.prev_idx = torch._C._accelerator_hooks_exchange_device(self.idx)

    def __exit__(self, *exc_info: object) -> None:
        if self.idx >= 0:
            torch._C._accelerator_hooks_set_current_device(self.prev_idx)


# ---------------------------------------------------------- streams, events

Stream = torch.Stream
Event = torch.Event


def current_stream(device: Any = None) -> torch.Stream:
    return torch._C._accelerator_getStream(_index(device))


def default_stream(device: Any = None) -> torch.Stream:
    current = current_stream(device)
    return torch.Stream(stream_id=0, device_index=current.device_index,
                        device_type=current.device_type)


def set_stream(stream: torch.Stream) -> None:
    torch._C._accelerator_setStream(stream)


# ---------------------------------------------------------------------- RNG

def default_generator(device: Any = None) -> torch.Generator:
    return _op("default_generator", _index(device))


def _default_generators() -> tuple:
    return tuple(_op("default_generator", i) for i in range(device_count()))


def manual_seed(seed: int) -> None:
    default_generator().manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    for gen in _default_generators():
        gen.manual_seed(int(seed))


def seed() -> None:
    default_generator().seed()


def seed_all() -> None:
    first = default_generator(0).seed()
    for gen in _default_generators()[1:]:
        gen.manual_seed(first)


def initial_seed() -> int:
    return default_generator().initial_seed()


def get_rng_state(device: Any = NAME) -> torch.Tensor:
    return default_generator(_index(device)).get_state()


def set_rng_state(new_state: torch.Tensor, device: Any = NAME) -> None:
    default_generator(_index(device)).set_state(new_state.clone())


def get_rng_state_all() -> list[torch.Tensor]:
    return [gen.get_state() for gen in _default_generators()]


def set_rng_state_all(new_states: list[torch.Tensor]) -> None:
    for gen, state in zip(_default_generators(), new_states):
        gen.set_state(state.clone())


def _is_in_bad_fork() -> bool:
    """Host memory survives fork: a forked child may use the device."""
    return False


# ------------------------------------------------------------------- memory

_STAT_FIELDS = ("current", "peak", "allocated", "freed")


def _stats(device: Any) -> list[int]:
    return list(_op("memory_stats", _index(device)))


def memory_allocated(device: Any = None) -> int:
    return _stats(device)[0]


def max_memory_allocated(device: Any = None) -> int:
    return _stats(device)[1]


# Nothing is cached: reserved memory is allocated memory.
memory_reserved = memory_allocated
max_memory_reserved = max_memory_allocated


def reset_peak_memory_stats(device: Any = None) -> None:
    _op("reset_peak_memory_stats", _index(device))


def reset_accumulated_memory_stats(device: Any = None) -> None:
    _op("reset_accumulated_memory_stats", _index(device))


def reset_max_memory_allocated(device: Any = None) -> None:
    reset_peak_memory_stats(device)


def memory_stats(device: Any = None) -> OrderedDict[str, int]:
    """The CUDA-style keys torch.cuda.memory_stats() reports, for the "all" pool."""
    values = _stats(device)
    stats: OrderedDict[str, int] = OrderedDict()
    for prefix, offset in (("allocated_bytes", 0), ("reserved_bytes", 0), ("active_bytes", 0),
                           ("requested_bytes", 0), ("allocation", 4), ("segment", 4),
                           ("active", 4)):
        for i, field in enumerate(_STAT_FIELDS):
            stats[f"{prefix}.all.{field}"] = values[offset + i]
    return OrderedDict(sorted(stats.items()))


def empty_cache() -> None:
    """Nothing is cached."""


def mem_get_info(device: Any = None) -> tuple[int, int]:
    return torch._C._accelerator_getMemoryInfo(_index(device))


# ---------------------------------------------------------------------- AMP

def get_amp_supported_dtype() -> list[torch.dtype]:
    return [torch.float16, torch.bfloat16]


def is_autocast_enabled() -> bool:
    return torch.is_autocast_enabled(NAME)


def set_autocast_enabled(enabled: bool) -> None:
    torch.set_autocast_enabled(NAME, enabled)


def get_autocast_dtype() -> torch.dtype:
    return torch.get_autocast_dtype(NAME)


def set_autocast_dtype(dtype: torch.dtype) -> None:
    torch.set_autocast_dtype(NAME, dtype)


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return True
