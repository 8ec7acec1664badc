"""Shared test helpers.  Tests run against the real, installed torch."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402
import TorchDevice  # noqa: E402

HAS_CUDA = TorchDevice._patches.detect_profile() == "cuda"
HAS_MPS = TorchDevice._patches.detect_profile() == "mps"


def run_python(code: str = "", *args: str, env: dict | None = None,
               script: Path | None = None, timeout: float = 300,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs Python in a fresh process (TorchDevice not imported unless the
    code does), returning the completed process (text mode)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("TORCHDEVICE")}
    full_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    if env:
        full_env.update(env)
    cmd = [sys.executable]
    if script is not None:
        cmd.append(str(script))
    else:
        cmd += ["-c", textwrap.dedent(code)]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=str(cwd or ROOT))


@pytest.fixture
def restore_config():
    """Puts back the configuration and override state after a test."""
    saved = TorchDevice.config()
    override = TorchDevice._tdcore.get_cpu_override()
    enabled = TorchDevice.is_enabled()
    yield
    TorchDevice._tdcore.set_cpu_override(override)
    if enabled:
        TorchDevice.enable()
    else:
        TorchDevice.disable()
    TorchDevice.configure(target=saved.target, mode=saved.mode,
                          float64=saved.float64, log_level=saved.log_level)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (scripts/gpu_check.sh)")
    for item in items:
        if item.get_closest_marker("cuda") is not None and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture
def simulated_mps():
    """SimulatedMPS: the mps profile on a machine without Apple hardware.

    Everything runs for real (policy, wrappers, torch) except that the MPS
    target device is torch's `meta` device, so "where did it land" and
    "which dtype" are observable without Metal.  Yields the stand-in device.
    """
    from TorchDevice import _patches, _tdcore
    saved = TorchDevice.config()
    TorchDevice.disable()
    stand_in = torch.device("meta")
    _patches.apply(mps_device=stand_in)
    _tdcore.configure("mps", "accelerate", saved.float64)
    try:
        yield stand_in
    finally:
        TorchDevice.disable()
        TorchDevice.enable()
        TorchDevice.configure(target=saved.target, mode=saved.mode,
                              float64=saved.float64)
