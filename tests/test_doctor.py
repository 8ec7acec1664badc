"""`python -m TorchDevice doctor`: the static scan (docs/report.md)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from TorchDevice import _doctor

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
g = torch.cuda.CUDAGraph()                              # expect:cannot
dist.init_process_group(backend="nccl")                 # expect:cannot
torch.cuda.memory.memory_allocated()                    # expect:handled
fn = torch.cuda.make_graphed_callables(model, (x,))     # expect:handled
import cupy  # torchdevice: ignore
y = torch.zeros(3)
text = "the cuda toolkit"
'''


def expectations(source: str) -> dict:
    return {n: m.group(1) for n, line in enumerate(source.splitlines(), 1)
            for m in [re.search(r"# expect:(\w+)", line)] if m}


def test_each_construct_is_classified():
    findings = _doctor.scan_source(SOURCE, "train.py")
    by_line: dict = {}
    for f in findings:
        by_line.setdefault(f.line, set()).add(f.kind)
    expected = expectations(SOURCE)
    assert {line: {kind} for line, kind in expected.items()} == by_line


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
                   (5, "cannot", "torch.cuda.CUDAGraph"),
                   (6, "cannot", "torch.cuda.graph")]


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


def doctor(*args: str, cwd: Path):
    return subprocess.run([sys.executable, "-m", "TorchDevice", "doctor",
                           *args], capture_output=True, text=True,
                          cwd=str(cwd), timeout=300)


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
