"""A script written for Apple MPS (examples/mps_written_script.py:
`torch.backends.mps.is_available()`, `torch.device("mps")`,
`torch.mps.synchronize()`, `torch.mps` memory counters) runs unmodified
under `python -m TorchDevice run`: here on the CPU, bit for bit like the
same program written for the CPU by hand; on NVIDIA (scripts/gpu_check.sh)
on the GPU."""
from __future__ import annotations

import re
import sys

import pytest
import torch

import TorchDevice
from conftest import HAS_CUDA, HAS_MPS, ROOT, TARGET
from cpu_reference.audit import (assert_identical, finish, start,
                                 assert_only_accelerator_lines_differ)

EXAMPLE = ROOT / "examples" / "mps_written_script.py"
REFERENCE = ROOT / "tests" / "cpu_reference" / "mps_written_script.py"
MPS_WORDS = re.compile(r"mps", re.IGNORECASE)


def test_reference_variant_changes_only_mps_lines():
    assert_only_accelerator_lines_differ(EXAMPLE, REFERENCE, MPS_WORDS)


@pytest.mark.slow
@pytest.mark.skipif(HAS_CUDA or HAS_MPS,
                    reason="compares against the CPU: a CPU-only machine")
def test_mps_script_runs_on_cpu_bit_for_bit(tmp_path):
    td_out, ref_out = tmp_path / "torchdevice.pt", tmp_path / "reference.pt"
    # MPS, not CUDA, is what this program looks for on a machine with
    # neither (docs/masquerade.md, "Which accelerator is announced").
    td = start([sys.executable, "-m", "TorchDevice", "run", str(EXAMPLE),
                "--out", str(td_out)], env={"TORCHDEVICE_ANNOUNCE": "mps"})
    ref = start([sys.executable, str(REFERENCE), "--out", str(ref_out)])
    out, _ = finish(td), finish(ref)
    with TorchDevice.cpu_override():       # compared on the host
        got = torch.load(td_out, weights_only=True, map_location="cpu")
        want = torch.load(ref_out, weights_only=True, map_location="cpu")
    # Where the machine has another accelerator (make test-accel), the
    # program runs there; its kernels are the host's, so the numbers still
    # are the CPU program's.
    assert want.pop("device") == "cpu"
    assert got.pop("device") == str(TARGET)
    assert_identical(want, got)
    assert re.search(r"MPS memory: [\d.]+ MiB allocated", out), out


@pytest.mark.cuda
def test_mps_script_runs_on_nvidia(tmp_path):
    """The MPS-written program trains on the CUDA GPU."""
    out_file = tmp_path / "r.pt"
    out = finish(start([sys.executable, "-m", "TorchDevice", "run",
                        str(EXAMPLE), "--out", str(out_file)]))
    assert re.search(r"steps in \d+ ms on cuda:0; loss", out), out
    mib = re.search(r"MPS memory: ([\d.]+) MiB allocated", out)
    assert mib and float(mib.group(1)) > 0, out      # from torch.cuda
    result = torch.load(out_file, weights_only=True, map_location="cpu")
    assert result["device"] == "cuda:0"
    assert result["losses"][-10:].mean() < result["losses"][:10].mean() / 2
