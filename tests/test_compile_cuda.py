"""A model written for MPS, compiled on an NVIDIA GPU (docs/compile-checkpoints-distributed.md).

Needs a real CUDA device: run by scripts/gpu_check.sh (``pytest -m cuda``).
Not run on the CPU machines this project is developed on.
"""
from __future__ import annotations

import json

import pytest

from conftest import run_python

MPS_MODEL = '''
import json, sys
import torch
if ORDER == "dynamo-first":
    import torch._dynamo
import TorchDevice
td_imported_dynamo = "torch._dynamo" in sys.modules and ORDER != "dynamo-first"
import torch._dynamo

class MpsModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        z = torch.zeros(8, device="mps")
        a = torch.arange(8, device=x.device)
        y = x.to("mps") + z + a + torch.ones(8, device=torch.device("mps"))
        if torch.backends.mps.is_available():
            y = y * 2
        return self.lin(y)

torch.manual_seed(0)
model = MpsModel().to("mps")
x = torch.randn(4, 8, device="mps")
ref = model(x)
out = {"ref_device": str(ref.device), "td_imported_dynamo": td_imported_dynamo}
ex = torch._dynamo.explain(model)(x)
out["breaks"] = ex.graph_break_count
for backend in ("eager", "inductor"):
    torch._dynamo.reset()
    got = torch.compile(model, fullgraph=True, backend=backend)(x)
    out[backend] = {"device": str(got.device),
                    "same": bool(torch.allclose(got, ref, atol=1e-5))}
print("RESULT" + json.dumps(out))
'''


@pytest.mark.cuda
@pytest.mark.parametrize("order", ["dynamo-first", "torchdevice-first"])
def test_mps_model_compiles_fullgraph_on_cuda(order):
    proc = run_python(MPS_MODEL.replace("ORDER", repr(order)), timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    out = json.loads(line[0][len("RESULT"):])
    assert out["ref_device"].startswith("cuda")
    assert out["td_imported_dynamo"] is False
    assert out["breaks"] == 0
    for backend in ("eager", "inductor"):
        assert out[backend]["device"].startswith("cuda"), out
        assert out[backend]["same"], out
