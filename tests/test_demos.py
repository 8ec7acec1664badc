"""Every demo in examples/ runs to completion as a user would run it."""
from __future__ import annotations

import re

import pytest

from conftest import HAS_CUDA, ROOT, run_python

DEMOS = sorted((ROOT / "examples").glob("demo_*.py"))

# What each demo must print on this machine (profile cpu); demos not listed
# here must at least finish with exit code 0 and print something.
EXPECTED = {
    "demo_basic_tensor.py": [r"torch\.device\('cuda'\) -> cpu",
                             r"line\s+15\s+torch\.tensor\s+cuda -> cpu",
                             r"Tensor\.cuda\s+cuda -> cpu"],
    "demo_matrix_multiplication.py": [r"matmul on cpu",
                                      r"max abs error", r"torch\.randn"],
    "demo_neural_network.py": [r"loss fell: training works",
                               r"Module\.cuda\s+cuda -> cpu",
                               r"torch\.randint\s+cuda -> cpu\s+x200"],
    "demo_cpu_override.py": [r"override on: True", r"override on: False",
                             r"inside cpu_override\(\): 'cpu' -> cpu"],
}


def test_core_demos_exist():
    names = {d.name for d in DEMOS}
    assert set(EXPECTED) <= names


@pytest.mark.slow
@pytest.mark.parametrize("demo", DEMOS, ids=lambda p: p.name)
def test_demo_runs(demo):
    proc = run_python(script=demo, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip()
    if HAS_CUDA:
        return
    for pattern in EXPECTED.get(demo.name, []):
        assert re.search(pattern, proc.stdout), (pattern, proc.stdout)
    # Redirections are reported with the demo's own file and line.
    if demo.name in EXPECTED:
        assert f"{demo}:" in proc.stderr or "redirected" in proc.stdout
