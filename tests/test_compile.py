"""torch.compile of code that calls redirected APIs (docs/compile-checkpoints-distributed.md).

Each import order runs in a fresh process: which of TorchDevice and
torch._dynamo comes first decides how dynamo files the replacements.
"""
from __future__ import annotations

import json

import pytest

from conftest import (HAS_CUDA, HAS_MPS, MPS_LIKE_DEVICE, SIMULATED_MPS_CHILD,
                      TARGET, run_python)

pytestmark = pytest.mark.skipif(
    HAS_CUDA or HAS_MPS, reason="expectations of the cpu profile; "
    "test_compile_cuda.py covers NVIDIA")

# A model written for CUDA: every redirected API in its forward.
MODEL = '''
class CudaModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        z = torch.zeros(4, device="cuda")
        a = torch.arange(4, device=x.device)
        o = torch.ones(2, 4, device=torch.device("cuda"))
        f = torch.full((4,), 2.0, device=torch.device("cuda", 0))
        e = torch.empty(4, device=0).fill_(1.0)
        y = x.to("cuda") + z + a + o + f + e + x.cuda() + x.cuda(0)
        y = y + x.to(device="cuda", dtype=torch.float32)
        y = y + torch.zeros_like(x, device="cuda")
        y = y + y.new_zeros(4, device="cuda") + torch.Tensor.to(x, "cuda")
        if torch.cuda.is_available():
            y = y * 2
        if y.device == torch.device("cuda"):
            y = y + 1
        return self.lin(y)
'''

CHECKS = MODEL + '''
import json, sys
counts = {"graphs": 0}
def counting(gm, example_inputs):
    counts["graphs"] += 1
    return gm.forward

torch.manual_seed(0)
model = CudaModel()
x = torch.randn(2, 4)
ref = model(x)
out = {"td_imported_dynamo": td_imported_dynamo}
ex = torch._dynamo.explain(model)(x)
out["breaks"] = ex.graph_break_count
out["graph_count"] = ex.graph_count
out["reasons"] = [str(r.reason)[:300] for r in ex.break_reasons]
# Inductor generates code for the CPU, CUDA, MPS and XPU, not for the
# simulated accelerator of make test-accel.
has_inductor = TorchDevice.policy()["device"] in ("cpu", "cuda", "mps", "xpu")
for backend in ("eager", "inductor") if has_inductor else ("eager",):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    got = compiled(x)
    out[backend] = {"same": bool(torch.equal(got, ref)
                                 or torch.allclose(got, ref, atol=1e-6)),
                    "device": str(got.device)}
torch._dynamo.reset()
compiled = torch.compile(model, fullgraph=True, backend=counting)
for _ in range(10):
    compiled(x)
out["compilations_for_10_calls"] = counts["graphs"]
# Code that captured the original before TorchDevice replaced it still
# traces (in eager that alias is not redirected either).  The input is made
# on the host: in accelerate mode a device-less torch.ones lands on the
# accelerator, and adding the alias's host zeros to it fails in eager too.
torch._dynamo.reset()
f = torch.compile(lambda t: zeros_alias(3) + t, fullgraph=True,
                  backend="eager")
with TorchDevice.cpu_override():
    host_ones = torch.ones(3)
out["alias_device"] = str(f(host_ones).device)
# torch.cuda queries answer in compiled code as they do in the user's code
# (the masquerade tells torch's own callers the truth).
def queries(t):
    return t + torch.cuda.device_count() + (
        1 if torch.cuda.is_available() else 0) + torch.cuda.current_device()
torch._dynamo.reset()
out["queries"] = [queries(torch.zeros(1)).item(),
                  torch.compile(queries, fullgraph=True, backend="eager")(
                      torch.zeros(1)).item()]
print("RESULT" + json.dumps(out))
'''

DYNAMO_FIRST = '''
import torch
import torch._dynamo
from torch import zeros as zeros_alias
import TorchDevice
td_imported_dynamo = False
''' + CHECKS

TORCHDEVICE_FIRST = '''
import sys
import torch
from torch import zeros as zeros_alias
import TorchDevice
td_imported_dynamo = "torch._dynamo" in sys.modules
import torch._dynamo
''' + CHECKS


def _run(code: str) -> dict:
    proc = run_python(code, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[0][len("RESULT"):])


@pytest.fixture(scope="module", params=["dynamo-first", "torchdevice-first"])
def outcome(request):
    code = DYNAMO_FIRST if request.param == "dynamo-first" else TORCHDEVICE_FIRST
    return _run(code)


def test_enabling_does_not_import_dynamo(outcome):
    assert outcome["td_imported_dynamo"] is False


def test_no_graph_breaks(outcome):
    assert outcome["breaks"] == 0, outcome["reasons"]
    assert outcome["graph_count"] == 1


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_fullgraph_matches_eager(outcome, backend):
    if backend not in outcome:
        pytest.skip(f"Inductor has no code generator for {TARGET.type}")
    assert outcome[backend]["same"]
    assert outcome[backend]["device"] == str(TARGET)


def test_one_compilation_for_ten_calls(outcome):
    assert outcome["compilations_for_10_calls"] == 1


def test_alias_captured_before_enable(outcome):
    # torch's own zeros: a device-less call is left to torch
    assert outcome["alias_device"] == "cpu"


def test_cuda_queries_answer_as_in_eager(outcome):
    eager, compiled = outcome["queries"]
    assert compiled == eager


def test_without_torchdevice_the_model_does_not_compile():
    """The same model fails under fullgraph without TorchDevice: the checks
    above test TorchDevice, not a CUDA-less torch that happens to cope."""
    proc = run_python("import torch\n" + MODEL + '''
model = CudaModel()
try:
    torch.compile(model, fullgraph=True, backend="eager")(torch.randn(2, 4))
except Exception as exc:
    print("FAILED", type(exc).__name__)
''', timeout=240)
    assert "FAILED" in proc.stdout, proc.stdout + proc.stderr[-2000:]


EXPORT = "import io, json, torch, TorchDevice\n" + MODEL + '''
torch.manual_seed(0)
model = CudaModel().cuda()
x = torch.randn(2, 4, device="cuda")
ref = model(x)
ep = torch.export.export(model, (x,))
buf = io.BytesIO()
torch.export.save(ep, buf)
buf.seek(0)
loaded = torch.export.load(buf)
devices = sorted({str(n.kwargs["device"]) for n in ep.graph.nodes
                  if n.kwargs.get("device") is not None})
print("RESULT" + json.dumps({
    "same": bool(torch.allclose(ep.module()(x), ref, atol=1e-6)),
    "loaded": bool(torch.allclose(loaded.module()(x), ref, atol=1e-6)),
    "devices": devices,
    "weights": sorted({str(v.device) for v in ep.state_dict.values()})}))
'''


def test_torch_export_of_a_cuda_model_records_the_device_used():
    """torch.export traces the wrappers as torch.compile does: the exported
    graph computes the eager numbers, survives a save and load, and names
    the device really used, as a graph exported on CUDA names CUDA."""
    out = _run(EXPORT)
    assert out["same"] and out["loaded"]
    assert out["devices"] == [str(TARGET)]
    assert out["weights"] == [str(TARGET)]


DISABLE_CYCLE = '''
import torch, TorchDevice, torch._dynamo
def f(t):
    return torch.zeros(2, device="cuda") + t
c = torch.compile(f, fullgraph=True, backend="eager")
print("ON", c(torch.ones(2)).device)
TorchDevice.disable()
try:
    c(torch.ones(2))
    print("OFF", "ran")
except Exception as exc:
    print("OFF", type(exc).__name__)
TorchDevice.enable()
print("AGAIN", c(torch.ones(2)).device)
'''


def test_disable_recompiles_and_enable_restores():
    proc = run_python(DISABLE_CYCLE, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines())
    assert lines["ON"] == str(TARGET)
    # Without TorchDevice torch itself refuses CUDA on this build.
    assert lines["OFF"] != "ran"
    assert lines["AGAIN"] == str(TARGET)


DEFAULT_DEVICE = '''
import torch, TorchDevice
def f(x):
    return torch.ones(3) + torch.nn.functional.linear(x, torch.eye(3)) + x
c = torch.compile(f, fullgraph=True, backend="eager")
torch.set_default_device("cuda")
print("SET", c(torch.ones(3)).tolist())
torch.set_default_device(None)
with torch.device("cuda"):
    print("WITH", c(torch.ones(3)).tolist())
with torch.device("meta"):
    print("META", c(torch.ones(3)).device)
'''


def test_compiles_under_a_cuda_default_device():
    """fullgraph under `set_default_device("cuda")` and `with
    torch.device(...)`: the factories called without a device are traced
    on the context's device, beside the inputs made under it (they were
    traced on the host: "Tensor device mismatch" wherever the context's
    device is not the CPU)."""
    proc = run_python(DEFAULT_DEVICE, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["SET", "[3.0,", "3.0,", "3.0]",
                                   "WITH", "[3.0,", "3.0,", "3.0]",
                                   "META", "meta"]


SIMULATED_MPS = '''
import json
import torch
from torch import zeros as zeros_alias
import torch._dynamo
import TorchDevice
''' + SIMULATED_MPS_CHILD + '''

def f(x, y):
    a = torch.zeros(3)                         # None -> the accelerator
    b = torch.ones(3, device="cpu")            # accelerate mode: promoted
    c = torch.ones(3, device="cuda", dtype=torch.float64)   # no float64
    # float64 data moved or copied without a dtype: float64 too
    d, e, f_ = y.to("cuda"), y.cuda(), torch.tensor(y, device="cuda")
    return [str(t.device) for t in (a, b, c, x.to("cuda"), x.cpu(),
                                    x.cuda(), d, e, f_)] + [
        str(t.dtype) for t in (c, d, e, f_, y.cpu(), y + 1)]

with TorchDevice.cpu_override():
    x = torch.ones(3)
    y = torch.ones(3, dtype=torch.float64)
eager = f(x, y)
compiled = torch.compile(f, fullgraph=True, backend="eager")(x, y)

def g(t):
    return zeros_alias(3) + t        # torch's own zeros: left on the host

alias = [str(g(x).device),
         str(torch.compile(g, fullgraph=True, backend="eager")(x).device)]
print("RESULT" + json.dumps({"eager": eager, "compiled": compiled,
                             "alias": alias}))
'''


def test_simulated_mps_profile_compiles_like_eager():
    """Where the policy does more than cuda -> cpu (None and "cpu"
    promoted, float64 lowered, float64 data moved), compiled code decides
    as eager does."""
    out = _run(SIMULATED_MPS)
    # y.cpu(): accelerate mode puts host requests on the device too; y + 1
    # stays on the host, in float64.
    assert out["eager"] == ([MPS_LIKE_DEVICE] * 9 + ["torch.float32"] * 5
                            + ["torch.float64"])
    assert out["compiled"] == out["eager"]
    # The graph's code calls torch.zeros by name, which is the replacement:
    # a host request there was decided when the graph was traced.
    assert out["alias"] == ["cpu", "cpu"]
