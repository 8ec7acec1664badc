"""The CUDA masquerade: which torch.cuda / torch.mps names are replaced by
_tdcore's callables on each profile, and the facts about the real device
that those callables answer from (docs/masquerade.md).

On profiles "mps", "accelerator" and "cpu", torch.cuda answers as if one
CUDA device were present, with the truth of the real device behind it.  On profile "cuda",
torch.cuda is left exactly as it is and torch.mps / torch.backends.mps
answer from CUDA instead.

Everything here runs at enable time; the calls themselves are C.
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import platform
import subprocess
import sys
import types
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from . import _log, _tdcore, _torch_compat

# torch.cuda names answered by _tdcore on profiles mps and cpu, grouped as
# in docs/masquerade.md.  Streams and events are in _streams.py.
QUERY = (
    "is_available", "is_initialized", "init", "device_count",
    "current_device", "set_device", "_get_device_index", "_exchange_device",
    "_maybe_exchange_device", "get_device_name", "get_device_capability",
    "get_device_properties", "can_device_access_peer", "is_bf16_supported",
    "is_tf32_supported", "get_arch_list", "get_allocator_backend",
)
CUDA_BACKENDS = ("is_built",)
DISTRIBUTED = ("is_nccl_available",)
NCCL = ("version",)
MEMORY = (
    "memory_allocated", "max_memory_allocated", "memory_reserved",
    "max_memory_reserved", "memory_cached", "max_memory_cached",
    "reset_peak_memory_stats", "reset_max_memory_allocated",
    "reset_max_memory_cached", "reset_accumulated_memory_stats",
    "memory_stats", "memory_summary", "mem_get_info", "empty_cache",
    "set_per_process_memory_fraction", "get_per_process_memory_fraction",
    "memory_snapshot", "list_gpu_processes", "utilization",
    "caching_allocator_enable",
)
RNG = (
    "manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed",
    "get_rng_state", "set_rng_state", "get_rng_state_all",
    "set_rng_state_all",
)
MISC = (
    "ipc_collect", "set_sync_debug_mode", "get_sync_debug_mode",
    "make_graphed_callables", "reset_peak_host_memory_stats",
    "reset_accumulated_host_memory_stats",
)
NVTX = ("range_push", "range_pop", "range_start", "range_end", "mark")
MEMORY_PRIVATE = ("_record_memory_history", "_snapshot")
ACCELERATOR = (
    "is_available", "current_accelerator", "device_count",
    "current_device_index", "set_device_index", "memory_allocated",
    "max_memory_allocated", "memory_reserved", "max_memory_reserved",
    "memory_stats", "reset_peak_memory_stats",
    "reset_accumulated_memory_stats", "empty_cache", "get_memory_info",
    "synchronize",
)
# Profile cuda: torch.mps / torch.backends.mps answered from CUDA.
MPS_REVERSE = (
    "is_available", "synchronize", "empty_cache", "current_allocated_memory",
    "driver_allocated_memory", "recommended_max_memory", "manual_seed",
    "seed", "get_rng_state", "set_rng_state",
    "set_per_process_memory_fraction", "device_count",
)
MPS_BACKENDS_REVERSE = ("is_available", "is_built")

ENV_CUDA_VERSION = "TORCHDEVICE_CUDA_VERSION"
ENV_LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"

# The accelerator kind announced on a machine with neither CUDA nor MPS
# (docs/masquerade.md, "Which accelerator is announced").
_announce = "cuda"

# torch's own objects, read once before anything is patched.
_originals: Dict[str, Any] = {}
_functions: Dict[Tuple[str, str], Any] = {}
# C function -> the Python function that stands for it (_with_wrapped).
_wrapped_calls: Dict[Any, Any] = {}


# ---- facts about the real device ---------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cache_bytes(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    try:
        if text and text[-1] in scale:
            return int(text[:-1]) * scale[text[-1]]
        return int(text) if text else 0
    except ValueError:
        return 0


def cpu_name() -> str:
    """The CPU model, as the OS names it."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        brand = _sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    return platform.processor() or platform.machine() or "CPU"


def _cpu_cache(level_index: int) -> int:
    base = f"/sys/devices/system/cpu/cpu0/cache/index{level_index}/size"
    size = _cache_bytes(_read(base))
    if size == 0 and sys.platform == "darwin":
        name = {0: "hw.l1dcachesize", 2: "hw.l2cachesize"}.get(level_index)
        size = _cache_bytes(_sysctl(name)) if name else 0
    return size


def cpu_fields() -> Dict[str, Any]:
    """CUDA's property fields, filled from this machine's CPU and RAM."""
    import psutil
    name = cpu_name()
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        freq = psutil.cpu_freq()
    except (OSError, RuntimeError, NotImplementedError):
        freq = None
    l1 = _cpu_cache(0)
    return _complete({
        "name": name,
        "total_memory": psutil.virtual_memory().total,
        "multi_processor_count": physical,
        "max_threads_per_multi_processor": max(1, logical // physical),
        "max_threads_per_block": logical,
        "L2_cache_size": _cpu_cache(2),
        "clock_rate": int(freq.max * 1000) if freq and freq.max else 0,
        "shared_memory_per_block": l1,
        "shared_memory_per_block_optin": l1,
        "shared_memory_per_multiprocessor": l1,
        "warp_size": 1,
        "device_type": "cpu",
    })


def mps_fields(get_name: Callable[[], str], core_count: Callable[[], int],
               recommended: Callable[[], int]) -> Dict[str, Any]:
    """CUDA's property fields for an Apple GPU, from torch's own queries
    (torch.backends.mps.get_name/get_core_count,
    torch.mps.recommended_max_memory)."""
    return _complete({
        "name": get_name(),
        "total_memory": int(recommended()),
        "multi_processor_count": int(core_count()),
        "max_threads_per_block": 1024,   # Metal's threadgroup limit
        "warp_size": 32,                 # Apple's SIMD-group width
        "device_type": "mps",
    })


def _complete(fields: Dict[str, Any]) -> Dict[str, Any]:
    """Fills what the device does not tell with CUDA's neutral values."""
    base: Dict[str, Any] = {
        "major": 0, "minor": 0, "is_integrated": 1, "is_multi_gpu_board": 0,
        "max_threads_per_multi_processor": 1, "max_threads_per_block": 1,
        "gcnArchName": "", "warp_size": 1, "clock_rate": 0,
        "memory_clock_rate": 0, "memory_bus_width": 0,
        "shared_memory_per_block": 0, "shared_memory_per_block_optin": 0,
        "shared_memory_per_multiprocessor": 0, "regs_per_multiprocessor": 0,
        "pci_bus_id": 0, "pci_device_id": 0, "L2_cache_size": 0,
    }
    base.update(fields)
    base.setdefault("uuid", str(uuid.uuid5(uuid.NAMESPACE_OID,
                                           f"TorchDevice:{base['name']}")))
    return base


def accelerator_fields(module: Any, device: torch.device) -> Dict[str, Any]:
    """CUDA's property fields for a generic accelerator, from its device
    module's get_device_properties() (name, total_memory, and whatever
    else of CUDA's fields it has)."""
    fields: Dict[str, Any] = {"name": device.type, "device_type": device.type,
                              "multi_processor_count": 1}
    get = getattr(module, "get_device_properties", None)
    props = get(device) if get is not None else None
    for name in ("name", "total_memory", "multi_processor_count",
                 "max_threads_per_block", "warp_size", "L2_cache_size",
                 "is_integrated", "clock_rate", "uuid"):
        value = getattr(props, name, None)
        if value is not None:
            fields[name] = value if name in ("name", "uuid") else int(value)
    if "uuid" in fields:
        fields["uuid"] = str(fields["uuid"])
    if "total_memory" not in fields:
        info = getattr(module, "mem_get_info", None)
        fields["total_memory"] = int(info(device)[1]) if info else 0
    return _complete(fields)


def device_properties(profile: str) -> Any:
    """The DeviceProperties object of the one device (profiles mps,
    accelerator and cpu)."""
    if profile == "mps":
        fields = mps_fields(torch.backends.mps.get_name,
                            torch.backends.mps.get_core_count,
                            torch.mps.recommended_max_memory)
    elif profile == "accelerator":
        fields = accelerator_fields(_device_module(), _accel_device())
    else:
        fields = cpu_fields()
    fields["major"], fields["minor"] = capability(_bf16(profile))
    return _tdcore.DeviceProperties(**fields)


def capability(bf16: bool) -> Tuple[int, int]:
    """The compute capability shown: (8, 0) where the device computes
    bfloat16, else (7, 0) (docs/masquerade.md, "Compute capability").

    Real programs compare it with (7, 0) to refuse old GPUs and with (8, 0)
    to pick bfloat16 and TF32; a CPU or an Apple GPU does both of what an
    (8, 0) branch then asks (TF32 requests are no-ops there).  Nothing
    higher is claimed: (8, 9) and (9, 0) gate FP8 and Hopper kernels."""
    return (8, 0) if bf16 else (7, 0)


def _bf16(profile: str) -> bool:
    """Whether the device really used computes bfloat16: its capability
    record says, or the device is asked."""
    from . import _capabilities
    record = _capabilities.current()
    if record.bfloat16 is not None:
        return record.bfloat16
    if profile == "mps":
        return bool(torch.backends.mps.is_macos_or_newer(14, 0))
    if profile == "accelerator":
        ask = getattr(_device_module(), "is_bf16_supported", None)
        return bool(ask()) if ask is not None else True
    return True


def _accel_device() -> torch.device:
    from . import _patches
    device = _patches.accelerator_device()
    assert device is not None, "profile accelerator without an accelerator"
    return device


def _device_module() -> Any:
    """The generic accelerator's module (torch.xpu, torch.simaccel, ...),
    through torch's own get_device_module."""
    _capture_originals()
    return _originals["get_device_module"](_accel_device().type)


def _device_generator(module: Any, index: int) -> Optional[torch.Generator]:
    """The default generator a device module draws from, where it shows it:
    CUDA-style default_generators, or a default_generator (object, or a
    function of the index)."""
    generators = getattr(module, "default_generators", None)
    if generators and index < len(generators):
        return generators[index]
    default = getattr(module, "default_generator", None)
    if isinstance(default, torch.Generator):
        return default
    if callable(default):
        found = default(index)
        if isinstance(found, torch.Generator):
            return found
    return None


def _device_memory(module: Any) -> Dict[str, Any]:
    """The generic accelerator's memory counters for masq_install, from its
    device module (torch.accelerator's where the module lacks one)."""
    from . import _capabilities
    accel = _originals.get("accelerator", {})

    def fn(name: str, accel_name: Optional[str] = None) -> Any:
        found = getattr(module, name, None)
        return found if found is not None else accel.get(accel_name or name)
    counters = {
        "device_allocated": fn("memory_allocated"),
        "device_reserved": fn("memory_reserved"),
        "device_empty_cache": fn("empty_cache"),
        "device_set_fraction": fn("set_per_process_memory_fraction"),
    }
    if _capabilities.current().memory == "device":
        counters.update(
            device_max_allocated=fn("max_memory_allocated"),
            device_max_reserved=fn("max_memory_reserved"),
            device_reset_peak=fn("reset_peak_memory_stats"))
    return counters


def _mem_info_accel() -> Tuple[int, int]:
    module = _device_module()
    info = getattr(module, "mem_get_info", None)
    if info is None:
        info = _originals.get("accelerator", {}).get("get_memory_info")
    if info is None:
        return _mem_info_cpu()
    free, total = info()
    return int(free), int(total)


def _mem_info_cpu() -> Tuple[int, int]:
    import psutil
    vm = psutil.virtual_memory()
    return vm.available, vm.total


def _mem_info_mps() -> Tuple[int, int]:
    total = int(torch.mps.recommended_max_memory())
    return max(0, total - int(torch.mps.driver_allocated_memory())), total


def _cpu_utilization() -> int:
    import psutil
    return int(round(psutil.cpu_percent(interval=None)))


def _rss_reader() -> Callable[[], int]:
    """Resident memory where /proc is not there (C reads it on Linux)."""
    process: List[Any] = []

    def read() -> int:
        if not process:
            import psutil
            process.append(psutil.Process())
        return int(process[0].memory_info().rss)
    return read


def _total_memory() -> int:
    """Physical memory in bytes: the same number psutil reports, without
    importing it where the OS tells directly."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        import psutil
        return int(psutil.virtual_memory().total)


def _target_generator(profile: str) -> Optional[torch.Generator]:
    """The generator "cuda" code draws from on the device really used."""
    if profile == "mps":
        default_mps = _torch_compat.get("default_mps_generator")
        return default_mps() if default_mps is not None else None
    if profile == "accelerator":
        return _device_generator(_device_module(), _accel_device().index or 0)
    return torch.default_generator


def _capture_originals() -> None:
    if _originals:
        return
    # torch.accelerator is torch 2.6's; older releases have no such module.
    accelerator = getattr(torch, "accelerator", None)
    _originals.update({
        "cuda.is_available": torch.cuda.is_available,
        "cuda.memory_summary": torch.cuda.memory.memory_summary,
        "current_accelerator": getattr(accelerator, "current_accelerator",
                                       None),
        "accelerator.is_available": getattr(accelerator, "is_available",
                                            None),
        "accelerator.current_device_index": getattr(
            accelerator, "current_device_index", None),
        "get_device_module": torch.get_device_module,
        "mps.is_available": torch.backends.mps.is_available,
        "mps.is_built": torch.backends.mps.is_built,
        "cuda.is_built": torch.backends.cuda.is_built,
        "cuda.get_arch_list": torch.cuda.get_arch_list,
        "dist.is_nccl_available": getattr(torch.distributed,
                                          "is_nccl_available", None),
        "cuda.nccl.version": torch.cuda.nccl.version,
        "OrderedDict": collections.OrderedDict,
        # torch.mps's own actions: where MPS is not announced they answer
        # until the program asks for "mps" (mps_reverse.c)
        "mps": {name: getattr(torch.mps, name) for name in MPS_ACTIONS
                if hasattr(torch.mps, name)},
        # torch.accelerator's own, which the masquerade replaces
        "accelerator": {name: getattr(accelerator, name)
                        for name in ("memory_allocated", "memory_reserved",
                                     "max_memory_allocated",
                                     "max_memory_reserved",
                                     "reset_peak_memory_stats",
                                     "empty_cache", "get_memory_info",
                                     "synchronize")
                        if hasattr(accelerator, name)},
    })


# ---- installation -------------------------------------------------------


def _log_at(level: int) -> Optional[Callable[[str], None]]:
    if not _log.logger.isEnabledFor(level):
        return None
    return functools.partial(_log.logger.log, level)


def push_logging() -> None:
    """Hands C the log functions for the levels now enabled (None for the
    others, so that a disabled level costs nothing)."""
    _tdcore.masq_install(log_debug=_log_at(logging.DEBUG),
                         log_info=_log_at(logging.INFO))


def configure(truthful: Optional[bool] = None,
              truth_for: Optional[Tuple[str, ...]] = None,
              device_count: Optional[int] = None,
              announce: Optional[str] = None) -> None:
    """Who sees the truth from torch.cuda.is_available() (and
    torch.accelerator.is_available, torch.backends.mps.is_available on
    profile cuda): everyone when `truthful`, else torch's own modules and
    the packages named in `truth_for`.  `device_count`: the devices shown
    (None: LOCAL_WORLD_SIZE where a launcher set it, else 1).  `announce`:
    the kind announced on a machine with neither accelerator (takes effect
    at the next enable)."""
    global _announce
    kwargs: Dict[str, Any] = {}
    if truthful is not None:
        kwargs["truthful"] = bool(truthful)
    if truth_for is not None:
        kwargs["truth_for"] = tuple(str(p) for p in truth_for)
    kwargs["device_count"] = (launch_device_count() if device_count is None
                              else int(device_count))
    if announce is not None:
        _announce = announce
    _tdcore.masq_configure(**kwargs)
    push_logging()


def launch_device_count(env: Optional[Dict[str, str]] = None) -> int:
    """The devices a launcher asks for: LOCAL_WORLD_SIZE (torchrun, and
    launchers that follow it) when it is a positive integer, else 1."""
    env = os.environ if env is None else env   # type: ignore[assignment]
    raw = env.get(ENV_LOCAL_WORLD_SIZE, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


def cuda_emulated(profile: Optional[str] = None) -> bool:
    """Whether torch.cuda is the masquerade's on `profile` (default: the
    one in force): CUDA announced where it is not the device really used.
    Elsewhere torch.cuda, and what is built on it, stays torch's own."""
    profile = profile or _tdcore.settings()["profile"]
    return profile != "cuda" and "cuda" in announced(profile)


def announced(profile: Optional[str] = None) -> Tuple[str, ...]:
    """The accelerator kinds user code is told about on `profile` (default:
    the one in force): the real one and one more at most."""
    profile = profile or _tdcore.settings()["profile"]
    if profile == "cuda":
        return ("cuda", "mps")
    if profile == "mps":
        return ("mps", "cuda")
    # Neither kind is real (profile cpu; any profile whose device is
    # another kind): the configured one.
    return (_announce,)


def install(profile: str) -> None:
    """Hands _tdcore the facts and objects its callables answer from."""
    _capture_originals()
    originals = {
        "current_accelerator": _originals["current_accelerator"],
        "accelerator.is_available": _originals["accelerator.is_available"],
        "accelerator.current_device_index":
            _originals["accelerator.current_device_index"],
        "get_device_module": _originals["get_device_module"],
        "mps.is_available": _originals["mps.is_available"],
        "mps.is_built": _originals["mps.is_built"],
        "cuda.is_built": _originals["cuda.is_built"],
        "cuda.get_arch_list": _originals["cuda.get_arch_list"],
        "dist.is_nccl_available": _originals["dist.is_nccl_available"],
        "cuda.nccl.version": _originals["cuda.nccl.version"],
        "OrderedDict": _originals["OrderedDict"],
    }
    originals.update({f"mps.{name}": fn
                      for name, fn in _originals["mps"].items()})
    common: Dict[str, Any] = dict(
        orig_is_available=_originals["cuda.is_available"],
        orig_summary=_originals["cuda.memory_summary"],
        cuda_module=torch.cuda,
        record=_tdcore.record,
        originals=originals,
        # Where torch.mps says MPS is there (patches() below)
        mps_announced="mps" in announced(profile),
    )
    if profile == "cuda":
        _tdcore.masq_install(target_type="cuda", **common)
        push_logging()
        return
    is_mps = profile == "mps"
    is_accel = profile == "accelerator"
    bf16 = _bf16(profile)
    memory: Dict[str, Any] = dict.fromkeys(
        ("device_allocated", "device_reserved", "device_empty_cache",
         "device_set_fraction", "device_max_allocated",
         "device_max_reserved", "device_reset_peak"))
    if is_mps:
        props = device_properties(profile)
        lazy_props = None
        total_memory = props.total_memory
        memory.update(
            device_allocated=torch.mps.current_allocated_memory,
            device_reserved=torch.mps.driver_allocated_memory,
            device_empty_cache=torch.mps.empty_cache,
            device_set_fraction=torch.mps.set_per_process_memory_fraction)
        mem_info: Callable[[], Tuple[int, int]] = _mem_info_mps
        target = torch.device("mps", 0)
    elif is_accel:
        props = device_properties(profile)
        lazy_props = None
        total_memory = props.total_memory
        memory.update(_device_memory(_device_module()))
        mem_info = _mem_info_accel
        target = _accel_device()
    else:
        # Built at first use: psutil's import costs more than the rest of
        # enabling TorchDevice.
        props = None
        lazy_props = functools.partial(device_properties, profile)
        total_memory = _total_memory()
        mem_info = _mem_info_cpu
        target = torch.device("cpu")
        originals["utilization"] = _cpu_utilization
    if "cuda" not in announced(profile):
        # torch.mps answered from the masquerade's functions, which are not
        # installed on torch.cuda: CUDA is not announced.
        common["cuda_module"] = _masquerade_namespace()
    _tdcore.masq_install(
        props=props,
        props_factory=lazy_props,
        capability=capability(bf16),
        target_device=target,
        target_type=target.type,
        generator=_target_generator(profile),
        device_memory=is_mps or is_accel,
        bf16=bf16,
        total_memory=total_memory,
        rss=_rss_reader(),
        mem_info=mem_info,
        **memory,
        **common,
    )
    push_logging()


# ---- the patch list -----------------------------------------------------


def _function(name: str, module_name: str) -> Any:
    key = (name, module_name)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = _tdcore.masq_function(name, module_name)
    return fn


def _with_wrapped(fn: Any) -> Any:
    """A Python function that calls `fn` and names it as ``__wrapped__``.

    torch decorates some of the functions the masquerade replaces
    (functools.lru_cache, typing_extensions.deprecated), and torch's own
    modules read ``<function>.__wrapped__`` at import: torch._dynamo does
    for ``torch.backends.mps.is_available`` since torch 2.14.  A C function
    has no attributes, so there the replacement is this one, made once per
    function (its identity is what pickle and dynamo's tables find).

    It runs in globals of its own (_patches.passthrough): the C functions
    that tell torch's own code the truth read their caller's module, and
    this frame's would be TorchDevice's."""
    from ._patches import passthrough
    made = _wrapped_calls.get(fn)
    if made is None:
        def forward(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        call = passthrough(forward)
        call.__name__ = call.__qualname__ = fn.__name__
        call.__module__ = fn.__module__
        call.__doc__ = fn.__doc__
        call.__wrapped__ = fn  # type: ignore[attr-defined]
        made = _wrapped_calls[fn] = call
    return made


def _fn_patches(owner: Any, names: Tuple[str, ...], module_name: str,
                lookup_prefix: str = "", aliases: bool = True) -> List[Any]:
    """Patches owner.<name> for each name, and the same name in the
    submodule that defines it (torch.cuda.memory, torch.cuda.random, ...),
    where torch's own functions look it up as a global."""
    from ._patches import Patch, homes
    patches = []
    for name in names:
        value = getattr(owner, name, None)
        if value is None:
            continue
        defined_in = getattr(value, "__module__", None)
        own_module = (defined_in if isinstance(defined_in, str)
                      and defined_in.startswith(module_name) else module_name)
        fn = _function(lookup_prefix + name, own_module)
        if getattr(value, "__wrapped__", None) is not None:
            fn = _with_wrapped(fn)
        patches += [Patch(home, name, lambda orig, fn=fn: fn)
                    for home in (homes(owner, name) if aliases else [owner])]
    return patches


def _value_patch(owner: Any, name: str, value: Any) -> Any:
    from ._patches import Patch
    return Patch(owner, name, lambda orig: value)


def _amp_patches(profile: str) -> List[Any]:
    """torch.autocast / GradScaler / the autocast state functions, where the
    policy redirects a device type (TorchDevice/_amp.py)."""
    from ._patches import Patch
    from torch.amp import autocast_mode, grad_scaler
    from . import _amp
    _amp.install(profile, _keep_float16, bf16_ok=_bf16(profile))
    if not _amp.redirected_types(profile):
        return []
    patches = [
        Patch(autocast_mode.autocast, "__init__",
              lambda orig: _amp.replacement("autocast.__init__")),
        Patch(grad_scaler.GradScaler, "__init__",
              lambda orig: _amp.replacement("GradScaler.__init__")),
    ]
    names = ["is_autocast_enabled", "get_autocast_dtype",
             "set_autocast_dtype", "set_autocast_enabled"]
    if "cuda" in _amp.redirected_types(profile):
        names += [n for n in _amp.GPU_NAMES if hasattr(torch, n)]
    for name in names:
        patches.append(Patch(torch, name,
                             lambda orig, n=name: _amp.replacement(n)))
    if _amp.has_cast():
        patches.append(Patch(autocast_mode, "_cast",
                             lambda orig: _amp.replacement("_cast")))
    return patches


_keep_float16 = False


def set_keep_float16(keep: bool) -> None:
    """TORCHDEVICE_KEEP_FLOAT16: takes effect at the next enable."""
    global _keep_float16
    _keep_float16 = bool(keep)


def _version_patches() -> List[Any]:
    """torch.version.cuda stays truthful (None on a CPU wheel) unless
    TORCHDEVICE_CUDA_VERSION names a version to report: torch's own modules
    read it too, and a module attribute cannot tell them apart."""
    version = os.environ.get(ENV_CUDA_VERSION, "").strip()
    if not version:
        return []
    return [_value_patch(torch.version, "cuda", version)]


def _accelerator_patches() -> List[Any]:
    """torch.accelerator's, on a torch that has it (2.6 and later)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None:
        return []
    return _fn_patches(accelerator, ACCELERATOR, "torch.accelerator")


def _masquerade_patches(profile: str) -> List[Any]:
    import torch.cuda.graphs
    import torch.cuda.memory
    import torch.cuda.nvtx
    cuda = torch.cuda
    table: List[Any] = []
    table += _fn_patches(cuda, QUERY + MEMORY + RNG + MISC, "torch.cuda")
    table += _fn_patches(torch.cuda.memory, MEMORY_PRIVATE,
                         "torch.cuda.memory")
    table += _fn_patches(torch.cuda.nvtx, NVTX, "torch.cuda.nvtx")
    generator = _target_generator(profile)
    table.append(_value_patch(cuda, "default_generators",
                              (generator,) if generator is not None else ()))
    table += _accelerator_patches()
    table += _fn_patches(torch, ("get_device_module",), "torch",
                         aliases=False)
    table += _fn_patches(torch.backends.cuda, CUDA_BACKENDS,
                         "torch.backends.cuda", aliases=False)
    if torch.distributed.is_available() and "cuda" in announced(profile):
        # NCCL is there where CUDA is: "nccl" runs on gloo (_distributed).
        table += _fn_patches(torch.distributed, DISTRIBUTED,
                             "torch.distributed")
        if not _originals["dist.is_nccl_available"]():
            # A torch without NCCL raises at nccl.version(); with NCCL
            # (a CUDA build on a machine without a GPU) its own answers.
            table += _fn_patches(torch.cuda.nccl, NCCL, "torch.cuda.nccl")
    table += _version_patches()
    return table


# The torch.cuda functions torch.mps answers through (mps_reverse.c).
_MPS_VIA_CUDA = (
    "empty_cache", "memory_allocated", "memory_reserved", "mem_get_info",
    "manual_seed", "seed", "get_rng_state", "set_rng_state",
    "set_per_process_memory_fraction", "device_count",
)


def _masquerade_namespace() -> Any:
    """The masquerade's torch.cuda functions, not installed anywhere: what
    torch.mps answers through when MPS, not CUDA, is announced on a machine
    with neither."""
    names = {n: _function(n, "torch.cuda") for n in _MPS_VIA_CUDA}
    return types.SimpleNamespace(synchronize=_tdcore.synchronize, **names)


# What torch.mps answers that does not announce MPS: the actions a
# program written for MPS calls after choosing its device (hard-coded
# requests, redirected like device="mps" whichever kind is announced).
MPS_ACTIONS = tuple(n for n in MPS_REVERSE
                    if n not in ("is_available", "device_count"))


def _reverse_patches(announce_mps: bool = True) -> List[Any]:
    import torch.backends.mps
    table: List[Any] = []
    table += _fn_patches(torch.mps, MPS_REVERSE if announce_mps
                         else MPS_ACTIONS, "torch.mps",
                         lookup_prefix="mps.", aliases=False)
    if announce_mps:
        table += _fn_patches(torch.backends.mps, MPS_BACKENDS_REVERSE,
                             "torch.backends.mps", lookup_prefix="mps.",
                             aliases=False)
    return table


def patches() -> List[Any]:
    """The patch-table entries for the profile in force (called by
    _patches.patch_table() at enable time).

    Never more than one accelerator kind is announced that is not there:
    on profile cuda MPS is (for MPS-written code), on profile mps CUDA is,
    and on profile cpu the configured one, CUDA by default."""
    profile = _tdcore.settings()["profile"]
    install(profile)
    table = _amp_patches(profile)
    if profile == "cuda":
        return table + _reverse_patches()
    if "cuda" not in announced(profile):
        return table + _reverse_patches() + _accelerator_patches()
    if profile == "mps":
        return table + _masquerade_patches(profile)
    # Neither kind is real (profile cpu, or another accelerator) and CUDA
    # is announced: torch.mps still does what an MPS-written program asks
    # of it, but does not say it is there.
    return (table + _masquerade_patches(profile)
            + _reverse_patches(announce_mps=False))
