"""`python -m TorchDevice doctor`: the static scan (docs/report.md)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import TorchDevice
from TorchDevice import _doctor
from conftest import child_env

SOURCE = '''\
import torch
import torch.distributed as dist
from torch.cuda import amp                              # expect:handled
try:
    import apex                                         # expect:handled
except ImportError:
    apex = None
import flash_attn                                       # expect:cannot
from numba import cuda as ncuda                         # expect:cannot
import bitsandbytes as bnb                              # expect:cannot
from xformers.ops import memory_efficient_attention     # expect:cannot
ok = torch.cuda.is_available()                          # expect:handled
model = torch.nn.Linear(2, 2).cuda()                    # expect:handled
x = torch.randn(2, 2, device=f"cuda:{0}")               # expect:handled
torch.backends.cudnn.benchmark = True                   # expect:handled
g = torch.cuda.CUDAGraph()                              # expect:handled
dist.init_process_group(backend="nccl")                 # expect:handled
torch.cuda.memory.memory_allocated()                    # expect:handled
fn = torch.cuda.make_graphed_callables(model, (x,))     # expect:handled
import cupy  # torchdevice: ignore
y = torch.zeros(3)
text = "the cuda toolkit"
'''


def expectations(source: str) -> dict:
    return {n: m.group(1) for n, line in enumerate(source.splitlines(), 1)
            for m in [re.search(r"# expect:(\w+)", line)] if m}


# Where "cuda" lands on an accelerator gloo cannot reduce (make
# test-accel), NCCL cannot be stood in for.
NCCL_RUNS = TorchDevice.policy()["profile"] in ("cpu", "cuda")


def test_each_construct_is_classified(monkeypatch):
    # As on a machine without bitsandbytes (below: one with it).
    monkeypatch.setattr(_doctor, "_bitsandbytes_version_with_host_backend",
                        lambda: None)
    findings = _doctor.scan_source(SOURCE, "train.py")
    by_line: dict = {}
    for f in findings:
        by_line.setdefault(f.line, set()).add(f.kind)
    expected = expectations(SOURCE)
    if not NCCL_RUNS:
        expected.update({n: "cannot" for n, line in
                         enumerate(SOURCE.splitlines(), 1) if '"nccl"' in line})
    assert {line: {kind} for line, kind in expected.items()} == by_line


def test_bitsandbytes_verdict_follows_the_release_installed(monkeypatch,
                                                            tmp_path):
    """bitsandbytes releases with a CPU backend pick each kernel by the
    tensor's real device, and TorchDevice tells them the truth about CUDA
    (docs/masquerade.md): they run.  Older ones need CUDA."""
    source = "import bitsandbytes as bnb\nfrom bitsandbytes.optim import Adam8bit\n"
    monkeypatch.setattr(_doctor, "_bitsandbytes_version_with_host_backend",
                        lambda: "0.50.2")
    found = _doctor.scan_source(source, "train.py")
    assert [(f.line, f.kind) for f in found] == [(1, "handled"),
                                                 (2, "handled")]
    assert "bitsandbytes 0.50.2 has CPU and MPS backends" in found[0].why
    monkeypatch.setattr(_doctor, "_bitsandbytes_version_with_host_backend",
                        lambda: None)
    found = _doctor.scan_source(source, "train.py")
    assert [(f.line, f.kind) for f in found] == [(1, "cannot"), (2, "cannot")]
    assert "CUDA only" in found[0].why
    # Read from the installed files: a release without backends/cpu.
    monkeypatch.undo()
    site = tmp_path / "site"
    info = site / "bitsandbytes-0.42.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Name: bitsandbytes\nVersion: 0.42.0\n")
    (site / "bitsandbytes").mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert _doctor._bitsandbytes_version_with_host_backend() is None
    (site / "bitsandbytes" / "backends" / "cpu").mkdir(parents=True)
    (site / "bitsandbytes" / "backends" / "cpu" / "ops.py").write_text("")
    assert _doctor._bitsandbytes_version_with_host_backend() == "0.42.0"


@pytest.mark.parametrize("profile, device, kind", [
    ("cpu", "cpu", "handled"), ("mps", "mps", "cannot"),
    ("accelerator", "simaccel", "cannot")])
def test_nccl_verdict_follows_where_cuda_lands(monkeypatch, profile, device,
                                                kind):
    """gloo stands in for NCCL, and reduces host tensors only: where "cuda"
    lands on another accelerator the program's collectives cannot run."""
    monkeypatch.setattr(TorchDevice, "policy",
                        lambda: {"profile": profile, "device": device})
    src = ('import torch.distributed as dist\n'
           'dist.init_process_group("nccl")\n'
           'b = dist.Backend.NCCL\n')
    findings = _doctor.scan_source(src, "x.py")
    assert [f.kind for f in findings] == [kind, kind]
    if kind == "cannot":
        assert all(device in f.why and "TORCHDEVICE_TARGET=cpu" in f.why
                   for f in findings)


def test_availability_says_which_kind_is_announced(monkeypatch):
    src = ("import torch\n"
           "a = torch.backends.mps.is_available()\n"
           "b = torch.cuda.is_available()\n")
    monkeypatch.delenv("TORCHDEVICE_ANNOUNCE", raising=False)
    mps, cuda = _doctor.scan_source(src, "x.py")
    assert (mps.kind, cuda.kind) == ("handled", "handled")
    assert "answers False" in mps.why and "TORCHDEVICE_ANNOUNCE=mps" in mps.why
    assert "answers True" in cuda.why
    monkeypatch.setenv("TORCHDEVICE_ANNOUNCE", "mps")
    mps, cuda = _doctor.scan_source(src, "x.py")
    assert "answers True" in mps.why and "answers False" in cuda.why


def test_map_location_and_device_strings():
    src = 'import torch\nsd = torch.load("m.pt", map_location="cuda:1")\n'
    findings = _doctor.scan_source(src, "load.py")
    assert [(f.line, f.kind, f.what) for f in findings] == [
        (2, "handled", "map_location="), (2, "handled", "'cuda:1'")]
    # 1-based, as compilers print it
    assert findings[0].col == src.splitlines()[1].index('"cuda:1"') + 1


def test_aliases_are_followed():
    src = textwrap.dedent("""\
        import torch as T
        import torch.cuda as tc
        from torch import cuda
        T.cuda.synchronize()
        tc.CUDAGraph()
        cuda.graph
    """)
    got = [(f.line, f.kind, f.what) for f in _doctor.scan_source(src, "a.py")
           if f.line > 3]
    assert got == [(4, "handled", "torch.cuda.synchronize"),
                   (5, "handled", "torch.cuda.CUDAGraph"),
                   (6, "handled", "torch.cuda.graph")]


def test_custom_cuda_kernels_cannot_be_handled():
    src = textwrap.dedent("""\
        from torch.utils.cpp_extension import CUDAExtension, load_inline
        ext = CUDAExtension("k", ["kernel.cu"])
        mod = load_inline("m", cpp_sources="", cuda_sources="__global__ ...")
    """)
    kinds = {(f.line, f.what): f.kind
             for f in _doctor.scan_source(src, "k.py")}
    assert kinds[(1, "torch.utils.cpp_extension.CUDAExtension")] == "cannot"
    assert kinds[(2, "'kernel.cu'")] == "cannot"
    assert kinds[(3, "load_inline(cuda_sources=...)")] == "cannot"


def test_plain_code_has_no_findings():
    src = "import torch\nx = torch.zeros(3)\ny = x.to('cpu')\nprint('cuda is great')\n"
    assert _doctor.scan_source(src, "p.py") == []


def doctor(*args: str, cwd: Path, extra_env: dict | None = None):
    env = child_env(**(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "TorchDevice", "doctor",
                           *args], capture_output=True, text=True,
                          cwd=str(cwd), timeout=300, env=env)


def test_exit_status_gates_ci(tmp_path):
    (tmp_path / "good.py").write_text(
        "import torch\nx = torch.ones(2).cuda()\n")
    proc = doctor("good.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "good.py:2:5: handled: .cuda() -- moves to the device that is "
        "present",
        "TorchDevice doctor: 1 file scanned, 1 handled at run time, "
        "0 cannot be handled"]
    (tmp_path / "bad.py").write_text("import xformers\n")
    proc = doctor(".", cwd=tmp_path)
    assert proc.returncode == 1
    assert "bad.py:1:1: cannot: import xformers" in proc.stdout
    assert "2 files scanned, 1 handled at run time, 1 cannot be handled" \
        in proc.stdout
    proc = doctor("--only-cannot", ".", cwd=tmp_path)
    assert proc.returncode == 1
    assert "handled:" not in proc.stdout.replace("handled at", "")


def test_usage_errors(tmp_path):
    assert doctor(cwd=tmp_path).returncode == 2
    proc = doctor("missing_dir", cwd=tmp_path)
    assert proc.returncode == 2 and "no such file" in proc.stderr
    assert doctor("--frob", ".", cwd=tmp_path).returncode == 2


def test_walk_skips_environments_and_reports_unparseable(tmp_path):
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "x.py").write_text("import apex\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "y.py").write_text("import apex\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "old.py").write_text("print 'python 2'\n")
    (tmp_path / "src" / "new.py").write_text("d = 'cuda'\n")
    proc = doctor("--json", ".", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    data = json.loads(proc.stdout)
    assert data["files"] == 1 and data["cannot"] == 0 and data["handled"] == 1
    assert data["findings"] == [{
        "file": "./src/new.py", "line": 1, "col": 5, "kind": "handled",
        "what": "'cuda'",
        "why": "device string: redirected to the device that is present"}]
    assert data["skipped"] == [{"file": "./src/old.py",
                                "why": "syntax error, line 1"}]


# ---- the verdict against real runs ------------------------------------------
#
# Doctor's exit status says "this runs under TorchDevice" (0) or "something
# here cannot run" (1).  Each program below, and each example, is scanned
# and then really run with `python -m TorchDevice run`; the two must agree.

DDP = '''\
import os
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"],
                  RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
dist.init_process_group(backend="nccl", device_id=torch.device("cuda:0"))
torch.cuda.set_device(0)
model = DDP(torch.nn.Linear(4, 2).cuda(), device_ids=[0], output_device=0)
model(torch.randn(3, 4, device="cuda")).sum().backward()
dist.barrier(device_ids=[0])
dist.destroy_process_group()
'''

PROGRAMS = {
    "nccl_ddp": DDP,
    "nccl_backend_enum": DDP.replace('backend="nccl"',
                                     "backend=dist.Backend.NCCL"),
    "amp": '''\
import torch
model = torch.nn.Linear(4, 4).cuda()
scaler = torch.cuda.amp.GradScaler()
with torch.cuda.amp.autocast():
    loss = model(torch.randn(2, 4, device="cuda")).sum()
scaler.scale(loss).backward()
''',
    "mps_written": '''\
import torch
device = torch.device("mps" if torch.backends.mps.is_available() else "cpu")
x = torch.ones(3, device="mps:0") + torch.ones(3).to(device)
torch.mps.synchronize()
print(torch.mps.current_allocated_memory() >= 0)
''',
    "checkpoint": '''\
import io, os, torch
os.environ["CUDA_VISIBLE_DEVICES"] = "0"
buf = io.BytesIO()
torch.save(torch.nn.Linear(2, 2).cuda().state_dict(), buf)
buf.seek(0)
state = torch.load(buf, map_location="cuda:0")
torch.backends.cudnn.benchmark = True
''',
    "optional_package": '''\
try:
    import flash_attn
except ImportError:
    flash_attn = None
import torch
print(flash_attn, torch.zeros(1, device="cuda").device)
''',
    "graph_caught": '''\
import torch
try:
    graph = torch.cuda.CUDAGraph()
except RuntimeError:
    graph = None
print(graph)
''',
    "graph": '''\
import torch
graph = torch.cuda.CUDAGraph()
''',
    "graph_context": '''\
import torch
with torch.cuda.graph(torch.cuda.CUDAGraph()):
    pass
''',
    "package": '''\
import flash_attn
''',
    "nvml": '''\
import pynvml
pynvml.nvmlInit()
''',
    "jiterator": '''\
import torch
code = "template <typename T> T double_it(T x) { return x * 2; }"
fn = torch.cuda.jiterator._create_jit_fn(code)
print(fn(torch.ones(2, device="cuda")))
''',
    "nccl_direct": '''\
import torch
torch.cuda.nccl.all_reduce([torch.ones(2, device="cuda")])
''',
    "nccl_version": '''\
import torch
import torch.distributed as dist
if dist.is_nccl_available() and torch.cuda.nccl.version() >= (2, 10):
    print("bf16 collectives")
''',
    "cudart": '''\
import torch
torch.cuda.cudart().cudaProfilerStart()
''',
    "cuda_kernel": '''\
from torch.utils.cpp_extension import load_inline
load_inline("k", cpp_sources="", cuda_sources="__global__ void k() {}")
''',
}


def _run(path: Path, *args: str, cwd: Path | None = None,
         extra_env: dict | None = None) -> subprocess.CompletedProcess:
    import socket
    env = child_env(**(extra_env or {}))
    with socket.socket() as s:       # a free port for the DDP programs
        s.bind(("127.0.0.1", 0))
        env["PORT"] = str(s.getsockname()[1])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "TorchDevice", "run",
                           str(path), *args], capture_output=True, text=True,
                          cwd=str(cwd or path.parent), env=env, timeout=600)


def _assert_agree(path: Path, *args: str, cwd: Path | None = None,
                  extra_env: dict | None = None) -> int:
    """Doctor's verdict on `path` agrees with a run of it; returns the
    verdict (doctor's exit status)."""
    # doctor's scan and the run are independent: side by side.
    scan = subprocess.Popen([sys.executable, "-m", "TorchDevice", "doctor",
                             str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            cwd=str(path.parent),
                            env=child_env(**(extra_env or {})))
    proc = _run(path, *args, cwd=cwd, extra_env=extra_env)
    _, scan_err = scan.communicate(timeout=300)
    verdict = scan.returncode
    assert verdict in (0, 1), scan_err
    ran = proc.returncode == 0
    assert ran == (verdict == 0), (
        f"doctor says {'runs' if verdict == 0 else 'cannot run'}, the run "
        f"{'succeeded' if ran else 'failed'}:\n"
        f"{doctor(str(path), cwd=path.parent).stdout}\n{proc.stderr[-2000:]}")
    return verdict


@pytest.mark.skipif(TorchDevice.hardware_profile() == "cuda",
                    reason="on NVIDIA everything CUDA-only runs natively")
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_verdict_matches_the_run(tmp_path, name):
    path = tmp_path / f"{name}.py"
    path.write_text(PROGRAMS[name])
    _assert_agree(path)


EXAMPLE_ARGS = {
    "train_cuda_research.py": ["--epochs", "1", "--train-size", "64",
                               "--val-size", "32", "--out-dir", "OUT"],
}
# Examples written for MPS run with MPS announced, as their docstrings say.
EXAMPLE_ENV = {
    "mps_written_script.py": {"TORCHDEVICE_ANNOUNCE": "mps"},
}


@pytest.mark.slow
@pytest.mark.parametrize("example", [
    name for name in sorted(p.name for p in (Path(__file__).resolve().parent.parent
                                        / "examples").glob("*.py"))])
def test_verdict_matches_the_run_for_each_example(tmp_path, example):
    if example.startswith("hf_"):
        pytest.importorskip("transformers")   # a test dependency
    path = Path(__file__).resolve().parent.parent / "examples" / example
    args = [str(tmp_path / "out") if a == "OUT" else a
            for a in EXAMPLE_ARGS.get(example, [])]
    env = EXAMPLE_ENV.get(example)
    verdict = _assert_agree(path, *args, cwd=tmp_path, extra_env=env)
    assert verdict == 0, doctor(str(path), cwd=path.parent,
                                extra_env=env).stdout


TYPE_TESTS = '''\
import torch
device = torch.accelerator.current_accelerator()
x = torch.ones(2, device="cuda")
print(device.type == "cuda",
      "cuda" == x.device.type,
      x.device.type in ("cuda", "xpu"),
      x.is_cuda,
      x.is_mps,
      device.type != "mps")
'''


def test_device_type_tests_say_which_branch_runs():
    """`device.type == "cuda"` answers as on CUDA for a device the program
    asked for, and `x.device.type == "cuda"` or `tensor.is_cuda` False
    without the hardware: the finding says so instead of calling "cuda" a
    device string that is redirected."""
    findings = _doctor.scan_source(TYPE_TESTS, "branch.py")
    by_line: dict = {}
    for f in findings:
        assert f.kind == "handled"
        by_line.setdefault(f.line, []).append((f.what, f.why))
    assert [w for w, _ in by_line[3]] == ["'cuda'"]      # a real device arg
    (what, why), = by_line[4]
    assert what == ".type compared with 'cuda'"
    assert why.startswith("a device the program asked for as 'cuda' reads")
    for line in (5, 6):
        (what, why), = by_line[line]
        assert what == ".type compared with 'cuda'"
        assert why.startswith("never 'cuda' without an NVIDIA GPU")
        assert "non-CUDA branch" in why
    (what, why), = by_line[7]
    assert what == ".is_cuda" and why.startswith("False without an NVIDIA GPU")
    (what, why), = by_line[8]
    assert what == ".is_mps" and why.startswith("False without an Apple GPU")
    (what, why), = by_line[9]
    assert what == ".type compared with 'mps'"
    assert "answers as on MPS" in why


@pytest.mark.skipif(TorchDevice.hardware_profile() != "cpu",
                    reason="what these tests answer without CUDA or MPS")
def test_device_type_tests_answer_what_doctor_says(tmp_path):
    path = tmp_path / "branch.py"
    path.write_text(TYPE_TESTS)
    proc = _run(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True"] + ["False"] * 4 + ["True"]
