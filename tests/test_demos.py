"""Every demo in examples/ runs to completion as a user would run it."""
from __future__ import annotations

import re

import pytest

from conftest import ACCEL, HAS_CUDA, MPS_LIKE, ROOT, TARGET, run_python

DEMOS = sorted((ROOT / "examples").glob("demo_*.py"))

# Where "cuda" lands in this run, as the report prints it.
TO = re.escape(str(TARGET))

# What each demo must print on this machine (profile cpu, or the simulated
# accelerator in make test-accel); demos not listed here must at least
# finish with exit code 0 and print something.
EXPECTED = {
    "demo_basic_tensor.py": [rf"torch\.device\('cuda'\) reads cuda(:0)?, runs on {TO}",
                             rf"line\s+16\s+torch\.tensor\s+cuda -> {TO}",
                             rf"Tensor\.cuda\s+cuda -> {TO}"],
    "demo_matrix_multiplication.py": [rf"matmul on {TO}",
                                      r"max abs error", r"torch\.randn"],
    "demo_neural_network.py": [r"loss fell: training works",
                               rf"Module\.cuda\s+cuda -> {TO}",
                               rf"torch\.randint\s+cuda -> {TO}\s+x200"],
    "demo_cpu_override.py": [r"override on: True", r"override on: False",
                             r"inside cpu_override\(\): 'cpu' -> cpu"],
    "demo_unsupported_functions.py": [
        r"CUDAGraph captured, then replayed on new input \(operator by "
        r"operator\): \[1\.0, 3\.0, 5\.0, 7\.0\]",
        r"nvtx range_push/range_pop/mark/range: no-ops"],
}

# On a real NVIDIA GPU (profile cuda) the calls are torch's own, and the
# demos must not claim otherwise.
ON_CUDA = {
    "demo_unsupported_functions.py": [
        r"CUDAGraph captured, then replayed on new input \(torch's own\): "
        r"\[1\.0, 3\.0, 5\.0, 7\.0\]",
        r"make_graphed_callables: the module, its forward CUDA-graphed"],
}

# The lines of a demo's results, computed in float32: on another
# accelerator they must equal a CPU run's within 1e-5.
RESULTS = {
    "demo_basic_tensor.py": [r"a \+ b = \[.*\]", r"as numpy: \[.*\]"],
    "demo_neural_network.py": [r"step +\d+ +loss .*", r"mean loss .*"],
    "demo_matrix_multiplication.py": [r"max abs error .*"],
}

PARAMS = [pytest.param(d, id=d.name) for d in DEMOS]

# A CUDA program's host-side float64 check, `x.cpu().double()`: in
# accelerate mode `.cpu()` stays on the accelerator, and on a device without
# float64 (MPS's record) the check computes in float32 (docs/policy.md,
# "float64 on MPS"), where the CPU run computes it in float64.
HOST_FLOAT64_CHECK = {"demo_matrix_multiplication.py"}


def test_core_demos_exist():
    names = {d.name for d in DEMOS}
    assert set(EXPECTED) <= names


@pytest.mark.slow
@pytest.mark.parametrize("demo", PARAMS)
def test_demo_runs(demo):
    proc = run_python(script=demo, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip()
    if HAS_CUDA:
        for pattern in ON_CUDA.get(demo.name, []):
            assert re.search(pattern, proc.stdout), (pattern, proc.stdout)
        assert "no-op" not in proc.stdout, proc.stdout
        return
    for pattern in EXPECTED.get(demo.name, []):
        assert re.search(pattern, proc.stdout), (pattern, proc.stdout)
    # Redirections are reported with the demo's own file and line.
    if "redirected call sites" in demo.read_text():
        assert f"{demo}:" in proc.stderr or "redirected" in proc.stdout


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _results(name: str, stdout: str) -> list:
    lines = [m.group(0) for pattern in RESULTS[name]
             for m in re.finditer(pattern, stdout)]
    assert lines, stdout
    return [[float(n) for n in _NUMBER.findall(line)] for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize("demo", [d for d in DEMOS if d.name in RESULTS],
                         ids=lambda d: d.name)
def test_demo_numbers_match_a_cpu_run(demo):
    """On the accelerator, whose kernels are the host's, a demo computes what
    it computes on the CPU.  A demo whose host-side float64 check mode
    "accelerate" computes in float32 there (HOST_FLOAT64_CHECK) is compared
    in the default mode, where its device work draws from the device's generator
    alone and so still equals the CPU run's."""
    if ACCEL is None:
        pytest.skip("this run is the CPU run")
    mode = {"TORCHDEVICE_MODE": "cpu-stays-cpu"} if (
        MPS_LIKE and demo.name in HOST_FLOAT64_CHECK) else {}
    here = run_python(script=demo, timeout=600, env=mode)
    assert here.returncode == 0, here.stderr[-4000:]
    cpu = run_python(script=demo, timeout=600,
                     env={"TORCHDEVICE_TARGET": "cpu", **mode})
    assert cpu.returncode == 0, cpu.stderr[-4000:]
    assert f"on {TARGET}" in here.stdout and "on cpu" in cpu.stdout
    got, want = _results(demo.name, here.stdout), _results(demo.name,
                                                           cpu.stdout)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w) and all(abs(a - b) <= 1e-5
                                        for a, b in zip(g, w)), (g, w)


@pytest.mark.slow
@pytest.mark.parametrize("demo", [pytest.param(d, id=d.name) for d in DEMOS])
def test_demo_in_the_default_mode_on_the_accelerator(demo):
    """make test-accel runs in mode "accelerate"; users get the default,
    "cpu-stays-cpu" (docs/policy.md): every demo runs to completion in it
    too.  Its numbers are not a CPU run's: as on CUDA, what is asked of the
    device draws from the device's generator and the rest from the host's
    (benchmarks/policy_matrix.py compares them with a native run on the
    device)."""
    if ACCEL is None:
        pytest.skip("this run is the CPU run")
    here = run_python(script=demo, timeout=600,
                      env={"TORCHDEVICE_MODE": "cpu-stays-cpu"})
    assert here.returncode == 0, here.stdout[-2000:] + here.stderr[-4000:]
    assert here.stdout.strip()
