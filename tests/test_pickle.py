"""Pickling what TorchDevice installs (docs/reliability.md).

torch's callables pickle by name: ``pickle.loads(pickle.dumps(torch.zeros))
is torch.zeros``.  Every replacement the patch table installs does the
same, by the owner and attribute name the table knows, so a
``functools.partial`` of a factory can be handed to a ``spawn`` worker
(multiprocessing pools, DataLoader workers), and a pickle made with
TorchDevice enabled loads where it is not (as torch's own callable).
"""
from __future__ import annotations

import pickle
import textwrap

import pytest
import torch

import TorchDevice
from TorchDevice import _patches
from conftest import CUDA_LANDS, HOST_LANDS, TARGET, run_python


def _entries():
    return [(owner, name) for owner, name, _o, _r in _patches.replaced()]


def _label(entry) -> str:
    owner, name = entry
    return f"{getattr(owner, '__name__', owner)}.{name}"


def test_the_table_is_not_empty():
    assert len(_entries()) > 100


@pytest.mark.parametrize("owner,name", _entries(),
                         ids=[_label(e) for e in _entries()])
def test_every_patched_callable_round_trips(owner, name):
    value = getattr(owner, name)
    if not callable(value):
        pytest.skip(f"{_label((owner, name))} is a value, not a callable")
    assert pickle.loads(pickle.dumps(value)) is value
    assert pickle.loads(pickle.dumps(value, protocol=0)) is value


def test_the_examples_of_the_issue():
    for fn in (torch.zeros, torch.randn, torch.Tensor.to, torch.Tensor.cuda,
               torch.UntypedStorage.__new__, torch.cuda.memory_allocated):
        assert pickle.loads(pickle.dumps(fn)) is fn


def test_loads_as_torch_own_where_torchdevice_is_not_enabled():
    blob = pickle.dumps([torch.zeros, torch.Tensor.to, torch.fft.rfftfreq])
    proc = run_python(f"""
        import pickle, sys, torch
        zeros, to, rfftfreq = pickle.loads({blob!r})
        assert "TorchDevice" not in sys.modules
        assert zeros is torch.zeros and to is torch.Tensor.to
        assert rfftfreq is torch.fft.rfftfreq
        print("native")
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "native" in proc.stdout


def test_tensors_come_back_from_a_worker_where_they_were(tmp_path):
    """A pool worker's tensors, made with and without a device, come back
    on the device they were on, with their place as the program saw it.
    torch cannot send tensors of devices other than the CPU and CUDA: on
    the accelerator profile this failed with '_share_fd_: only available
    on CPU' (also for tensors made without a device, which accelerate mode
    places there)."""
    script = tmp_path / "worker_tensors.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp
        import torch
        import TorchDevice
        from TorchDevice import _tdcore

        def work(scale):
            return (torch.full((3,), scale), torch.full((3,), scale, device="cuda"),
                    torch.nn.Parameter(torch.zeros(2, device="cuda")))

        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(1) as pool:
                host, acc, param = pool.apply(work, (2.0,))
            print(host.device, acc.device, host.tolist(), acc.tolist(),
                  _tdcore.on_accelerator(host), _tdcore.on_accelerator(acc),
                  type(param).__name__, param.requires_grad)
    """))
    proc = run_python(script=script, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.split(" ", 2)
    assert out[:2] == [str(HOST_LANDS), str(CUDA_LANDS)]
    rest = out[2].split()
    assert "".join(rest[:6]) == "[2.0,2.0,2.0][2.0,2.0,2.0]"
    if TARGET.type != "cpu":       # torch's own path keeps no mark
        assert rest[6:8] == ["False", "True"]
    assert rest[8:] == ["Parameter", "True"]


def test_partial_of_a_factory_runs_in_a_spawn_worker(tmp_path):
    script = tmp_path / "spawn_partial.py"
    script.write_text(textwrap.dedent("""
        import functools
        import multiprocessing as mp
        import torch
        import TorchDevice

        def main():
            make = functools.partial(torch.ones, 4, device="cuda")
            move = functools.partial(torch.Tensor.to, torch.ones(2), "cuda")
            with mp.get_context("spawn").Pool(1) as pool:
                result = pool.apply(make)
                moved = pool.apply(move)
            print(result.device.type, int(result.sum()), moved.device.type)

        if __name__ == "__main__":
            main()
    """))
    proc = run_python(script=script, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where = TorchDevice.policy()["device"]
    assert proc.stdout.split() == [where, "4", where]


def test_device_tensors_handed_to_a_spawned_process(tmp_path):
    """Arguments of a spawned process are pickled before it starts and its
    shared-memory descriptors are passed when it starts: the host copy of
    an accelerator tensor must live until then (it was freed at once:
    "bad value(s) in fds_to_keep").  A tensor changed after it was sent
    goes with its new values."""
    script = tmp_path / "spawn_args.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp
        import torch
        import TorchDevice

        def show(t, queue):
            queue.put((str(t.device), t.tolist()))

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            t = torch.ones(3, device="cuda")
            for step in range(2):
                p = ctx.Process(target=show, args=(t, queue))
                p.start()
                print(*queue.get(timeout=120))
                p.join()
                t.add_(1)
    """))
    proc = run_python(script=script, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where = str(CUDA_LANDS)
    assert proc.stdout.splitlines() == [f"{where} [1.0, 1.0, 1.0]",
                                        f"{where} [2.0, 2.0, 2.0]"]


HOGWILD = """
import torch, torch.nn as nn, torch.multiprocessing as mp
import TorchDevice

def train(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        loss = (model(torch.ones(2, 4, device="cuda")) - 3).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    model = nn.Linear(4, 1).cuda()
    model.share_memory()
    before = model.weight.detach().clone()
    p = mp.Process(target=train, args=(model,))
    p.start()
    p.join()
    print("exit", p.exitcode, "trained",
          not torch.equal(before, model.weight.detach()))
"""


def test_hogwild_training_reaches_the_parent_or_is_refused(tmp_path):
    """Hogwild training (pytorch/examples' mnist_hogwild): workers write
    into the parameters the parent put in shared memory, and the parent
    reads them after join().  On the host, as on CUDA, the writes arrive.
    Another device's memory cannot be shared between processes, and the
    copy TorchDevice sends lost them without a sign (the parent tested an
    untrained model): sending such a tensor is now refused, with how to run
    it (docs/compile-checkpoints-distributed.md)."""
    script = tmp_path / "hogwild.py"
    script.write_text(HOGWILD)
    proc = run_python(script=script, timeout=300)
    if TARGET.type == "cpu":
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == ["exit", "0", "trained", "True"]
        return
    assert proc.returncode != 0
    assert "trained" not in proc.stdout
    assert (f"a tensor on {TARGET.type} that the program put in shared "
            "memory") in proc.stderr
    assert "TORCHDEVICE_TARGET=cpu" in proc.stderr
    proc = run_python(script=script, env={"TORCHDEVICE_TARGET": "cpu"},
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["exit", "0", "trained", "True"]


def test_share_memory_is_torchs_again_after_disable(restore_config):
    entries = [e for e in _patches.replaced()
               if e[0] is torch.UntypedStorage and e[1] == "share_memory_"]
    assert len(entries) == 1
    original = entries[0][2]
    assert torch.UntypedStorage.share_memory_ is not original
    TorchDevice.disable()
    assert torch.UntypedStorage.share_memory_ is original
    assert "share_memory_" in torch.UntypedStorage.__dict__
    TorchDevice.enable()
    assert torch.UntypedStorage.share_memory_ is not original
    assert pickle.loads(pickle.dumps(torch.UntypedStorage.share_memory_)) \
        is torch.UntypedStorage.share_memory_
