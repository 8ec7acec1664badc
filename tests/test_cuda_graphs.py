"""torch.cuda.CUDAGraph where "cuda" is not CUDA: capture records the
operators, replay runs them again on the same tensors
(docs/masquerade.md, "CUDA graphs")."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import List, Tuple

import pytest
import torch

import TorchDevice
from conftest import HAS_CUDA, run_python

pytestmark = pytest.mark.skipif(
    HAS_CUDA, reason="on NVIDIA machines CUDA graphs are torch's own")

# torch.accelerator.Graph is newer than some releases TorchDevice runs on;
# it emulates the generic API only where torch has one.
needs_accelerator_graph = pytest.mark.skipif(
    not hasattr(getattr(torch, "accelerator", None), "Graph"),
    reason=f"torch {torch.__version__} has no torch.accelerator.Graph")

N, D_IN, H, D_OUT = 32, 8, 16, 4


def _batches(n: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(N, D_IN, generator=g),
             torch.rand(N, D_OUT, generator=g))
            for _ in range(n)]


def _setup(kind: str):
    torch.manual_seed(0)
    if kind == "sgd":
        model = torch.nn.Sequential(torch.nn.Linear(D_IN, H), torch.nn.ReLU(),
                                    torch.nn.Linear(H, D_OUT)).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        model = torch.nn.Sequential(
            torch.nn.Linear(D_IN, H), torch.nn.BatchNorm1d(H), torch.nn.GELU(),
            torch.nn.Linear(H, D_OUT)).cuda()
        opt = torch.optim.Adam(model.parameters(), lr=0.01, capturable=True,
                               foreach=True)
    return model, opt


def _step(kind, model, opt, x, t):
    if kind == "adam":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        loss = torch.nn.functional.mse_loss(out.float(), t)
    else:
        loss = torch.nn.functional.mse_loss(model(x), t)
    loss.backward()
    opt.step()
    return loss


def _state(model):
    return [t.detach().clone() for t in model.state_dict().values()]


def _graph_and_block(api: str):
    """A graph and the block that captures into it: torch.cuda's, or the
    generic API's ``with stream, graph:`` (torch.accelerator.Graph's
    docstring)."""
    if api == "cuda":
        graph = torch.cuda.CUDAGraph()
        return graph, torch.cuda.graph(graph)
    graph = torch.accelerator.Graph()
    block = contextlib.ExitStack()
    block.enter_context(torch.Stream())
    block.enter_context(graph)
    return graph, block


@pytest.mark.parametrize("api", [
    "cuda", pytest.param("accelerator", marks=needs_accelerator_graph)])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_whole_network_capture_trains_as_eagerly(kind, api):
    """The PyTorch documentation's whole-network capture: forward, backward
    and optimizer step captured once, replayed over new data."""
    data = _batches(6)
    # Eagerly.
    model, opt = _setup(kind)
    x = torch.randn(N, D_IN, device="cuda")
    t = torch.randn(N, D_OUT, device="cuda")
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        _step(kind, model, opt, x, t)
    eager = []
    for a, b in data:
        opt.zero_grad(set_to_none=True)
        eager.append(_step(kind, model, opt, a.cuda(), b.cuda()).item())
    eager_state = _state(model)
    # Captured and replayed.
    model, opt = _setup(kind)
    static_x = torch.randn(N, D_IN, device="cuda")
    static_t = torch.randn(N, D_OUT, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            _step(kind, model, opt, static_x, static_t)
    torch.cuda.current_stream().wait_stream(s)
    graph, block = _graph_and_block(api)
    opt.zero_grad(set_to_none=True)
    before = _state(model)
    with block:
        static_loss = _step(kind, model, opt, static_x, static_t)
    # Capture changes nothing (on CUDA nothing runs until replay).
    for was, now in zip(before, _state(model)):
        assert torch.equal(was, now)
    replayed = []
    for a, b in data:
        static_x.copy_(a)
        static_t.copy_(b)
        graph.replay()
        replayed.append(static_loss.item())
    assert replayed == eager
    for e, r in zip(eager_state, _state(model)):
        assert torch.equal(e, r)


def test_inference_capture_follows_the_static_input():
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, H),
                                torch.nn.Tanh()).cuda()
    static_in = torch.zeros(N, D_IN, device="cuda")
    with torch.inference_mode():
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(static_in) * 2
    for x, _ in _batches(3):
        static_in.copy_(x)
        graph.replay()          # outside inference_mode, as programs do
        with torch.no_grad():
            assert torch.equal(static_out, model(x.cuda()) * 2)


def test_capture_begin_and_end_by_hand():
    w = torch.randn(D_IN, D_OUT, device="cuda")
    x = torch.zeros(N, D_IN, device="cuda")
    acc = torch.zeros(N, D_OUT, device="cuda")
    graph = torch.cuda.CUDAGraph()
    graph.capture_begin()
    assert torch.cuda.is_current_stream_capturing()
    acc.add_(x @ w)
    graph.capture_end()
    assert not torch.cuda.is_current_stream_capturing()
    assert torch.count_nonzero(acc) == 0        # not run at capture
    x.fill_(1.0)
    graph.replay()
    graph.replay()
    torch.testing.assert_close(acc, 2 * (torch.ones(N, D_IN) @ w.cpu())
                               .to(acc.device))


@needs_accelerator_graph
def test_accelerator_graph_by_hand_and_its_errors():
    """torch.accelerator.Graph's own constructor arguments, capture by hand,
    and the errors CUDAGraph gives, named for the generic API."""
    x = torch.zeros(3, device="cuda")
    graph = torch.accelerator.Graph(keep_graph=True,
                                    capture_error_mode="thread_local")
    with pytest.raises(RuntimeError,
                       match=r"torch\.accelerator\.Graph\.replay: the graph "
                             "has not been captured"):
        graph.replay()
    graph.capture_begin()
    y = x + 10
    graph.capture_end()
    x.fill_(1.0)
    graph.replay()
    assert y.tolist() == [11.0] * 3
    shared = torch.accelerator.Graph(pool=graph.pool())
    with shared:
        z = y * 2
    shared.replay()
    assert z.tolist() == [22.0] * 3 and shared.pool() == graph.pool()
    with pytest.raises(RuntimeError, match="Unknown capture error mode"):
        torch.accelerator.Graph(capture_error_mode="strict").capture_begin()


@needs_accelerator_graph
def test_an_accelerator_graph_is_reported_at_the_with_line(restore_config):
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    graph = torch.accelerator.Graph()
    line = sys._getframe().f_lineno + 1
    with torch.Stream(), graph:
        torch.ones(2, device="cuda").exp()
    rows = [r for r in TorchDevice.report()
            if r["api"] == "torch.accelerator.Graph"]
    assert [(r["what"], r["line"]) for r in rows] == [("emulated", line)]


def test_random_operators_draw_again_on_each_replay():
    x = torch.ones(1000, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = torch.nn.functional.dropout(x, p=0.5)
    graph.replay()
    first = y.clone()
    graph.replay()
    assert not torch.equal(first, y)
    assert set(torch.unique(y).tolist()) <= {0.0, 2.0}


def test_a_capture_draws_nothing_and_replays_draw_as_eager_code():
    """CUDA's generators advance at each replay by what the graph draws,
    never at capture: a captured block's random numbers are the ones the
    same code draws eagerly, and so are the draws after it."""
    torch.manual_seed(0)
    eager = [torch.rand(3, device="cuda") for _ in range(3)]
    mine = torch.Generator(device=eager[0].device).manual_seed(7)
    own = [torch.rand(3, device=eager[0].device, generator=mine)
           for _ in range(2)]
    torch.manual_seed(0)
    mine.manual_seed(7)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(mine)
    with torch.cuda.graph(graph):
        y = torch.rand(3, device="cuda")
        z = torch.rand(3, device=y.device, generator=mine)
    for i in range(2):
        graph.replay()
        assert torch.equal(y, eager[i])
        assert torch.equal(z, own[i])
    assert torch.equal(torch.rand(3, device="cuda"), eager[2])


@pytest.mark.parametrize("read", ["item", "bool", "nonzero"])
def test_reading_a_value_back_inside_a_capture_raises(read):
    x = torch.ones(3, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="not permitted when stream is "
                                           "capturing"):
        with torch.cuda.graph(graph):
            y = x * 2
            if read == "item":
                y.sum().item()
            elif read == "bool":
                bool(y.sum() > 0)
            else:
                torch.nonzero(y)
    assert not torch.cuda.is_current_stream_capturing()
    with pytest.raises(RuntimeError, match="has not been captured"):
        graph.replay()


def test_one_hot_with_its_classes_reads_nothing_back_in_a_capture():
    """CUDA's one_hot leaves the bounds to its scatter; the CPU's reads the
    minimum and maximum back, which a capture must not do."""
    x = torch.zeros(4, dtype=torch.long, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = torch.nn.functional.one_hot(x, num_classes=3)
        z = torch.nn.functional.one_hot(input=x.flip(0), num_classes=3)
    x.copy_(torch.tensor([2, 0, 1, 1]))
    graph.replay()
    assert y.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert z.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    x.fill_(3)
    with pytest.raises(RuntimeError, match="out of bounds"):
        graph.replay()
    with pytest.raises(RuntimeError, match="not permitted when stream is "
                                           "capturing"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            torch.nn.functional.one_hot(x)  # infers the classes: reads
    with pytest.raises(RuntimeError, match="num_classes should be positive"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            torch.nn.functional.one_hot(x, num_classes=0)
    assert torch.nn.functional.one_hot(x, 4).tolist() == [[0, 0, 0, 1]] * 4


def test_memory_allocated_in_a_capture_reads_zeros_until_replay():
    """A program may step an optimizer on gradients the capture has not
    written yet (undefined on CUDA, where a fresh pool reads zeros): host
    memory reused from freed tensors must not turn them into garbage."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, H), torch.nn.ReLU(),
                                torch.nn.Linear(H, D_OUT)).cuda()
    x = torch.randn(N, D_IN, device="cuda")
    for _ in range(3):
        # Freed memory full of NaN, for the capture's allocations to reuse.
        torch.full((H, H), float("nan"), device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        buffers = [torch.empty(H, H, device="cuda") for _ in range(3)]
        buffers.append(torch.empty_permuted((H, H), (1, 0), device="cuda"))
        for b in buffers:
            b.copy_(torch.ones(H, H, device="cuda"))
        model(x).square().mean().backward()
    for b in buffers:
        assert torch.count_nonzero(b) == 0      # not written before replay
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    graph.replay()
    assert all(torch.equal(b, torch.ones(H, H, device="cuda"))
               for b in buffers)


def test_a_constant_made_in_a_capture_starts_from_its_value_each_replay():
    """torch.tensor(0.0) in a captured block is a constant each replay
    creates again (as a compiled block on CUDA does), not an accumulator."""
    x = torch.ones(3, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        total = torch.tensor(0.0, device="cuda")
        for _ in range(2):
            total += x.sum()
    for _ in range(3):
        graph.replay()
        assert total.item() == 6.0


# torch.compile runs in a child process: its first compile patches torch
# once per process (dynamo's TorchPatcher wraps torch.jit.trace, then
# TorchDevice's replacement), which the enable/disable cycles of
# tests/test_cycles.py, run later in the same worker, would undo.
COMPILED_READ = """
import torch
import TorchDevice

@torch.compile
def scaled(x):
    return x * x.sum().item()

x = torch.ones(3, device="cuda")
for block in (lambda: scaled(x), lambda: x.sum().item()):
    try:
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            block()
        print("no error")
    except RuntimeError as e:
        print("compiled" if "torch.compile'd function, which runs eagerly"
              in str(e) else "plain" if "torch.compile" not in str(e)
              else "other")
"""


def test_a_read_in_a_compiled_function_says_it_ran_eagerly():
    proc = run_python(COMPILED_READ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["compiled", "plain"]


ADAM_SETUP = """
import torch
import TorchDevice

torch.manual_seed(0)
w = torch.nn.Parameter(torch.randn(4, device="cuda"))
opt = torch.optim.Adam([w], lr=0.1)
x = torch.ones(4, device="cuda")


def update():
    (w * x).square().sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
"""


def _adam_setup():
    scope = {}
    exec(ADAM_SETUP, scope)
    return scope["w"], scope["opt"], scope["x"], scope["update"]


def test_an_optimizer_step_captured_eagerly_needs_capturable():
    w, opt, x, update = _adam_setup()
    update()
    with pytest.raises(RuntimeError, match="Attempting CUDA graph capture "
                       "of step\\(\\) for an instance of Adam but "
                       "param_groups' capturable is False"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            update()


COMPILED_STEP = ADAM_SETUP + """
ref = torch.nn.Parameter(w.detach().clone())
ref_opt = torch.optim.Adam([ref], lr=0.1)
for _ in range(2):
    update()
    (ref * x).square().sum().backward()
    ref_opt.step()
    ref_opt.zero_grad(set_to_none=False)
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):
    torch.compile(update, backend="eager")()
print("capturable", opt.param_groups[0]["capturable"])
for scale in (1.0, -2.0, 0.5):
    x.fill_(scale)
    graph.replay()
    (ref * x).square().sum().backward()
    ref_opt.step()
    ref_opt.zero_grad(set_to_none=False)
    torch.testing.assert_close(w.detach(), ref.detach())
print("steps", int(opt.state[w]["step"].item()))
"""


def test_a_compiled_optimizer_step_is_captured_as_capturable():
    """torch.compile traces a step as capturable=True (CUDA programs
    capture compiled updates with capturable=False: LeanRL, d3rlpy); the
    compiled function runs eagerly in the capture, which sets the flag."""
    proc = run_python(COMPILED_STEP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["capturable", "True", "steps", "5"]


def test_manual_capture_end_after_a_read_says_the_capture_was_lost():
    x = torch.ones(3, device="cuda")
    graph = torch.cuda.CUDAGraph()
    graph.capture_begin()
    with pytest.raises(RuntimeError):
        x.sum().item()
    with pytest.raises(RuntimeError, match="invalidated"):
        graph.capture_end()
    assert not torch.cuda.is_current_stream_capturing()


def test_an_error_in_the_block_leaves_the_graph_uncaptured():
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(ZeroDivisionError):
        with torch.cuda.graph(graph):
            torch.ones(2, device="cuda") + 1
            1 / 0
    with pytest.raises(RuntimeError, match="has not been captured"):
        graph.replay()
    graph.reset()
    x = torch.ones(2, device="cuda")
    with torch.cuda.graph(graph):       # the same graph captures again
        y = x + 1
    graph.replay()
    assert y.tolist() == [2.0, 2.0]


def test_host_bookkeeping_happens_once_at_capture():
    """record_function markers are the host's: CUDA does not replay them."""
    x = torch.ones(4, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with torch.profiler.record_function("captured_block"):
            y = x * 3
    x.fill_(2.0)
    with torch.profiler.profile() as prof:
        graph.replay()
    names = {e.key for e in prof.key_averages()}
    assert "captured_block" not in names
    assert any("mul" in n for n in names)
    assert y.tolist() == [6.0] * 4


def test_replay_under_autocast_adds_no_casts():
    w = torch.randn(D_IN, D_OUT, device="cuda")
    x = torch.randn(N, D_IN, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = x @ w
    graph.replay()
    plain = y.clone()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        graph.replay()
    assert y.dtype == torch.float32
    assert torch.equal(plain, y)


def test_pools_debug_dump_and_what_has_no_equivalent(tmp_path):
    pool = torch.cuda.graph_pool_handle()
    assert pool != torch.cuda.graph_pool_handle()
    x = torch.ones(2, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        y = x.exp()
    assert graph.pool() == pool
    other = torch.cuda.CUDAGraph()
    with torch.cuda.graph(other, pool=graph.pool()):
        z = y + 1
    graph.replay()
    other.replay()
    torch.testing.assert_close(z, x.exp() + 1)
    graph.enable_debug_mode()
    graph.debug_dump(str(tmp_path / "graph.txt"))
    assert "aten.exp" in (tmp_path / "graph.txt").read_text()
    with pytest.raises(RuntimeError, match="no cudaGraph_t"):
        graph.raw_cuda_graph()


def test_a_capture_is_reported_at_the_with_line(restore_config):
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    graph = torch.cuda.CUDAGraph()
    line = sys._getframe().f_lineno + 1
    with torch.cuda.graph(graph):
        torch.ones(2, device="cuda").exp()
    rows = [r for r in TorchDevice.report()
            if r["api"] == "torch.cuda.CUDAGraph"]
    assert [(r["what"], r["line"]) for r in rows] == [("emulated", line)]


@needs_accelerator_graph
def test_disable_gives_back_torchs_own_types():
    ours = torch.cuda.CUDAGraph
    ours_generic = torch.accelerator.Graph
    TorchDevice.disable()
    try:
        import torch.accelerator.graphs as generic
        import torch.cuda.graphs as graphs
        assert torch.cuda.CUDAGraph is graphs.CUDAGraph
        assert torch.cuda.CUDAGraph is not ours
        assert torch.cuda.graph.__module__ == "torch.cuda.graphs"
        assert torch.accelerator.Graph is generic.Graph is not ours_generic
    finally:
        TorchDevice.enable()
    assert torch.cuda.CUDAGraph is ours
    assert torch.accelerator.Graph is ours_generic


# tensordict is not a dependency: a stand-in of its CudaGraphModule's first
# call, with the check it makes of the tensors it is given.
TENSORDICT_STAND_IN = """
import torch


class CudaGraphModule:
    _REQUIRES_GRAD_ERROR = "the inputs must not require gradients"

    def __init__(self, fn):
        self.fn = fn
        self.graph = None

    @classmethod
    def _check_device_and_clone(cls, x):
        if x.requires_grad:
            raise RuntimeError(cls._REQUIRES_GRAD_ERROR)
        if x.device.type != "cuda":
            raise ValueError(
                f"All tensors must be stored on CUDA. Got {x.device.type}.")
        return x.clone()

    @classmethod
    def _check_device_and_grad(cls, x):
        if x.device.type != "cuda":
            raise ValueError(
                f"All tensors must be stored on CUDA. Got {x.device.type}.")
        if x.requires_grad:
            raise RuntimeError(cls._REQUIRES_GRAD_ERROR)

    def __call__(self, x):
        if self.graph is None:
            self._check_device_and_grad(x)
            self.x = self._check_device_and_clone(x)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.fn(self.x)
        self.x.copy_(x)
        self.graph.replay()
        return self.out.clone()
"""

TENSORDICT_USER = """
import json
import torch
import TorchDevice
from tensordict.nn.cudagraphs import CudaGraphModule

f = CudaGraphModule(lambda x: x * 2)
out = [f(torch.full((2,), float(i), device="cuda")).tolist() for i in (1, 2)]
try:
    CudaGraphModule(torch.neg)(torch.ones(2, device="cuda",
                                          requires_grad=True))
    refused = None
except RuntimeError as e:
    refused = str(e)
print(json.dumps([out, refused]))
"""


def test_tensordicts_cuda_graph_module_takes_the_tensors_made_for_cuda(
        tmp_path):
    """Its check of a tensor's device type refused them ("All tensors must
    be stored on CUDA. Got cpu."): they read the device really used."""
    package = tmp_path / "tensordict" / "nn"
    package.mkdir(parents=True)
    for folder in (tmp_path / "tensordict", package):
        (folder / "__init__.py").write_text("")
    (package / "cudagraphs.py").write_text(TENSORDICT_STAND_IN)
    proc = run_python(TENSORDICT_USER, env={"PYTHONPATH": os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, refused = json.loads(proc.stdout.splitlines()[-1])
    assert out == [[2.0, 2.0], [4.0, 4.0]]
    assert refused == "the inputs must not require gradients"
