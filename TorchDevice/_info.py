"""`python -m TorchDevice info`: what TorchDevice sees and decides.

The hardware profile, the policy in force, the configuration, versions, and
what each `torch.cuda` query answers a program once TorchDevice is enabled.
The queries are evaluated as a user's program would make them (from code
whose module is `__main__`, outside torch and TorchDevice), so they get the
answers the program would get; a query that raises shows its exception.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch

import TorchDevice

from . import _config, _patches

QUERIES: Tuple[str, ...] = (
    "torch.cuda.is_available()",
    "torch.cuda.device_count()",
    "torch.cuda.current_device()",
    "torch.cuda.get_device_name(0)",
    "torch.cuda.get_device_capability(0)",
    "torch.cuda.get_device_properties(0)",
    "torch.cuda.is_bf16_supported()",
    "torch.cuda.mem_get_info()",
    "torch.cuda.memory_allocated()",
    "torch.cuda.max_memory_allocated()",
    "torch.cuda.memory_reserved()",
    "torch.cuda.get_arch_list()",
    "torch.version.cuda",
    "torch.backends.cudnn.is_available()",
    "torch.backends.mps.is_available()",
    'torch.device("cuda")',
    'torch.zeros(1, device="cuda").device',
    "torch.zeros(1).device",
)

# Variables that change what TorchDevice or torch does.
ENV_VARS: Tuple[str, ...] = (
    "TORCHDEVICE", _config.ENV_TARGET, _config.ENV_MODE, _config.ENV_FLOAT64,
    _config.ENV_LOG_LEVEL, _config.ENV_REPORT, "PYTORCH_ENABLE_MPS_FALLBACK",
    "TORCH_DEVICE_BACKEND_AUTOLOAD", "CUDA_VISIBLE_DEVICES",
)

_PROBE_FILE = "<torchdevice info>"


def ask(expression: str) -> Dict[str, Any]:
    """{"query", "value"} or {"query", "error"}: the answer a user program
    gets.  The expression runs in a namespace named __main__."""
    namespace = {"__name__": "__main__", "torch": torch}
    try:
        code = compile(expression, _PROBE_FILE, "eval")
        value = eval(code, namespace)  # noqa: S307  (fixed strings above)
    except Exception as exc:  # each query may raise: show it, go on
        return {"query": expression,
                "error": f"{type(exc).__name__}: {exc}".strip()}
    return {"query": expression, "value": repr(value)}


def _autoload_registered() -> bool:
    try:
        from importlib.metadata import entry_points
        found = entry_points(group="torch.backends")
    except Exception:
        return False
    return any(ep.value.startswith("torchdevice_autoload") for ep in found)


def collect() -> Dict[str, Any]:
    """Everything `info` shows, as plain data (also its --json output)."""
    TorchDevice.enable()
    cfg = TorchDevice.config()
    mps_built = getattr(torch.backends.mps, "is_built", lambda: False)()
    try:
        import psutil
        memory = psutil.virtual_memory().total
    except Exception:
        memory = None
    return {
        "versions": {
            "torchdevice": TorchDevice.__version__,
            "torch": torch.__version__,
            "torch_cuda_build": torch.version.cuda,
            "python": platform.python_version(),
            "executable": sys.executable,
            "platform": platform.platform(),
        },
        "hardware": {
            "detected_profile": _patches.detect_profile(),
            "usable_profiles": list(_patches.available_profiles()),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "memory_bytes": memory,
            "mps_built": bool(mps_built),
        },
        "policy": TorchDevice.policy(),
        "config": {
            "target": cfg.target,
            "mode": cfg.mode,
            "float64": cfg.float64,
            "log_level": cfg.log_level,
            "report": cfg.report,
        },
        "environment": {k: os.environ.get(k) for k in ENV_VARS},
        "zero_edit_activation": _autoload_registered(),
        "enabled": TorchDevice.is_enabled(),
        "torch_cuda": [ask(q) for q in QUERIES],
    }


def _section(title: str, rows: List[Tuple[str, Any]]) -> List[str]:
    width = max((len(k) for k, _ in rows), default=0)
    return [title] + [f"  {k.ljust(width)}  {v}" for k, v in rows]


def format_text(info: Dict[str, Any]) -> str:
    v, hw, pol, cfg = (info["versions"], info["hardware"], info["policy"],
                       info["config"])
    mem = hw["memory_bytes"]
    lines: List[str] = []
    lines += _section("versions", [
        ("TorchDevice", v["torchdevice"]),
        ("torch", f"{v['torch']} (CUDA build: {v['torch_cuda_build']})"),
        ("Python", f"{v['python']} ({v['executable']})"),
        ("platform", v["platform"]),
    ])
    lines += _section("hardware", [
        ("detected profile", hw["detected_profile"]),
        ("usable targets", ", ".join(hw["usable_profiles"])),
        ("machine", f"{hw['machine']}, {hw['cpu_count']} CPUs"
                    + (f", {mem / 2**30:.1f} GiB" if mem else "")),
        ("MPS built", hw["mps_built"]),
    ])
    lines += _section("policy in force", [
        ("enabled", info["enabled"]),
        ("profile", pol["profile"]),
        ("mode", pol["mode"]),
        ("float64", pol["float64"]),
        ("cpu override", pol["cpu_override"]),
    ])
    env_rows = [(k, val if val is not None else "(unset)")
                for k, val in info["environment"].items()]
    lines += _section("configuration", [
        ("target", cfg["target"] if cfg["target"] else "(detect)"),
        ("mode", cfg["mode"]),
        ("float64", cfg["float64"]),
        ("log level", _level_name(cfg["log_level"])),
        ("report", cfg["report"]),
        ("zero-edit activation",
         "registered (set TORCHDEVICE=1)" if info["zero_edit_activation"]
         else "not registered (reinstall: pip install -e .)"),
    ] + env_rows)
    lines += _section("what torch.cuda answers the program", [
        (q["query"], q["value"] if "value" in q else f"raises {q['error']}")
        for q in info["torch_cuda"]
    ])
    return "\n".join(lines) + "\n"


def _level_name(level: Optional[int]) -> str:
    import logging
    if level is None:
        effective = logging.getLogger("TorchDevice").getEffectiveLevel()
        return (f"not set: logging's configuration "
                f"({logging.getLevelName(effective)})")
    return logging.getLevelName(level)


def main(argv: List[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write("usage: python -m TorchDevice info [--json]\n")
        return 0
    unknown = [a for a in argv if a != "--json"]
    if unknown:
        sys.stderr.write(f"info: unknown argument {unknown[0]}\n"
                         "usage: python -m TorchDevice info [--json]\n")
        return 2
    data = collect()
    if "--json" in argv:
        import json
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(format_text(data))
    return 0
