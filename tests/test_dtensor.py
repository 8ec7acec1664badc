"""Tensor-parallel attention written for CUDA runs where "cuda" is the host
(docs/compile-checkpoints-distributed.md, "DTensor").

torch's DTensor has placements for the attention kernels a GPU runs, none
for the CPU's; TorchDevice adds them.  Two ranks under torchrun compute
F.scaled_dot_product_attention on DTensors sharded on the heads and on the
batch, with and without masks, and compare the result and the gradients
with the same attention computed whole on each rank.
"""
from __future__ import annotations

import pytest
import torch

from conftest import HAS_CUDA, run_python
from test_distributed import _ranks

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or HAS_CUDA,
    reason="needs torch.distributed; on NVIDIA machines the GPU's "
    "attention has torch's own placements")

PROGRAM = '''
import json, os
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
WITH_TORCHDEVICE

mesh = init_device_mesh("cuda", (2,))
rank = dist.get_rank()
torch.manual_seed(0)
B, H, L, E = 4, 4, 6, 8
q, k, v = (torch.randn(B, H, L, E, device="cuda") for _ in range(3))
grad = torch.randn(B, H, L, E, device="cuda")
per_head = torch.rand(B, H, L, L, device="cuda") > 0.3
broadcast = torch.rand(1, 1, L, L, device="cuda") > 0.3
per_head[..., 0] = True
broadcast[..., 0] = True

def attend(q, k, v, **kw):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, **kw)
    out.backward(grad if not hasattr(out, "placements")
                 else distribute_tensor(grad, mesh, out.placements))
    return [t.full_tensor() if hasattr(t, "full_tensor") else t
            for t in (out, q.grad, k.grad, v.grad)]

cases = {
    "heads, causal": ([Shard(1)], {"is_causal": True}, None),
    "heads, per-head mask": ([Shard(1)], {}, (per_head, [Shard(1)])),
    "heads, broadcast mask": ([Shard(1)], {}, (broadcast, [Replicate()])),
    "batch, per-head mask": ([Shard(0)], {}, (per_head, [Shard(0)])),
    "batch, broadcast mask": ([Shard(0)], {}, (broadcast, [Replicate()])),
    "replicated": ([Replicate()], {"is_causal": True}, None),
}
result = {"rank": rank}
for name, (placement, kw, mask) in cases.items():
    whole_kw, shard_kw = dict(kw), dict(kw)
    if mask is not None:
        whole_kw["attn_mask"] = mask[0]
        shard_kw["attn_mask"] = distribute_tensor(mask[0], mesh, mask[1])
    whole = attend(q, k, v, **whole_kw)
    sharded = attend(*(distribute_tensor(t, mesh, placement)
                       for t in (q, k, v)), **shard_kw)
    result[name] = max((a - b).abs().max().item()
                       for a, b in zip(whole, sharded))
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.destroy_process_group()
'''


def test_sharded_attention_equals_whole_attention(tmp_path):
    for r in _ranks(tmp_path, "tp_attention.py", PROGRAM.replace(
            "WITH_TORCHDEVICE", "import TorchDevice")):
        r.pop("rank")
        assert len(r) == 6
        for case, diff in r.items():
            assert diff < 1e-5, (case, diff)


FSDP_OVER_TP = '''
import json, os
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel, RowwiseParallel, parallelize_module)
import TorchDevice

device_type = torch.accelerator.current_accelerator().type

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

def train(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for step in range(3):
        torch.manual_seed(10 + step)
        x = torch.randn(5, 6, device=device_type)
        loss = net(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, [p.full_tensor() if hasattr(p, "full_tensor") else p
                    for p in net.parameters()]

whole_losses, whole_params = train(model().to(device_type))
result = {}
# tensor parallelism across the ranks; then FSDP2 sharding across them
for shape in ((1, 2), (2, 1)):
    mesh = init_device_mesh(device_type, shape, mesh_dim_names=("dp", "tp"))
    net = parallelize_module(model().to(device_type), mesh["tp"],
                             {"0": ColwiseParallel(), "2": RowwiseParallel()})
    fully_shard(net, mesh=mesh["dp"])
    losses, params = train(net)
    result[str(shape)] = {"losses": losses, "params": max(
        (a - b).abs().max().item() for a, b in zip(params, whole_params))}
rank = dist.get_rank()
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"{rank}.json"),
          "w") as fh:
    json.dump({"rank": rank, "whole": whole_losses, **result}, fh)
dist.destroy_process_group()
'''


def test_fsdp2_over_tensor_parallelism_trains_as_the_whole_model(tmp_path):
    # FSDP2 makes its device from the program's "cuda" mesh and checks
    # every parameter against it: built as the truth ("cuda:0"), it
    # matched no tensor-parallel parameter and fully_shard stopped with
    # "Expects DTensor to be moved to cuda but got cpu".
    for r in _ranks(tmp_path, "fsdp_tp.py", FSDP_OVER_TP):
        whole = r.pop("whole")
        r.pop("rank")
        assert sorted(r) == ["(1, 2)", "(2, 1)"]
        for shape, got in r.items():
            assert got["losses"] == pytest.approx(whole, rel=1e-5, abs=1e-6)
            assert got["params"] < 1e-5, shape


def test_registered_only_once_torch_distributed_tensor_is_imported():
    proc = run_python("""
import sys, TorchDevice
from TorchDevice import _dtensor, _imports
print("torch.distributed.tensor" in sys.modules, _dtensor._registered,
      _imports.waiting("torch.distributed.tensor"))
import torch.distributed.tensor
print(_dtensor._registered, _imports.waiting("torch.distributed.tensor"))
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True", "True", "False"]


def test_disabled_before_the_import_registers_nothing():
    proc = run_python("""
import TorchDevice
TorchDevice.disable()
import torch.distributed.tensor
from TorchDevice import _dtensor
print(_dtensor._registered)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]


def test_registered_at_once_where_dtensor_is_already_imported():
    proc = run_python("""
import torch.distributed.tensor
import TorchDevice
from TorchDevice import _dtensor
print(_dtensor._registered)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True"]


RANDOM_OPS = '''
import json, os
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torch.distributed.tensor as dt
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel, RowwiseParallel, parallelize_module)
import TorchDevice

mesh = init_device_mesh("cuda", (2,))
x = torch.arange(42.).view(7, 6) + 1          # 7 rows: uneven shards
p = torch.linspace(0, 1, 42).view(7, 6)
gen = torch.Generator(device="cuda")

def empty(pl):
    return dt.empty(7, 6, device_mesh=mesh, placements=pl)

def with_gen(t):
    gen.manual_seed(5)
    return t.normal_(generator=gen)

# name: (on the DTensor, on one device)
cases = {
    "normal_": (lambda pl: nn.init.normal_(empty(pl)),
                lambda: nn.init.normal_(torch.empty(7, 6, device="cuda"))),
    "uniform_": (lambda pl: nn.init.uniform_(empty(pl), -1, 2),
                 lambda: nn.init.uniform_(torch.empty(7, 6, device="cuda"),
                                          -1, 2)),
    "trunc_normal_": (
        lambda pl: nn.init.trunc_normal_(empty(pl), std=0.02),
        lambda: nn.init.trunc_normal_(torch.empty(7, 6, device="cuda"),
                                      std=0.02)),
    "rand": (lambda pl: dt.rand(7, 6, device_mesh=mesh, placements=pl),
             lambda: torch.rand(7, 6, device="cuda")),
    "randn": (lambda pl: dt.randn(7, 6, device_mesh=mesh, placements=pl),
              lambda: torch.randn(7, 6, device="cuda")),
    "dropout": (lambda pl: F.dropout(distribute_tensor(x, mesh, pl), 0.3),
                lambda: F.dropout(x.cuda(), 0.3)),
    "bernoulli": (lambda pl: torch.bernoulli(distribute_tensor(p, mesh, pl)),
                  lambda: torch.bernoulli(p.cuda())),
    "rand_like": (lambda pl: torch.rand_like(distribute_tensor(x, mesh, pl)),
                  lambda: torch.rand_like(x.cuda())),
    "randint_like": (
        lambda pl: torch.randint_like(distribute_tensor(x, mesh, pl), 10),
        lambda: torch.randint_like(x.cuda(), 10)),
    "generator": (lambda pl: with_gen(empty(pl)),
                  lambda: with_gen(torch.empty(7, 6, device="cuda"))),
}
result = {"rank": dist.get_rank()}
for pl in ([Shard(0)], [Shard(1)], [Replicate()]):
    for name, (sharded, whole) in cases.items():
        torch.manual_seed(0)
        a = sharded(pl).full_tensor()
        after_a = torch.rand(3, device="cuda")
        torch.manual_seed(0)
        b = whole()
        after_b = torch.rand(3, device="cuda")
        result[f"{name} {pl}"] = [torch.equal(a, b),
                                  torch.equal(after_a, after_b)]

def init(parallel, shape):
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    if parallel:
        mesh2 = init_device_mesh("cuda", shape, mesh_dim_names=("dp", "tp"))
        parallelize_module(net, mesh2["tp"],
                           {"0": ColwiseParallel(), "2": RowwiseParallel()})
        fully_shard(net, mesh=mesh2["dp"])
    net.to_empty(device="cuda")
    torch.manual_seed(3)
    with torch.no_grad():
        for m in (net[0], net[2]):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return [t.full_tensor() if hasattr(t, "full_tensor") else t
            for t in net.parameters()]

for shape in ((1, 2), (2, 1)):
    result[f"FSDP2 over TP {shape}"] = [all(
        torch.equal(a, b) for a, b in zip(init(True, shape),
                                          init(False, None)))]
with open(os.path.join(os.environ["TD_RESULT_DIR"],
                       f"{result['rank']}.json"), "w") as fh:
    json.dump(result, fh)
dist.destroy_process_group()
'''


def test_random_operators_on_dtensors_draw_what_one_device_draws(tmp_path):
    # torch draws a sharded DTensor from CUDA's counter-based generator;
    # where "cuda" lands on the host it stopped with "OffsetBasedRNGTracker
    # instantiation requires the presence of cuda device".  Each case
    # compares the whole DTensor with the same draw on one device, and the
    # generator's next numbers after it.
    for r in _ranks(tmp_path, "random_ops.py", RANDOM_OPS):
        r.pop("rank")
        assert len(r) == 32
        assert {k: v for k, v in r.items() if not all(v)} == {}


def test_random_operators_tracker_stands_in_while_enabled():
    proc = run_python("""
import TorchDevice
import torch.distributed.tensor._random as random
from TorchDevice import _dtensor_rng
ours = random.OffsetBasedRNGTracker
print(ours.__name__, ours.__mro__[1].__name__)
random._rng_tracker = object.__new__(ours)
TorchDevice.disable()
print(random.OffsetBasedRNGTracker.__name__, random._rng_tracker)
TorchDevice.enable()
print(random.OffsetBasedRNGTracker.__name__)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "WholeDrawRNGTracker", "OffsetBasedRNGTracker",
        "OffsetBasedRNGTracker", "None", "WholeDrawRNGTracker"]


RANK0_STATE = '''
import json, logging, os
import torch
import torch.distributed as dist
import torch.distributed.tensor._random as random
from torch.distributed.device_mesh import init_device_mesh
import TorchDevice

said = []
class Keep(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())
logging.getLogger("TorchDevice").addHandler(Keep())
mesh = init_device_mesh("cuda", (2,))
rank = dist.get_rank()
result = {"rank": rank}
# Unseeded, each process starts from a random host seed; every GPU starts
# from the same one, and torch says nothing there.
random.OffsetBasedRNGTracker(mesh)
result["unseeded"] = len(said)
torch.manual_seed(rank)               # seeds the program made differ
random.OffsetBasedRNGTracker(mesh)
result["seeded apart"] = len(said)
result["state"] = torch.get_rng_state().sum().item()
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.destroy_process_group()
'''


def test_rank0_state_warning_only_where_the_program_seeded_ranks_apart(
        tmp_path):
    # The warning showed on every rank but 0 of every unseeded run
    # (Lightning's tensor-parallel example), where torch on CUDA is silent.
    ranks = _ranks(tmp_path, "rank0_state.py", RANK0_STATE)
    assert [r["unseeded"] for r in ranks] == [0, 0]
    assert [r["seeded apart"] for r in ranks] == [0, 1]
    assert ranks[0]["state"] == ranks[1]["state"]


COMPILED_DROPOUT = '''
import json, os
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
import TorchDevice

mesh = init_device_mesh("cuda", (2,))
x = torch.ones(8, 6)

@torch.compile
def dropout(t):
    return F.dropout(t, 0.5)

torch.manual_seed(0)
sharded = dropout(distribute_tensor(x, mesh, [Shard(0)])).full_tensor()
torch.manual_seed(0)
whole = dropout(x.cuda())
rank = dist.get_rank()
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"{rank}.json"),
          "w") as fh:
    tag = torch.compiler.config.cache_key_tag
    TorchDevice.disable()
    json.dump({"rank": rank, "equal": torch.equal(sharded, whole),
               "halves equal": torch.equal(sharded[:4], sharded[4:]),
               "tag": tag, "tag after": torch.compiler.config.cache_key_tag},
              fh)
dist.destroy_process_group()
'''


def test_compiled_random_operator_on_a_dtensor_draws_what_one_device_draws(
        tmp_path, monkeypatch):
    # Compiled (Inductor draws its own numbers, natively too): the sharded
    # DTensor equals the same compiled function on one device, and its
    # two shards differ.  The second run loads the first one's code from
    # torch.compile's caches: the code cuts the shard of the rank that
    # traced it, so each rank's code is kept under a key naming the rank
    # (ranks sharing the folder once loaded one rank's code, and every
    # shard held the same numbers).  A tag of the program's own is kept.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_COMPILE_CACHE_KEY_TAG", "mine")
    for run in ("cold", "warm"):
        for r in _ranks(tmp_path, "compiled_dropout.py", COMPILED_DROPOUT):
            assert r["equal"] and not r["halves equal"], (run, r)
            assert r["tag"] == f"mine|TorchDevice DTensor rank {r['rank']}"
            assert r["tag after"] == "mine"
