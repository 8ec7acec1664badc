"""Helpers shared by the whole-program tests (test_transformers.py,
test_mps_script.py): checking that a hand-made CPU reference variant
differs from its example only where the example names the accelerator, and
comparing saved results bit for bit."""
from __future__ import annotations

import ast
import difflib
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[2]


def start(cmd: List[str], env: Optional[Dict[str, str]] = None
          ) -> subprocess.Popen:
    """Starts a program in a fresh process, without TORCHDEVICE* settings
    inherited from the test run (except those describing the run: make
    test-accel's record and mode), warnings off so that output is stable."""
    from conftest import SAME_BITS, child_env
    full = child_env(PYTHONDONTWRITEBYTECODE="1", PYTHONWARNINGS="ignore",
                     **SAME_BITS)
    full.update(env or {})
    return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full,
                            cwd=str(ROOT))


def finish(proc: subprocess.Popen, timeout: float = 280) -> str:
    """Waits for `proc`; asserts it succeeded; returns its stdout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, (proc.args, out[-2000:], err[-4000:])
    return out


def assert_only_accelerator_lines_differ(example: Path, reference: Path,
                                         words: "re.Pattern[str]") -> None:
    """Every changed hunk of `example` names the accelerator (`words`);
    lines the reference adds are imports; no accelerator call is left in the
    reference's code (its docstring may name it)."""
    ex = example.read_text().splitlines()
    ref = reference.read_text().splitlines()
    matcher = difflib.SequenceMatcher(a=ex, b=ref, autojunk=False)
    changed = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        changed += 1
        if tag == "insert":
            added = ref[j1:j2]
            assert all(line.startswith("import ") for line in added), added
            continue
        hunk = ex[i1:i2]
        assert any(words.search(line) for line in hunk), (
            f"{example.name}: lines {i1 + 1}-{i2} differ but name no "
            f"accelerator call: {hunk} -> {ref[j1:j2]}")
    assert changed >= 3, "the reference is not a variant of the example"
    tree = ast.parse("\n".join(ref))
    code = ref[tree.body[0].end_lineno:]
    left = [line for line in code if words.search(line)]
    assert not left, f"{reference.name} still calls the accelerator: {left}"


def assert_identical(ref: Any, got: Any, where: str = "") -> None:
    """Same structure, same types, every tensor equal bit for bit."""
    assert type(ref) is type(got), (where, type(ref), type(got))
    if isinstance(ref, dict):
        assert ref.keys() == got.keys(), where
        for key in ref:
            assert_identical(ref[key], got[key], f"{where}.{key}")
    elif isinstance(ref, (list, tuple)):
        assert len(ref) == len(got), where
        for i, (a, b) in enumerate(zip(ref, got)):
            assert_identical(a, b, f"{where}[{i}]")
    elif isinstance(ref, torch.Tensor):
        assert ref.dtype == got.dtype and ref.shape == got.shape, where
        assert torch.equal(ref, got), (
            f"{where}: max abs difference "
            f"{(ref.double() - got.double()).abs().max().item()}")
    else:
        assert ref == got, (where, ref, got)


def assert_close(ref: Any, got: Any, where: str = "",
                 atol: float = 1e-5) -> None:
    """assert_identical for a run on another device whose kernels may pick
    other algorithms (attention, reductions): same structure and types,
    integer and bool tensors equal, floating ones within `atol`."""
    assert type(ref) is type(got), (where, type(ref), type(got))
    if isinstance(ref, dict):
        assert ref.keys() == got.keys(), where
        for key in ref:
            assert_close(ref[key], got[key], f"{where}.{key}", atol)
    elif isinstance(ref, (list, tuple)):
        assert len(ref) == len(got), where
        for i, (a, b) in enumerate(zip(ref, got)):
            assert_close(a, b, f"{where}[{i}]", atol)
    elif isinstance(ref, torch.Tensor):
        assert ref.dtype == got.dtype and ref.shape == got.shape, where
        if ref.is_floating_point() or ref.is_complex():
            diff = (ref.double() - got.double()).abs().max().item()
            assert diff <= atol, f"{where}: max abs difference {diff}"
        else:
            assert torch.equal(ref, got), where
    elif isinstance(ref, float):
        assert abs(ref - got) <= atol, (where, ref, got)
    else:
        assert ref == got, (where, ref, got)
