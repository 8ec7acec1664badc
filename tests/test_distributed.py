"""A training script written for NCCL runs under torchrun on gloo
(docs/compile-checkpoints-distributed.md).  Each torchrun launch takes a few seconds; the whole
file stays well under the two minutes CI allows."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
import sys

import pytest
import torch

import TorchDevice
from TorchDevice import _distributed, _tdcore
from conftest import (ACCEL, HAS_CUDA, HOST_LANDS, LAST_WORD, ROOT, TARGET,
                      run_python)

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or HAS_CUDA,
    reason="needs torch.distributed; on NVIDIA machines NCCL is native")

# gloo, standing in for NCCL, reduces host tensors only: where the machine
# has another accelerator (make test-accel) the ranks run on the host, as
# TorchDevice's warning tells such a program to
# (docs/compile-checkpoints-distributed.md).
RANKS_ENV = {"TORCHDEVICE_TARGET": "cpu"} if ACCEL is not None else {}

# What a CUDA/NCCL training script looks like, unmodified but for the
# import.  BACKEND and INIT are filled in per test.
SCRIPT = '''
import json, os, sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import TorchDevice

def emit(name, result):
    # One file per process: the ranks share stdout, and lines printed at
    # the same moment can interleave.
    with open(os.path.join(os.environ["TD_RESULT_DIR"], name + ".json"),
              "w") as fh:
        json.dump(result, fh)

def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)

def train(model, opt, x, y):
    for _ in range(3):
        opt.zero_grad()
        out = model(x.cuda(non_blocking=True))
        loss = ((out - y.cuda()) ** 2).mean()
        loss.backward()
        opt.step()

def main():
    if "LOCAL_RANK" not in os.environ:          # the single-process reference
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2).cuda()
        dp = torch.nn.DataParallel(model)
        x, y = data()
        train(dp, torch.optim.SGD(dp.parameters(), lr=0.1), x, y)
        emit("reference", {
            "params": [p.detach().cpu().tolist() for p in model.parameters()],
            "dp_passthrough": dp.module is model and dp.device_ids == [0]})
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group(BACKEND, **INIT)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).cuda()
    ddp = DDP(model, device_ids=[local_rank], output_device=local_rank)
    x, y = data()
    shard = slice(rank * 4, rank * 4 + 4)
    train(ddp, torch.optim.SGD(ddp.parameters(), lr=0.1), x[shard], y[shard])
    t = torch.full((2,), float(rank + 1), device="cuda")
    dist.all_reduce(t)
    dist.barrier(device_ids=[local_rank])
    emit(f"rank{rank}", {
        "rank": rank, "world": world, "backend": dist.get_backend(),
        "all_reduce": t.tolist(), "tensor_device": str(t.device),
        "params": [p.detach().cpu().tolist() for p in model.parameters()]})
    dist.destroy_process_group()

main()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program_lines(stdout: str) -> list:
    """The lines the program printed: torch 2.9 and earlier print gloo's
    "[Gloo] Rank 0 is connected to ..." to stdout as well."""
    return [ln for ln in stdout.splitlines() if not ln.startswith("[Gloo]")]


def _results(directory) -> list:
    return [json.loads(p.read_text())
            for p in sorted(Path(directory).glob("*.json"))]


def _script(tmp_path, backend: str, init: str):
    path = tmp_path / "train_nccl.py"
    path.write_text(SCRIPT.replace("BACKEND", repr(backend))
                    .replace("INIT", init))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    where = tmp_path_factory.mktemp("ref")
    path = _script(where, "nccl", "{}")
    proc = run_python(script=path, timeout=120,
                      env={"TD_RESULT_DIR": str(where)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _results(where)[0]


VARIANTS = {
    "nccl-env-device_id": ("nccl", '{"init_method": "env://", '
                           '"device_id": torch.device("cuda", local_rank)}'),
    "cuda:nccl,cpu:gloo": ("cuda:nccl,cpu:gloo", "{}"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_torchrun_two_ranks_on_gloo(tmp_path, reference, variant):
    backend, init = VARIANTS[variant]
    path = _script(tmp_path, backend, init)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TORCHDEVICE")}
    env["OMP_NUM_THREADS"] = "1"
    env["TD_RESULT_DIR"] = str(tmp_path)
    env.update(RANKS_ENV)
    # The ranks import the tree under test, like the test process does.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
         str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = sorted(_results(tmp_path), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["world"] == 2
        assert r["backend"] == "gloo"
        assert r["all_reduce"] == [3.0, 3.0]
        assert r["tensor_device"] == "cpu"
    # Both ranks end identical, and equal to one process on all the data.
    assert ranks[0]["params"] == ranks[1]["params"]
    for got, want in zip(ranks[0]["params"], reference["params"]):
        assert torch.allclose(torch.tensor(got), torch.tensor(want),
                              atol=1e-6)


def test_reference_run_uses_dataparallel_as_pass_through(reference):
    assert reference["dp_passthrough"] is True


def test_dataparallel_over_one_device_is_the_module():
    """DataParallel scatters with torch._C._scatter, which only CUDA builds
    have: on every other profile it runs the module itself, as it does over
    one GPU, and gives the module's numbers.  It has the attributes it has
    over one GPU, which subclasses read (PyG's DataParallel builds
    torch.device(f"cuda:{self.device_ids[0]}"))."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).cuda()
    dp = torch.nn.DataParallel(model)
    x = torch.randn(8, 4).cuda()
    assert dp.module is model
    assert (dp.device_ids, dp.output_device, dp.dim) == ([0], 0, 0)
    assert str(dp.src_device_obj) == "cuda:0"
    assert str(torch.device(f"cuda:{dp.device_ids[0]}")) == "cuda:0"
    assert torch.equal(dp(x), model(x))
    assert torch.equal(torch.nn.parallel.data_parallel(model, x), model(x))
    assert torch.equal(
        torch.nn.parallel.data_parallel(model, (x,), device_ids=[0]),
        model(x))
    # A host model given to it moves to "cuda", as over one GPU.
    host = torch.nn.Linear(4, 2)
    weight = host.weight
    torch.nn.DataParallel(host)
    assert host.weight is weight and _tdcore.on_accelerator(host.weight)


def test_dataparallel_is_patched_without_torch_distributed(monkeypatch):
    """A torch built without torch.distributed still has nn.DataParallel,
    which needs no process group: its patches do not depend on it."""
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    names = {(getattr(p.owner, "__name__", p.owner), p.name)
             for p in _distributed.patches()}
    assert ("DataParallel", "__init__") in names
    assert ("DataParallel", "forward") in names
    assert ("torch.nn.parallel", "data_parallel") in names
    assert not any(name in ("init_process_group", "new_group", "barrier")
                   for _, name in names)


def test_dataparallel_over_the_devices_shown():
    """TORCHDEVICE_DEVICE_COUNT=2: device_ids names both, the module runs
    once on the whole batch (the one device is both)."""
    proc = run_python("""
        import torch, TorchDevice
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2).cuda()
        dp = torch.nn.DataParallel(model)
        x = torch.randn(6, 4, device="cuda")
        assert (dp.device_ids, dp.output_device) == ([0, 1], 0), dp.device_ids
        assert torch.equal(dp(x), model(x))
        one = torch.nn.DataParallel(model, device_ids=[1], output_device=1)
        assert (one.device_ids, one.output_device) == ([1], 1)
        assert str(one.src_device_obj) == "cuda:1"
        print("ok")
    """, env={"TORCHDEVICE_DEVICE_COUNT": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


# A DataParallel subclass that runs DataParallel's own steps in its forward,
# as GPyTorch's MultiDeviceKernel does; its outputs are a tensor, a dict and
# a named tuple, and the batch is also passed by keyword.
STEPWISE_DP = """
import collections, torch, TorchDevice
Out = collections.namedtuple("Out", "y z")

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x, scale=None):
        y = self.lin(x) * scale.sum()
        return y, {"sq": y * y}, Out(y + 1, None)

class Stepwise(torch.nn.DataParallel):
    def forward(self, x, scale):
        inputs, kwargs = self.scatter((x,), {"scale": scale}, self.device_ids)
        replicas = self.replicate(self.module, self.device_ids[:len(inputs)])
        outputs = self.parallel_apply(replicas, inputs, kwargs)
        return self.gather(outputs, self.output_device)

torch.manual_seed(0)
net = Net().cuda()
x = torch.randn(5, 4, device="cuda")
scale = torch.ones(5, 1, device="cuda")
dp = Stepwise(net)
y, d, out = dp(x, scale)
n = len(dp.device_ids)
chunks = [net(xc, scale=sc) for xc, sc in zip(x.chunk(n), scale.chunk(n))]
assert torch.equal(y, torch.cat([c[0] for c in chunks]))
assert torch.equal(d["sq"], torch.cat([c[1]["sq"] for c in chunks]))
assert isinstance(out, Out) and out.z is None
assert torch.equal(out.y, y + 1)
y.sum().backward()
assert net.lin.weight.grad is not None
print(n, len(dp.scatter((x,), None, dp.device_ids)[0]))
"""


@pytest.mark.parametrize("count", ["1", "2"])
def test_dataparallel_steps_as_over_the_devices_shown(count):
    """DataParallel's scatter, replicate, parallel_apply and gather (which
    subclasses call) compute what they compute over the GPUs shown: the
    batch in one chunk per device, each run by the module, concatenated."""
    proc = run_python(STEPWISE_DP, env={"TORCHDEVICE_DEVICE_COUNT": count})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [count, count]


# The same steps through torch.nn.parallel's functions, as code that splits
# its own batches over a DataParallel model's device_ids calls them (captum).
FUNCTIONAL_DP = '''
import torch, TorchDevice
from torch.nn.parallel import gather, parallel_apply, replicate, scatter
from torch.nn.parallel.scatter_gather import scatter_kwargs
torch.manual_seed(0)
net = torch.nn.Linear(4, 2).cuda()
ids = torch.nn.DataParallel(net).device_ids
x = torch.randn(5, 4, device="cuda")
chunks = scatter(x, ids)
assert len(chunks) == len(ids)
assert torch.equal(torch.cat(chunks), x)
inputs, kwargs = scatter_kwargs((x,), {"k": x}, ids)
assert len(inputs) == len(kwargs) == len(ids)
assert torch.equal(kwargs[0]["k"], inputs[0][0])
replicas = replicate(net, ids)
outputs = parallel_apply(replicas, [(c,) for c in chunks])
y = gather(outputs, ids[0])
assert torch.equal(y, net(x))
y.sum().backward()
assert net.weight.grad is not None
print(len(ids), len(replicas))
'''


@pytest.mark.parametrize("count", ["1", "2"])
def test_parallel_functions_as_over_the_devices_shown(count):
    """torch.nn.parallel's scatter, scatter_kwargs, replicate,
    parallel_apply and gather, which reach CUDA-only code in torch, compute
    what they compute over the GPUs shown, on the one device."""
    proc = run_python(FUNCTIONAL_DP, env={"TORCHDEVICE_DEVICE_COUNT": count})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [count, count]


def test_nccl_on_another_accelerator_warns_where_to_run(tmp_path):
    """Where "cuda" lands on an accelerator gloo cannot reduce (MPS, the
    simulated one), the rewrite says so and how to run the ranks."""
    if ACCEL is None:
        pytest.skip("on the host gloo reduces every tensor the program makes")
    proc = run_python('''
import torch, torch.distributed as dist
import TorchDevice
dist.init_process_group("nccl", init_method="tcp://127.0.0.1:%d",
                        rank=0, world_size=1)
t = torch.ones(2, device="cuda")
try:
    dist.all_reduce(t)
    print("REDUCED")
except RuntimeError as exc:
    print("REFUSED")
dist.destroy_process_group()
''' % _free_port(), timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED" in proc.stdout
    assert "TORCHDEVICE_TARGET=cpu" in proc.stderr
    assert f"tensors on {TARGET.type} cannot take part" in proc.stderr


@pytest.mark.parametrize("asked, runs", [
    ("nccl", "gloo"), ("NCCL", "gloo"), ("gloo", "gloo"),
    ("cuda:nccl,cpu:gloo", "gloo"), ("cpu:gloo,cuda:nccl", "gloo"),
    ("cuda:nccl", "gloo"), ("cpu:gloo,mps:gloo", "cpu:gloo,mps:gloo"),
    ("mpi", "mpi"), (None, None),
])
def test_backend_rewriting(asked, runs):
    assert _distributed.rewrite_backend(asked) == runs


def test_without_torchdevice_nccl_is_refused(tmp_path):
    """The script really needs the rewrite: torch alone refuses "nccl"."""
    proc = run_python('''
import torch, torch.distributed as dist
try:
    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:%d",
                            rank=0, world_size=1)
    print("INIT ok")
except Exception as exc:
    print("INIT", type(exc).__name__, exc)
''' % _free_port(), timeout=60)
    assert "INIT ok" not in proc.stdout, proc.stdout


# gloo's worker thread frees a finished collective's tensors a moment after
# the program's wait returned, and needs the GIL for it; so does this
# program's own thread (conftest.LAST_WORD).
LAST_COLLECTIVE = '''
import os, sys, threading
import torch, torch.distributed as dist
import TorchDevice
dist.init_process_group(sys.argv[2], init_method="tcp://127.0.0.1:%d",
                        rank=0, world_size=1)
t = torch.ones(2, device="cuda")
dist.all_reduce(t)
dist.destroy_process_group()
''' + LAST_WORD


@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_gloo_threads_get_the_gil_before_the_interpreter_finalizes(
        tmp_path, backend):
    """A torchrun rank given gloo for NCCL could end with SIGABRT ("terminate
    called without an active exception") after completing its work, in
    about one run in five here: gloo's thread took the GIL to free the
    tensors of the last collective after the interpreter had begun to
    finalize (docs/reliability.md, "At exit").  A program that chose gloo
    itself is guarded too."""
    marker = tmp_path / "marker"
    proc = run_python(LAST_COLLECTIVE % _free_port(), str(marker), backend,
                      timeout=60, env=RANKS_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.read_text() == "freed"


# A program in the style of pytorch/examples' distributed ones: it refuses
# to run on fewer GPUs than ranks ("Unable to locate sufficient 2 gpus",
# exit 0 having trained nothing), picks its device by LOCAL_RANK and trains
# with DDP.  Under torchrun the device count is the launch's
# (docs/masquerade.md, "Device count").
NEEDS_TWO = '''
import json, os, sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import TorchDevice

if torch.cuda.device_count() < 2:
    print("Unable to locate sufficient 2 gpus to run this example. Exiting.")
    sys.exit(0)
local_rank = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(local_rank)
dist.init_process_group("nccl")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Linear(4, 2).to(local_rank)
ddp = DDP(model, device_ids=[local_rank])
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
g = torch.Generator().manual_seed(rank)
x, y = torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)
losses = []
for _ in range(5):
    opt.zero_grad()
    loss = ((ddp(x.to(local_rank)) - y.to(local_rank)) ** 2).mean()
    loss.backward()
    opt.step()
    losses.append(loss.item())
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"rank{rank}.json"),
          "w") as fh:
    json.dump({"rank": rank, "count": torch.cuda.device_count(),
               "accel_count": torch.accelerator.device_count(),
               "current": torch.cuda.current_device(),
               "losses": losses,
               "params": [p.detach().cpu().tolist()
                          for p in model.parameters()]}, fh)
dist.destroy_process_group()
'''


# gloo's own words when the ranks could not wire up at all: the free port
# picked for the rendezvous, or gloo's listener, was taken between the pick
# and its use by another job on the machine (two test runs side by side).
# Nothing of the program ran yet, so the launch is tried once more.
_WIRING_FAILED = ("connectFullMesh failed", "Address already in use")


def _torchrun(path, tmp_path, nproc: int = 2):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TORCHDEVICE")}
    env["OMP_NUM_THREADS"] = "1"
    env["TD_RESULT_DIR"] = str(tmp_path)
    env.update(RANKS_ENV)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    for attempt in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run",
             f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
             f"--master_port={_free_port()}", str(path)],
            capture_output=True, text=True, timeout=120, env=env)
        if proc.returncode == 0 or not any(
                w in proc.stderr for w in _WIRING_FAILED):
            break
    return proc


def _ranks(tmp_path, name: str, program: str) -> list:
    """Runs `program` on two torchrun ranks; what each rank wrote to
    TD_RESULT_DIR, in rank order (checked to be ranks 0 and 1)."""
    path = tmp_path / name
    path.write_text(program)
    proc = _torchrun(path, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = sorted(_results(tmp_path), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    return ranks


def test_program_that_needs_two_gpus_trains_on_both_ranks(tmp_path):
    path = tmp_path / "needs_two.py"
    path.write_text(NEEDS_TWO)
    proc = _torchrun(path, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Unable to locate" not in proc.stdout
    ranks = sorted(_results(tmp_path), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["count"] == r["accel_count"] == 2
        assert r["current"] == r["rank"]
        assert len(r["losses"]) == 5 and r["losses"][-1] < r["losses"][0]
    # DDP kept the two replicas in step.
    assert ranks[0]["params"] == ranks[1]["params"]


SYNC_BN = '''
import json, os
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import TorchDevice

local_rank = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(local_rank)
dist.init_process_group("nccl")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).to(DEVICE)
result = {"rank": rank}
try:
    ddp = DDP(model)
except ValueError as exc:
    result["refused"] = str(exc)
else:
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    # ranks hold 5 and 3 of each step's 8 samples
    mine = slice(0, 5) if rank == 0 else slice(5, 8)
    for step in range(3):
        x = torch.randn(8, 3, 8, 8, generator=g)[mine].to(DEVICE)
        y = torch.randint(0, 2, (8,), generator=g)[mine].to(DEVICE)
        # this rank's share of the whole batch's mean loss, times the ranks
        # DDP averages over
        loss = torch.nn.functional.cross_entropy(ddp(x), y,
                                                 reduction="sum") * 2 / 8
        opt.zero_grad()
        loss.backward()
        opt.step()
    bn = model[1]
    result["bn_type"] = type(bn).__name__
    result["state"] = {k: v.cpu().tolist() for k, v in model.state_dict().items()}
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"rank{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.destroy_process_group()
'''


def _sync_bn_reference() -> dict:
    """The same three steps in one process with BatchNorm over each whole
    batch of eight: what SyncBatchNorm over two ranks computes on CUDA."""
    with TorchDevice.cpu_override():    # on the host in every mode
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(0)
        for step in range(3):
            x = torch.randn(8, 3, 8, 8, generator=g)
            y = torch.randint(0, 2, (8,), generator=g)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {k: v.tolist() for k, v in model.state_dict().items()}


def _assert_state_close(state: dict, reference: dict) -> None:
    """A state dict a rank wrote (lists) equals the one-process reference
    within 1e-6, name by name."""
    assert state.keys() == reference.keys()
    for name, want in reference.items():
        got = torch.tensor(state[name], dtype=torch.float64)
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float64),
                              atol=1e-6), name


def test_sync_batchnorm_of_a_cuda_model_trains_as_one_batch(tmp_path):
    """torch's SyncBatchNorm computes only on GPUs: DDP refuses a module on
    the CPU, and its kernels have no CPU version.  A CUDA program's model
    (on "cuda", so on the host here) trains as CUDA trains it: each step
    normalises with the statistics of the whole batch across the ranks
    (five samples on one, three on the other), which one process with
    BatchNorm over the eight computes too."""
    ranks = _ranks(tmp_path, "sync_bn.py",
                   SYNC_BN.replace("DEVICE", "local_rank"))
    reference = _sync_bn_reference()
    for r in ranks:
        assert r["bn_type"] == "SyncBatchNorm"
        _assert_state_close(r["state"], reference)


def test_sync_batchnorm_on_the_host_is_refused_as_natively(tmp_path):
    """A model the program put on the host itself keeps torch's refusal."""
    ranks = _ranks(tmp_path, "sync_bn_host.py",
                   SYNC_BN.replace("DEVICE", '"cpu"'))
    for r in ranks:
        assert "SyncBatchNorm layers only work with GPU modules" \
            in r["refused"]


BF16_HOOK = '''
import json, os
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP
import TorchDevice

dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(rank)
torch.manual_seed(0)
ddp = DDP(torch.nn.Linear(4, 2).to(DEVICE), device_ids=[rank])
result = {"rank": rank}
try:
    ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
except TypeError as exc:
    result["refused"] = str(exc)
else:
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    ddp(x[rank::2].to(DEVICE)).sum().backward()
    result["grad"] = ddp.module.weight.grad.tolist()
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"rank{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.destroy_process_group()
'''


def test_ddp_bf16_compression_hook_of_a_cuda_model(tmp_path):
    """DDP's bfloat16 compression hook: torch refuses it without CUDA 11+
    and NCCL 2.10 ("BF16 all reduce communication hook required ..."), and
    "nccl" runs on gloo here.  For a model the program put on "cuda" it
    runs: each rank's gradient in bfloat16, halved, summed over the ranks in
    bfloat16, as NCCL sums it (docs/compile-checkpoints-distributed.md)."""
    ranks = _ranks(tmp_path, "bf16_hook.py",
                   BF16_HOOK.replace("DEVICE", "rank"))
    want = _bf16_hook_gradient()
    for r in ranks:
        assert torch.equal(torch.tensor(r["grad"]), want)


def _bf16_hook_gradient() -> torch.Tensor:
    """BF16_HOOK's weight gradient under the hook, computed here."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    # d(sum of outputs)/dW: each row of W gets the sum of the rank's inputs
    local = [x[r::2].sum(0).expand(2, 4) for r in range(2)]
    halves = [(g.to(torch.bfloat16) / 2) for g in local]
    want = (halves[0] + halves[1]).float()
    exact = (local[0] + local[1]) / 2
    assert not torch.equal(want, exact)   # the compression shows
    return want


def test_ddp_bf16_compression_hook_on_the_host_is_refused(tmp_path):
    """A model the program put on the host keeps torch's own answer: the
    refusal on a CPU build of torch; a CUDA build (NCCL linked in, no GPU
    needed) accepts the hook, and its sum runs on gloo."""
    ranks = _ranks(tmp_path, "bf16_hook_host.py",
                   BF16_HOOK.replace("DEVICE", '"cpu"')
                   .replace(", device_ids=[rank]", ""))
    if torch.version.cuda is None and torch.version.hip is None:
        for r in ranks:
            assert "BF16 all reduce communication hook required" in \
                r["refused"]
        return
    want = _bf16_hook_gradient()
    for r in ranks:
        assert torch.equal(torch.tensor(r["grad"]), want)


FSDP_PROGRAM = '''
import functools, json, os
import torch
import torch.distributed as dist
from torch.distributed.fsdp import (CPUOffload, FullStateDictConfig,
                                    FullyShardedDataParallel as FSDP,
                                    StateDictType)
from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy
import TorchDevice

local_rank = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(local_rank)
dist.init_process_group("nccl")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.GELU(),
                            torch.nn.LayerNorm(32), torch.nn.Linear(32, 3))
result = {"rank": rank}
try:
    model = FSDP(model, device_id=DEVICE_ID, sync_module_states=True,
                 cpu_offload=CPUOffload(offload_params=OFFLOAD),
                 use_orig_params=True,
                 auto_wrap_policy=functools.partial(
                     size_based_auto_wrap_policy, min_num_params=100))
except (ValueError, RuntimeError) as exc:
    result["refused"] = str(exc)
else:
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x = torch.randn(8, 6, generator=g).chunk(2)[rank].cuda()
        y = torch.randn(8, 3, generator=g).chunk(2)[rank].cuda()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        state = model.state_dict()
    result["state"] = {k: v.tolist() for k, v in state.items()}
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"rank{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.destroy_process_group()
'''


def _fsdp_reference() -> dict:
    """The same three steps in one process over each whole batch: what FSDP
    over two ranks, averaging their gradients, computes on CUDA."""
    with TorchDevice.cpu_override():    # on the host in every mode
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(6, 32), torch.nn.GELU(), torch.nn.LayerNorm(32),
            torch.nn.Linear(32, 3))
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(0)
        for step in range(3):
            x = torch.randn(8, 6, generator=g)
            y = torch.randn(8, 3, generator=g)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return {k: v.tolist() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("offload", [False, True])
def test_fsdp_of_a_cuda_module_trains_as_one_process(tmp_path, offload):
    """FSDP (FullyShardedDataParallel) with device_id="cuda:<rank>" and
    sync_module_states=True refused the module ("requires them to be on
    GPU": "cuda" is the host here); with CPUOffload(offload_params=True)
    it stopped (the host's stream has no synchronize) or, with the host
    both the compute device and the offload target, summed each step's
    gradient into the next.  Both ranks now end with the weights one
    process computes over the whole batch (docs/compile-checkpoints-
    distributed.md, "FSDP")."""
    program = FSDP_PROGRAM.replace("DEVICE_ID", "torch.device('cuda', "
                                   "local_rank)").replace("OFFLOAD",
                                                          str(offload))
    ranks = _ranks(tmp_path, "fsdp.py", program)
    reference = _fsdp_reference()
    # rank0_only: the full state is on rank 0
    _assert_state_close(ranks[0]["state"], reference)


def test_fsdp_of_a_module_left_on_the_host_is_refused(tmp_path):
    """A module the program left on the host, with no device_id, is
    refused, as on CUDA.  The words are torch's for the machine: CUDA's
    where torch sees an accelerator (the simulated one), and on a machine
    without one "FSDP needs a non-CPU accelerator device"."""
    program = FSDP_PROGRAM.replace("DEVICE_ID", "None").replace("OFFLOAD",
                                                                "False")
    words = ("requires them to be on GPU" if ACCEL is not None
             else "FSDP needs a non-CPU accelerator device")
    for r in _ranks(tmp_path, "fsdp_host.py", program):
        assert words in r["refused"]


FSDP_TUTORIAL = '''
import json, os
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
import TorchDevice

dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(rank)
torch.manual_seed(0)
model = FSDP(torch.nn.Sequential(
    torch.nn.Linear(6, 32), torch.nn.GELU(), torch.nn.LayerNorm(32),
    torch.nn.Linear(32, 3)).to(rank))
opt = torch.optim.AdamW(model.parameters(), lr=0.01)
g = torch.Generator().manual_seed(0)
for step in range(3):
    x = torch.randn(8, 6, generator=g).chunk(2)[rank].to(rank)
    y = torch.randn(8, 3, generator=g).chunk(2)[rank].to(rank)
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
with FSDP.summon_full_params(model):
    state = {k: v.tolist() for k, v in model.state_dict().items()}
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"rank{rank}.json"),
          "w") as fh:
    json.dump({"rank": rank, "state": state}, fh)
dist.destroy_process_group()
'''


def test_fsdp_of_a_module_moved_without_device_id(tmp_path):
    """torch's FSDP tutorial: `FSDP(model.to(rank))`, no device_id.  FSDP
    took the host for a machine without an accelerator ("FSDP needs a
    non-CPU accelerator device"); the module is where the program put it,
    and both ranks train as one process over the whole batch."""
    ranks = _ranks(tmp_path, "fsdp_tutorial.py", FSDP_TUTORIAL)
    reference = _fsdp_reference()
    for r in ranks:
        _assert_state_close(r["state"], reference)


SPAWNED = '''
import json, os, sys
import torch
import torch.multiprocessing as mp
import TorchDevice

def worker(rank, out):
    torch.cuda.set_device(rank)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"rank": rank, "count": torch.cuda.device_count(),
                   "current": torch.cuda.current_device(),
                   "device": str(torch.zeros(1, device=f"cuda:{rank}").device)},
                  fh)

if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=torch.cuda.device_count())
'''


def test_mp_spawn_starts_one_process_per_configured_device(tmp_path):
    path = tmp_path / "spawned.py"
    path.write_text(SPAWNED)
    proc = run_python("", str(tmp_path), script=path, timeout=180,
                      env={"TORCHDEVICE_DEVICE_COUNT": "2",
                           "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(_results(tmp_path), key=lambda r: r["rank"])
    assert [(r["rank"], r["count"], r["current"], r["device"])
            for r in ranks] == [(0, 2, 0, str(TARGET)), (1, 2, 1, str(TARGET))]


MESH = '''
import os, sys
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1],
                  RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
import TorchDevice
mesh = init_device_mesh("cuda", (1,))
t = torch.ones(2, device="cuda")
dist.all_reduce(t)
print(dist.get_backend(), t.tolist())
dist.destroy_process_group()
'''


def test_device_mesh_without_a_backend_gets_gloo():
    """init_device_mesh("cuda") starts the default group with no backend,
    which on CUDA means NCCL: here it is gloo, named as such, also where
    torch would ask an accelerator that "cuda" does not land on
    (TORCHDEVICE_TARGET=cpu beside MPS) and find no backend for it."""
    proc = run_python(MESH, str(_free_port()), env=RANKS_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " ".join(_program_lines(proc.stdout)).split() == [
        "gloo", "[1.0,", "1.0]"]


NEW_GROUPS = '''
import os, sys
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1],
                  RANK="0", WORLD_SIZE="1")
import torch.distributed as dist
import TorchDevice
TorchDevice.configure(report=True)
dist.init_process_group("nccl")
by_keyword = dist.new_group([0], backend="nccl")
by_position = dist.new_group([0], None, "nccl")
print(dist.get_backend(by_keyword), dist.get_backend(by_position))
print(sorted((r["line"], r["api"], r["from"], r["to"])
             for r in TorchDevice.report()
             if r["api"].startswith("torch.distributed")))
dist.destroy_process_group()
'''


def test_new_group_backends_are_replaced_and_reported():
    proc = run_python(NEW_GROUPS, str(_free_port()), env=RANKS_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    backends, rows = _program_lines(proc.stdout)[:2]
    assert backends.split() == ["gloo", "gloo"]
    assert rows == str([
        (8, "torch.distributed.init_process_group", "nccl", "gloo"),
        (9, "torch.distributed.new_group", "nccl", "gloo"),
        (10, "torch.distributed.new_group", "nccl", "gloo")])


def test_barrier_calls_a_torch_without_its_timeout_parameter(monkeypatch):
    # torch before 2.12: barrier(group, async_op, device_ids), no timeout.
    # dist.barrier(device_ids=[rank]) stopped with "barrier() takes from 0
    # to 3 positional arguments but 4 were given".
    calls = []

    def barrier(group=None, async_op=False, device_ids=None):
        calls.append((group, async_op, device_ids))

    monkeypatch.setattr(_distributed, "_native", lambda: False)
    ours = _distributed._barrier_builder(barrier)
    ours(device_ids=[0])
    ours(None, True)
    assert calls == [(_distributed.dist.GroupMember.WORLD, False, None),
                     (None, True, None)]
    with pytest.raises(TypeError):
        ours(timeout=5)


PREMUL_SUM = '''
import json, os
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
import TorchDevice

dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(rank)
premul = dist.ReduceOp.PREMUL_SUM
result = {"rank": rank}
t = torch.arange(4., device="cuda") + rank
dist.all_reduce(t, op=premul(0.5))
result["all_reduce"] = t.tolist()
inp = torch.arange(4., device="cuda") + rank
out = torch.empty(2, device="cuda")
dist.reduce_scatter_tensor(out, inp, op=premul(torch.tensor(0.25)))
result["reduce_scatter_tensor"] = out.tolist()
result["input kept"] = inp.tolist()
parts = list((torch.arange(4., device="cuda") + rank).chunk(2))
dist.reduce_scatter(out, parts, premul(2.0))
result["reduce_scatter"] = out.tolist()
t = torch.arange(4., device="cuda") + rank
dist.reduce(t, 0, op=premul(0.5))
result["reduce"] = t.tolist()
pair = [torch.ones(2, device="cuda") * (rank + 1), torch.full((3,), 4., device="cuda")]
dist.all_reduce_coalesced(pair, op=premul(0.25))
result["all_reduce_coalesced"] = [p.tolist() for p in pair]
mine = dist.new_group(backend="gloo")
try:
    dist.all_reduce(torch.ones(2), op=premul(0.5), group=mine)
    result["gloo chosen"] = "reduced"
except Exception as exc:
    result["gloo chosen"] = str(exc)

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).cuda()

def train(net, scale):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(3):
        torch.manual_seed(10 + step)       # every rank the same batch
        (net(torch.randn(5, 6, device="cuda")).pow(2).mean()
         * scale).backward()
        opt.step()
        opt.zero_grad()
    return [p.full_tensor() if hasattr(p, "full_tensor") else p
            for p in net.parameters()]

# FSDP2 reduces with PREMUL_SUM(1/3): the ranks' gradients summed, over 3
whole = train(model(), world / 3.0)
net = model()
fully_shard(net, mesh=init_device_mesh("cuda", (world,)))
net.set_gradient_divide_factor(3.0)
result["FSDP2 divide factor"] = max(
    (a - b).abs().max().item() for a, b in zip(train(net, 1.0), whole))
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.destroy_process_group()
'''


@pytest.mark.skipif(HAS_CUDA, reason="NCCL has PREMUL_SUM itself")
def test_premul_sum_of_nccl_runs_on_the_gloo_given_for_it(tmp_path):
    # gloo refused NCCL's PREMUL_SUM ("Cannot use ReduceOp.PREMUL_SUM with
    # Gloo"), which FSDP2 picks for a gradient divide factor other than
    # the group's size.
    for r in _ranks(tmp_path, "premul.py", PREMUL_SUM):
        rank = r["rank"]
        assert r["all_reduce"] == [0.5, 1.5, 2.5, 3.5]
        assert r["reduce_scatter_tensor"] == [[0.25, 0.75],
                                              [1.25, 1.75]][rank]
        assert r["input kept"] == [0. + rank, 1. + rank, 2. + rank,
                                   3. + rank]
        assert r["reduce_scatter"] == [[2., 6.], [10., 14.]][rank]
        if rank == 0:
            assert r["reduce"] == [0.5, 1.5, 2.5, 3.5]
        assert r["all_reduce_coalesced"] == [[0.75, 0.75], [2., 2., 2.]]
        assert "PREMUL_SUM" in r["gloo chosen"]
        assert r["FSDP2 divide factor"] < 1e-6


ASYNC_REDUCE_SCATTER = '''
import json, os, warnings
import torch
import torch.distributed as dist
import TorchDevice

warnings.simplefilter("ignore")      # reduce_scatter_tensor is deprecated
dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(rank)
result = {"rank": rank}
inp = torch.arange(4., device="cuda") + rank
out = torch.empty(2, device="cuda")
work = dist.reduce_scatter_tensor(out, inp, op=dist.ReduceOp.AVG,
                                  async_op=True)
doubled = work.get_future().then(lambda fut: fut.value()[0] * 2)
result["tensor"] = [t.tolist() for t in work.get_future().wait()]
result["then"] = doubled.wait().tolist()
result["same output"] = work.get_future().value()[0] is out
result["completed"] = work.is_completed()
work2 = dist.reduce_scatter_tensor(out, inp, async_op=True)
work2.wait()
result["completed after wait"] = work2.is_completed()
parts = [torch.full((2,), float(rank + i), device="cuda") for i in range(world)]
out2 = torch.empty(2, device="cuda")
futures = [dist.reduce_scatter(out2, parts, async_op=True).get_future()]
if hasattr(dist, "reduce_scatter_single"):
    out3 = torch.empty(2, device="cuda")
    futures.append(dist.reduce_scatter_single(out3, inp, async_op=True)
                   .get_future())
torch.futures.wait_all(futures)
result["list"] = out2.tolist()
result["single"] = out3.tolist() if len(futures) > 1 else None
work = dist.reduce_scatter_tensor(out, inp, async_op=True)
work.wait()
result["waited"] = out.tolist()
mine = dist.new_group(backend="gloo")
try:
    dist.reduce_scatter_tensor(out, inp, group=mine,
                               async_op=True).get_future().wait()
    result["gloo chosen"] = "future"
except Exception as exc:
    result["gloo chosen"] = str(exc)
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.barrier()
dist.destroy_process_group()
'''


@pytest.mark.skipif(HAS_CUDA, reason="NCCL's works have futures themselves")
def test_async_reduce_scatter_has_a_future_on_the_gloo_given_for_nccl(
        tmp_path):
    # gloo's reduce-scatter work raised "Work::getFuture not implemented",
    # where NCCL's future completes with the output: nanochat's
    # distributed Muon/AdamW optimizer stopped at its first step.
    for r in _ranks(tmp_path, "async_rs.py", ASYNC_REDUCE_SCATTER):
        rank = r["rank"]
        assert r["tensor"] == [[[0.5, 1.5], [2.5, 3.5]][rank]]
        assert r["then"] == [[1., 3.], [5., 7.]][rank]
        assert r["same output"] and r["completed"]
        assert r["completed after wait"]
        assert r["list"] == [[1., 1.], [3., 3.]][rank]
        if r["single"] is not None:
            assert r["single"] == [[1., 3.], [5., 7.]][rank]
        assert r["waited"] == [[1., 3.], [5., 7.]][rank]
        assert "getFuture not implemented" in r["gloo chosen"]


STACKED_PARTS = '''
import json, os, warnings
import torch
import torch.distributed as dist
import TorchDevice

warnings.simplefilter("ignore")      # the _base aliases are deprecated
TorchDevice.configure(report=True)
dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(rank)
result = {"rank": rank}
stacked = (torch.arange(world * 3., device="cuda") + rank).reshape(world, 3)
out = torch.zeros(3, device="cuda")
dist.reduce_scatter_tensor(out, stacked)
result["reduce_scatter_tensor"] = out.tolist()
dist._reduce_scatter_base(out, stacked * 2)
result["_reduce_scatter_base"] = out.tolist()
out2 = torch.zeros(2, 2, device="cuda")
work = dist.reduce_scatter_tensor(out2, torch.ones(world, 2, 2, device="cuda")
                                  * (rank + 1), async_op=True)
result["async"] = [t.tolist() for t in work.get_future().wait()]
scalar = torch.zeros((), device="cuda")
dist.reduce_scatter_tensor(scalar, torch.arange(float(world), device="cuda"))
result["scalar"] = scalar.item()
gathered = torch.zeros(world, 2, device="cuda")
dist.all_gather_into_tensor(gathered, torch.full((2,), rank + 1., device="cuda"))
result["all_gather_into_tensor"] = gathered.tolist()
gathered = torch.zeros(world, 2, 2, device="cuda")
dist._all_gather_base(gathered, torch.full((2, 2), rank + 1., device="cuda"),
                      async_op=True).wait()
result["_all_gather_base"] = gathered.tolist()
flat = torch.zeros(world * 2, device="cuda")
dist.all_gather_into_tensor(flat, torch.full((2,), rank + 1., device="cuda"))
result["concatenated"] = flat.tolist()
mine = dist.new_group(backend="gloo")
try:
    dist.reduce_scatter_tensor(out, stacked, group=mine)
    result["gloo chosen"] = "reduced"
except Exception as exc:
    result["gloo chosen"] = str(exc)
result["rows"] = sorted({key[3] for key, n in TorchDevice._tdcore.records().items()
                         if key[4] == "emulated"})
with open(os.path.join(os.environ["TD_RESULT_DIR"], f"{rank}.json"),
          "w") as fh:
    json.dump(result, fh)
dist.barrier()
dist.destroy_process_group()
'''


@pytest.mark.skipif(HAS_CUDA, reason="NCCL takes both forms itself")
def test_stacked_parts_run_on_the_gloo_given_for_nccl(tmp_path):
    # A reduce-scatter's input and an all-gather's output may hold the
    # ranks' parts stacked, (world size, *part), as torch documents and
    # NCCL takes; gloo takes only their concatenation and aborted ("Check
    # failed: outputShape[0] * worldSize == inputShape[0]"): fairscale's
    # FSDP stopped in its first backward.
    for r in _ranks(tmp_path, "stacked.py", STACKED_PARTS):
        rank = r["rank"]
        assert r["reduce_scatter_tensor"] == [[1., 3., 5.], [7., 9., 11.]][rank]
        assert r["_reduce_scatter_base"] == [[2., 6., 10.],
                                             [14., 18., 22.]][rank]
        assert r["async"] == [[[3., 3.], [3., 3.]]]
        assert r["scalar"] == [0., 2.][rank]
        assert r["all_gather_into_tensor"] == [[1., 1.], [2., 2.]]
        assert r["_all_gather_base"] == [[[1., 1.], [1., 1.]],
                                         [[2., 2.], [2., 2.]]]
        assert r["concatenated"] == [1., 1., 2., 2.]
        assert "worldSize" in r["gloo chosen"]       # gloo's own check
        assert "torch.distributed.reduce_scatter_tensor" in r["rows"]
        assert "torch.distributed.all_gather_into_tensor" in r["rows"]


# A stand-in for fairscale's FullyShardedDataParallel (fairscale is not a
# dependency): only how its state_dict() copies each full parameter before
# freeing it, and where its state_dict_device comes from (fairscale 0.4.13,
# fully_sharded_data_parallel.py), under the module name TorchDevice adapts.
FAIRSCALE_STAND_IN = '''
import torch

class FullyShardedDataParallel(torch.nn.Module):
    def __init__(self, module, compute_device=None, state_dict_device=None):
        super().__init__()
        self.module = module
        self.compute_device = compute_device or torch.device("cuda")
        self.state_dict_device = state_dict_device or self.compute_device

    def full_state_dict(self):
        out = {}
        for name, p in self.module.named_parameters():
            obj = p.detach()          # the full parameter, freed after this
            if obj.device.type != self.state_dict_device.type:
                obj = obj.to(device=self.state_dict_device)
            else:
                obj = obj.clone()
            out[name] = obj
        return out
'''

FAIRSCALE_USER = '''
import json, sys
import torch
import TorchDevice
from fairscale.nn.data_parallel.fully_sharded_data_parallel import (
    FullyShardedDataParallel as FSDP)

result = {}
for name, kwargs in (("default", {}),
                     ("cuda asked", {"state_dict_device": torch.device("cuda")}),
                     ("cpu asked", {"state_dict_device": torch.device("cpu")})):
    model = FSDP(torch.nn.Linear(3, 2).cuda(), **kwargs)
    state = model.full_state_dict()
    with torch.no_grad():
        model.module.weight.add_(1)       # training goes on
    result[name] = [not torch.equal(state["weight"].cpu(),
                                    model.module.weight.cpu()),
                    str(model.state_dict_device)]
print(json.dumps(result))
'''


def test_fairscale_fsdp_state_dict_copies_the_parameters(tmp_path):
    # fairscale's FSDP copies a full parameter with .to(state_dict_device)
    # where the tensor's device type differs from that device's, else with
    # clone(); its default state_dict_device, "cuda", reads `cuda` to it
    # and the tensor the device really used, so it took .to(), which kept
    # the tensor: the state dict held memory FSDP then freed (an unloadable
    # checkpoint, a segmentation fault in load_state_dict).
    package = tmp_path / "fairscale" / "nn" / "data_parallel"
    package.mkdir(parents=True)
    for folder in (tmp_path / "fairscale", tmp_path / "fairscale" / "nn",
                   package):
        (folder / "__init__.py").write_text("")
    (package / "fully_sharded_data_parallel.py").write_text(FAIRSCALE_STAND_IN)
    proc = run_python(FAIRSCALE_USER, env={"PYTHONPATH": os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    # mode "accelerate" sends the program's "cpu" to the device too
    assert result == {"default": [True, str(TARGET)],
                      "cuda asked": [True, str(TARGET)],
                      "cpu asked": [True, str(HOST_LANDS)]}, result
