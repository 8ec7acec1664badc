"""torch.jit.script of code written for CUDA (docs/compile-checkpoints-distributed.md)."""
from __future__ import annotations

import json

import pytest
import torch

import TorchDevice
from conftest import HAS_CUDA, HAS_MPS, TARGET, run_python

redirected = pytest.mark.skipif(
    HAS_CUDA or HAS_MPS, reason="CUDA redirected: profiles cpu and "
    "accelerator only")


def cuda_function(x: torch.Tensor) -> torch.Tensor:
    z = torch.zeros(3, device="cuda")
    d = torch.device("cuda")
    y = x.to("cuda") + z + torch.ones(3, device=d) + x.cuda()
    return y + x.to(torch.device("cuda:0")) + torch.arange(3, device="cuda:0")


def helper(x: torch.Tensor) -> torch.Tensor:
    return x.cuda() * torch.full((3,), 2.0, device="cuda")


class CudaModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(helper(x)) + torch.zeros(3, device="cuda")


def _device_constants(graph) -> set:
    device = torch._C.DeviceObjType.get()
    return {n.s("value") for n in graph.findAllNodes("prim::Constant")
            if n.output().type() == device and n.hasAttribute("value")}


@redirected
def test_scripted_function_runs_on_the_redirected_device():
    scripted = torch.jit.script(cuda_function)
    x = torch.tensor([1.0, 2.0, 3.0])
    out = scripted(x)
    assert out.device == TARGET
    assert out.tolist() == [4.0, 8.0, 12.0]
    assert _device_constants(scripted.graph) == {str(TARGET)}
    assert not scripted.graph.findAllNodes("aten::cuda")


@redirected
def test_decorator_form():
    @torch.jit.script
    def f(n: int) -> torch.Tensor:
        return torch.ones(n, device="cuda") * 2

    assert f(2).device == TARGET
    assert f(2).tolist() == [2.0, 2.0]


@redirected
def test_scripted_module_with_helper(tmp_path):
    torch.manual_seed(0)
    module = CudaModule().cuda()
    scripted = torch.jit.script(module)
    x = torch.randn(3)
    assert torch.allclose(scripted(x), module(x))
    # Saved, it loads (and runs) in a process without TorchDevice.
    path = tmp_path / "scripted.pt"
    scripted.save(str(path))
    proc = run_python('''
import json, sys, torch
m = torch.jit.load(sys.argv[1])
print(json.dumps({"out": m(torch.tensor(json.loads(sys.argv[2]))).tolist(),
                  "td": "TorchDevice" in sys.modules}))
''', str(path), json.dumps(x.tolist()))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["td"] is False
    assert torch.allclose(torch.tensor(got["out"]), module(x))


@redirected
def test_without_torchdevice_the_script_names_cuda(restore_config):
    """With TorchDevice off, scripting keeps "cuda" and running it fails
    on this machine: the rewrite above is what makes it work."""
    TorchDevice.disable()

    # A fresh function: TorchScript caches what it compiled per function.
    def fresh(x: torch.Tensor) -> torch.Tensor:
        return x + torch.zeros(3, device="cuda")

    scripted = torch.jit.script(fresh)
    assert "cuda" in _device_constants(scripted.graph)
    with pytest.raises(Exception):
        scripted(torch.ones(3))


# A TorchScript class resolves the names it uses in the frame that called
# torch.jit.script, which the replacement must not hide.
SCRIPTED_CLASS = """
import torch


def scale() -> float:
    return 2.0


@torch.jit.script
class Doubler:
    def __init__(self, n: int):
        self.n = n

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * scale() * self.n
"""


def test_scripted_class_sees_its_module_names(tmp_path, monkeypatch):
    (tmp_path / "scripted_class_module.py").write_text(SCRIPTED_CLASS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import scripted_class_module

    assert TorchDevice.is_enabled()
    out = scripted_class_module.Doubler(3).apply(torch.ones(2))
    assert out.tolist() == [6.0, 6.0]


def test_torch_modules_that_script_classes_import_when_enabled():
    """torch.distributed.optim scripts its functional optimizers (classes)
    at import: DistributedOptimizer programs import it after TorchDevice."""
    proc = run_python("""
import TorchDevice, torch
assert TorchDevice.is_enabled()
import torch.distributed.optim
print("imported")
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported"


@redirected
@pytest.mark.parametrize("float64", ["downcast", "error"])
def test_trace_of_a_model_on_the_device_is_checked_or_remade(
        recwarn, restore_config, float64):
    """torch.jit.trace checks a trace by re-tracing with cloned inputs and
    comparing outputs in float64.  The clones must not make `.cuda()` copy
    in one graph and not the other (the CPU profile failed "Graphs differed
    across invocations").  A device without float64 (MPS's record) refuses
    the comparison natively; under TORCHDEVICE_FLOAT64=downcast (the
    default) it is made in float32 there, and under "error" the trace is
    made again without the check, with a warning.  A device with float64
    keeps torch's check and says nothing."""
    from TorchDevice import _capabilities
    TorchDevice.configure(float64=float64)
    torch.manual_seed(0)
    model = CudaModule().cuda().eval()
    x = torch.randn(2, 3, device="cuda")
    traced = torch.jit.trace(model, x)
    module_traced = torch.jit.trace_module(model, {"forward": x})
    assert torch.equal(traced(x), model(x))
    assert torch.equal(module_traced(x), model(x))
    remade = [w for w in recwarn.list
              if issubclass(w.category, torch.jit.TracerWarning)
              and "without that check" in str(w.message)]
    if _capabilities.current().float64 is False and float64 == "error":
        assert [w.filename for w in remade] == [__file__] * 2
    else:
        assert remade == []
    with pytest.raises(TypeError, match="example_inputs|positional"):
        torch.jit.trace()                      # torch's own errors stay
    # Moves inside a trace are torch's (the graphs CUDA records); after it,
    # a move from the host copies again.
    host = torch.ones(2, device="cpu")
    assert host.cuda() is not host
