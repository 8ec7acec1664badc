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
from conftest import run_python


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
    profile = TorchDevice.hardware_profile()
    assert proc.stdout.split() == [profile, "4", profile]
