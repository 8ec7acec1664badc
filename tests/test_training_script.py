"""A complete CUDA research-style training script (examples/
train_cuda_research.py: argparse, cudnn.benchmark, torch.cuda.amp autocast
and GradScaler, DataLoader(pin_memory=True, num_workers=2),
.cuda(non_blocking=True), CUDA events, memory statistics, checkpoints every
N steps, --resume) runs unmodified under `python -m TorchDevice run`, and a
run resumed from a mid-epoch checkpoint continues bit for bit like the
uninterrupted run."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest
import torch

import TorchDevice

from conftest import (ACCEL, HAS_CUDA, HAS_MPS, ROOT, SAME_BITS, child_env,
                      run_python)
from cpu_reference.audit import assert_identical

SCRIPT = ROOT / "examples" / "train_cuda_research.py"
# 192 images, batch 32: 6 steps an epoch, 18 in all; checkpoints at 4, 8,
# 12, 16 and 18.  Step 8 is the 2nd step of epoch 1: resuming there
# exercises the position inside an epoch, not only an epoch boundary.
COMMON = ["--epochs", "3", "--train-size", "192", "--val-size", "96",
          "--save-every", "4", "--print-freq", "3"]


def launch(*args: str, env_extra: dict | None = None) -> str:
    env = child_env(PYTHONDONTWRITEBYTECODE="1", PYTHONWARNINGS="ignore",
                    **SAME_BITS, **(env_extra or {}))
    # Bit-for-bit resumption is a property of the CPU kernels this machine
    # runs; cudnn.benchmark may pick nondeterministic GPU algorithms.
    target = ["--target", "cpu"] if HAS_CUDA or HAS_MPS else []
    proc = subprocess.run([sys.executable, "-m", "TorchDevice", "run",
                           *target, str(SCRIPT), *COMMON, *args],
                          capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=280)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    return proc.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("train")
    full, resumed = base / "full", base / "resumed"
    out_full = launch("--out-dir", str(full))
    out_resumed = launch("--out-dir", str(resumed), "--resume",
                         str(full / "checkpoint_000008.pt"))
    return {"full": full, "resumed": resumed, "out_full": out_full,
            "out_resumed": out_resumed}


def test_script_is_unmodified_cuda_code():
    source = SCRIPT.read_text()
    tree = ast.parse(source)
    code = "\n".join(source.splitlines()[tree.body[0].end_lineno:])
    assert "TorchDevice" not in code      # only the docstring names it
    for needle in ("cudnn.benchmark = True", "torch.cuda.amp.autocast",
                   "torch.cuda.amp.GradScaler", "pin_memory=True",
                   "num_workers=args.workers", "non_blocking=True",
                   "torch.cuda.Event(enable_timing=True)",
                   "torch.cuda.max_memory_allocated",
                   "torch.cuda.set_device", "map_location=loc"):
        assert needle in source, needle
    assert re.search(r'"--workers", type=int, default=2', source)


@pytest.mark.slow
def test_training_runs_and_learns(runs):
    out = runs["out_full"]
    summary = json.loads((runs["full"] / "summary.json").read_text())
    assert summary["step"] == 18
    losses = [loss for _, loss in summary["history"]]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses
    assert summary["val_acc"] > 0.5, summary          # 4 classes: chance 0.25
    # CUDA events timed the run, memory statistics answered.
    assert summary["gpu_ms"] > 0 and summary["peak_mib"] > 0, summary
    assert re.search(r"trained to step 18 in \d+ ms \(CUDA events\)", out)
    assert re.search(r"MiB allocated, [\d.]+ MiB peak", out), out
    saved = sorted(p.name for p in runs["full"].glob("checkpoint_*.pt"))
    assert saved == [f"checkpoint_{s:06d}.pt" for s in (4, 8, 12, 16, 18)]


@pytest.mark.slow
def test_resumed_run_continues_bit_for_bit(runs):
    assert "=> resumed at step 8 (epoch 1)" in runs["out_resumed"]
    full = torch.load(runs["full"] / "checkpoint_000018.pt",
                      weights_only=True)
    resumed = torch.load(runs["resumed"] / "checkpoint_000018.pt",
                         weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng_cpu",
                "history", "step"):
        assert_identical(full[key], resumed[key], key)
    # The resumed process did the steps after 8 itself.
    assert sorted(p.name for p in runs["resumed"].glob("checkpoint_*.pt")) \
        == [f"checkpoint_{s:06d}.pt" for s in (12, 16, 18)]
    a = json.loads((runs["full"] / "summary.json").read_text())
    b = json.loads((runs["resumed"] / "summary.json").read_text())
    assert (a["val_loss"], a["val_acc"]) == (b["val_loss"], b["val_acc"])


@pytest.mark.slow
def test_checkpoint_loads_without_torchdevice(runs):
    """Written under TorchDevice, read by plain torch with weights_only."""
    path = runs["full"] / "checkpoint_000018.pt"
    proc = run_python(f"""
        import sys, torch
        ckpt = torch.load({str(path)!r}, weights_only=True)
        assert "TorchDevice" not in sys.modules
        devices = {{t.device.type for t in ckpt["model"].values()}}
        print(ckpt["step"], sorted(devices))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[0] == "18"


@pytest.mark.slow
def test_float32_run_on_the_accelerator_matches_a_cpu_run(tmp_path):
    """Without AMP (whose dtype is the device's: float16 here, another on
    the CPU) the script computes in float32; on another accelerator, whose
    kernels are the host's, its training equals a CPU run's.  Validation
    is not compared: its loader's worker seeds come from the host
    generator, which the CPU run also draws the model's initialisation
    and dropout from, and the accelerator run draws them from the
    accelerator's."""
    if ACCEL is None:
        pytest.skip("this run is the CPU run")
    args = ["--epochs", "2", "--train-size", "96", "--val-size", "32",
            "--save-every", "100", "--print-freq", "100", "--no-amp"]
    here, cpu = tmp_path / "here", tmp_path / "cpu"
    launch(*args, "--out-dir", str(here))
    launch(*args, "--out-dir", str(cpu),
           env_extra={"TORCHDEVICE_TARGET": "cpu"})
    with TorchDevice.cpu_override():        # compared on the host
        got = torch.load(here / "last.pt", weights_only=True,
                         map_location="cpu")
        want = torch.load(cpu / "last.pt", weights_only=True,
                          map_location="cpu")
    assert got["step"] == want["step"] == 6
    for (step, a), (_, b) in zip(got["history"], want["history"]):
        assert abs(a - b) <= 1e-5, (step, a, b)
    for name, w in want["model"].items():
        diff = (got["model"][name].double() - w.double()).abs().max()
        assert diff <= 1e-5, (name, float(diff))
