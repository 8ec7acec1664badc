"""Shared test helpers.  Tests run against the real, installed torch."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Dict

import pytest

ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

# A CUDA build of torch (on a machine without a GPU here): torch's own
# answers differ from a CPU build's ("Found no NVIDIA driver" where a CPU
# build says "Torch not compiled with CUDA enabled", and more).
CUDA_BUILD = torch.version.cuda is not None

import TorchDevice  # noqa: E402

PROFILE = TorchDevice._patches.detect_profile()
HAS_CUDA = PROFILE == "cuda"
HAS_MPS = PROFILE == "mps"
# `make test-accel`: the simulated accelerator (tests/simaccel) is the
# machine's accelerator, used with MPS's capability record
# (docs/hardware.md); ACCEL is its device, None in the plain CPU run.
ACCEL = TorchDevice._patches.accelerator_device()
MPS_LIKE = PROFILE == "accelerator" and TorchDevice.policy()["capabilities"] == "mps"
# The device "cuda" requests land on in this run.
TARGET = ACCEL if ACCEL is not None else torch.device("cpu")
# The same on an NVIDIA GPU, where "cuda" is CUDA's own, untouched (TARGET
# stays the emulation's device there: None of it is in use).
CUDA_LANDS = torch.device("cuda", 0) if HAS_CUDA else TARGET
# The mode of this run: the default ("cpu-stays-cpu"), or the
# TORCHDEVICE_MODE of the run (make test-accel: "accelerate").
DEFAULT_MODE = TorchDevice.config().mode
# Where a request without a device lands: the host in "cpu-stays-cpu"
# (the default), TARGET in "accelerate".
HOST_LANDS = TARGET if DEFAULT_MODE == "accelerate" else torch.device("cpu")
# On an NVIDIA GPU torch.cuda is CUDA's own: a "cuda" request is neither
# redirected nor reported there.
cuda_redirected = pytest.mark.skipif(
    HAS_CUDA, reason="profile cuda: \"cuda\" requests are CUDA's own, "
    "nothing is redirected or reported")
# Variables that describe the run, not what a test sets: kept for the
# child processes of tests (the simulated accelerator's SIMACCEL_* are
# never dropped; make test-accel's record and mode are kept).
MACHINE_VARIABLES = ("TORCHDEVICE_CAPABILITIES", "TORCHDEVICE_MODE")


# For programs whose results are compared bit for bit with another run's:
# with several threads the BLAS may split a product differently from one
# run to the next when the machine is busy (seen in CI: the last bits of a
# loss differed between two runs of the same kernels).  One thread and MKL's
# strict mode give every run of the same ops the same bits, so a difference
# left is one of the ops computed.
SAME_BITS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "MKL_CBWR": "AUTO,STRICT"}


# Ends a test program (which imports os, sys and threading): its own thread
# needs the GIL once the program is done, with forced GIL switches made
# rare, so it runs (and writes "freed" to the file named by argv[1]) only if
# the main thread lets go of the GIL before the interpreter finalizes
# (docs/reliability.md, "At exit").
LAST_WORD = '''
marker = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)

def last_word():
    threading.main_thread().join()      # returns once the program is done
    os.write(marker, b"freed")          # one call once it has the GIL

sys.setswitchinterval(5.0)
threading.Thread(target=last_word, daemon=True).start()
'''


def settings_free_env() -> Dict[str, str]:
    """This run's environment without TorchDevice's and the simulated
    accelerator's settings, for a child that chooses its own.  Where the
    simulated accelerator is built (SIMACCEL_BUILD_DIR) is not a setting:
    it stays, or a child looks for a build that is not there."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TORCHDEVICE", "SIMACCEL"))
            or k == "SIMACCEL_BUILD_DIR"}


def child_env(**extra: str) -> Dict[str, str]:
    """The environment for a test's child process: this run's, without the
    TORCHDEVICE_* settings a test or a developer's shell may have set, except
    MACHINE_VARIABLES; `extra` on top."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TORCHDEVICE") or k in MACHINE_VARIABLES}
    env.update(extra)
    return env


def run_python(code: str = "", *args: str, env: dict | None = None,
               script: Path | None = None, timeout: float = 300,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs Python in a fresh process (TorchDevice not imported unless the
    code does), returning the completed process (text mode)."""
    full_env = child_env()
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


@pytest.fixture(scope="session", autouse=True)
def children_write_temporary_files_under_basetemp(tmp_path_factory):
    """The processes tests start write their temporary files (torchrun's
    log folders, multiprocessing's) in this run's pytest folder, which
    pytest prunes, not in the machine's: torchrun leaves its folders."""
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("children_tmp"))
    yield
    if saved is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved


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
                          float64=saved.float64, log_level=saved.log_level,
                          report=saved.report)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (scripts/gpu_check.sh)")
    # A test whose processes all choose their own hardware computes the same
    # in either run: make test runs it, make test-accel need not.
    again = pytest.mark.skip(reason="chooses its own hardware: run by make test")
    for item in items:
        if item.get_closest_marker("cuda") is not None and not HAS_CUDA:
            item.add_marker(skip)
        if item.get_closest_marker("own_machine") is not None and \
                os.environ.get("SIMACCEL_AUTOLOAD") == "1":
            item.add_marker(again)


def host(t: torch.Tensor) -> torch.Tensor:
    """`t` on the host, for comparing with a native CPU result: in
    accelerate mode `.cpu()` itself lands on the accelerator."""
    with TorchDevice.cpu_override():
        return t.cpu()


@contextlib.contextmanager
def mps_fallback():
    """Operators the device lacks run on the host, as under TorchDevice's
    launcher, which sets the fallback variable of the device's capability
    record (MPS's PYTORCH_ENABLE_MPS_FALLBACK; the simulated accelerator
    honours it).  Nothing to do elsewhere."""
    if not MPS_LIKE:
        yield
        return
    import simaccel
    before = simaccel.fallback_enabled()
    simaccel.set_fallback_enabled(True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore",
                                    message=simaccel.FALLBACK_WARNING_PATTERN)
            yield
    finally:
        simaccel.set_fallback_enabled(before)


# The same in a child process (code run by run_python): put first in the
# child's code, after `import torch`.
SIMULATED_MPS_CHILD = """
import TorchDevice as _td
from TorchDevice import _patches as _td_patches, _tdcore as _td_core
if not (_td.hardware_profile() == "accelerator"
        and _td.policy()["capabilities"] == "mps"):
    # SimulatedMPS: the mps profile, `meta` standing in for the MPS device
    _td.disable()
    _td_patches.apply(mps_device=torch.device("meta"))
    _td_core.configure("mps", "accelerate", "downcast")
"""
# Where MPS requests land in simulated_mps / SIMULATED_MPS_CHILD.
MPS_LIKE_DEVICE = str(ACCEL) if MPS_LIKE else "meta"


def configure_mps_like(mode: str = "accelerate",
                       float64: str = "downcast") -> None:
    """Sets the policy of MPS's code paths (inside `simulated_mps`): the
    accelerator profile with MPS's record in `make test-accel`, the mps
    profile with the meta stand-in otherwise."""
    from TorchDevice import _tdcore
    if MPS_LIKE:
        _tdcore.configure("accelerator", mode, float64, device_float64=False)
    else:
        _tdcore.configure("mps", mode, float64)


@pytest.fixture
def simulated_mps():
    """MPS's code paths on a machine without Apple hardware; yields the
    device MPS requests land on.

    In `make test-accel`: the simulated accelerator with MPS's capability
    record, as the run is set up: real tensors, real copies, torch's own
    device-mismatch checks.

    In the plain CPU run: SimulatedMPS, the mps profile with torch's `meta`
    device as the MPS target.  Everything runs for real (policy, wrappers,
    torch) except that nothing is computed, so "where did it land" and
    "which dtype" are observable without Metal.
    """
    from TorchDevice import _patches
    saved = TorchDevice.config()
    if MPS_LIKE:
        configure_mps_like("accelerate", saved.float64)
        try:
            yield ACCEL
        finally:
            TorchDevice.configure(target=saved.target, mode=saved.mode,
                                  float64=saved.float64)
        return
    TorchDevice.disable()
    stand_in = torch.device("meta")
    _patches.apply(mps_device=stand_in)
    configure_mps_like("accelerate", saved.float64)
    try:
        yield stand_in
    finally:
        TorchDevice.disable()
        TorchDevice.enable()
        TorchDevice.configure(target=saved.target, mode=saved.mode,
                              float64=saved.float64)
