"""DataLoader with pin_memory=True and workers (docs/compile-checkpoints-distributed.md)."""
from __future__ import annotations

import json
import multiprocessing

import pytest

from conftest import (CUDA_LANDS, MPS_LIKE, MPS_LIKE_DEVICE, TARGET, host,
                      run_python)

LOADER = '''
import json, os, sys, warnings
import torch
import TorchDevice
from TorchDevice import _tdcore
from torch.utils.data import DataLoader, Dataset

class CudaStyleDataset(Dataset):
    """What a CUDA script's dataset does: builds tensors with no device."""
    def __len__(self):
        return 8
    def __getitem__(self, i):
        t = torch.full((3,), float(i))
        return (t, torch.tensor(os.getpid()), str(t.device),
                _tdcore.get_cpu_override())

def main(stand_in):
    if stand_in:
        # SimulatedMPS (see conftest): the mps profile with `meta` standing
        # in for the MPS device, so "where did it land" is observable.
        from TorchDevice import _patches
        TorchDevice.disable()
        _patches.apply(mps_device=torch.device("meta"))
        _tdcore.configure("mps", "accelerate", "downcast")
    warnings.simplefilter("ignore")
    ctx = sys.argv[1]
    loader = DataLoader(CudaStyleDataset(), batch_size=4, pin_memory=True,
                        num_workers=2, multiprocessing_context=ctx)
    rows = []
    for x, pids, devices, overrides in loader:
        y = x.cuda(non_blocking=True)
        rows.append({"values": x.tolist(), "moved": str(y.device),
                     "worker_pids": sorted(set(pids.tolist())),
                     "worker_devices": sorted(set(devices)),
                     "worker_override": all(overrides)})
    main_device = str(torch.zeros(1).device)
    print("RESULT" + json.dumps({"rows": rows, "main_pid": os.getpid(),
                                 "main_device": main_device,
                                 "main_override": _tdcore.get_cpu_override()}))

if __name__ == "__main__":
    main(STAND_IN)
'''


def _run(tmp_path, ctx: str, stand_in: bool) -> dict:
    script = tmp_path / "loader.py"
    script.write_text(LOADER.replace("STAND_IN", repr(stand_in)))
    proc = run_python(None, ctx, script=script, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    return json.loads(line[0][len("RESULT"):])


CONTEXTS = [c for c in ("fork", "spawn")
            if c in multiprocessing.get_all_start_methods()]


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_workers_pinning_and_non_blocking_cuda(tmp_path, ctx):
    out = _run(tmp_path, ctx, stand_in=False)
    rows = out["rows"]
    assert [r["values"] for r in rows] == [
        [[float(i)] * 3 for i in range(4)],
        [[float(i)] * 3 for i in range(4, 8)]]
    for r in rows:
        assert r["moved"] == str(CUDA_LANDS)  # where "cuda" lands
        assert out["main_pid"] not in r["worker_pids"]
        assert r["worker_devices"] == ["cpu"]
        assert r["worker_override"] is True
    assert out["main_override"] is False      # only the workers


def test_workers_stay_on_cpu_on_an_accelerator_profile(tmp_path):
    """In the main process a device-less factory lands on the accelerator
    (SimulatedMPS's meta stands in for it in the CPU run; make test-accel
    has a real one); in the workers it stays on the CPU, and the batches
    reach the main process as host tensors."""
    out = _run(tmp_path, CONTEXTS[0], stand_in=not MPS_LIKE)
    assert out["main_device"] == MPS_LIKE_DEVICE
    for r in out["rows"]:
        assert r["worker_devices"] == ["cpu"]
        assert r["worker_override"] is True
        assert r["moved"] == MPS_LIKE_DEVICE


PINNING = '''
import torch
from torch.utils.data import DataLoader, TensorDataset
assert torch.cuda.is_available()          # what the program was told
loader = DataLoader(TensorDataset(torch.arange(8.)), batch_size=4,
                    pin_memory=True)
for (batch,) in loader:
    assert not batch.is_pinned()          # nothing is pinned on the CPU ...
    assert not batch.pin_memory().is_pinned()   # ... at any level
    batch.cuda(non_blocking=True)
print("done")
'''


def test_pin_memory_on_the_cpu_profile_warns_nothing(tmp_path):
    """A program told that CUDA is available gets no "no accelerator is
    found" warning from DataLoader(pin_memory=True); pinning is the identity
    everywhere on that profile.  -W error turns any warning into a crash."""
    import TorchDevice
    if TorchDevice.hardware_profile() != "cpu":
        pytest.skip("pinning is real where there is an accelerator")
    script = tmp_path / "pinning.py"
    script.write_text(PINNING)
    proc = run_python("import sys, runpy; sys.argv = ['TorchDevice', 'run', "
                      f"{str(script)!r}]; "
                      "runpy.run_module('TorchDevice', run_name='__main__')",
                      env={"PYTHONWARNINGS": "error::UserWarning"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "done"
    assert "pin_memory" not in proc.stderr
    # The filter goes with TorchDevice: disabled, torch's warning is back.
    proc = run_python("""
        import warnings
        import torch, TorchDevice
        from torch.utils.data import DataLoader
        TorchDevice.disable()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            list(DataLoader([1, 2], pin_memory=True))
        print(any("pin_memory" in str(w.message) for w in caught))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "True"


ACCEL_PINNING = '''
import torch
from torch.utils.data import DataLoader, TensorDataset
loader = DataLoader(TensorDataset(torch.arange(8.)), batch_size=4,
                    pin_memory=True)
for (batch,) in loader:
    print(batch.is_pinned(), torch.accelerator.is_available())
    break
'''


def test_pin_memory_on_an_accelerator_pins_as_natively(tmp_path):
    """Where an accelerator is present, torch's DataLoader asks
    torch.accelerator whether to pin, and pins natively.  It was given
    CUDA's answer (none here), so the program's batches were not pinned and
    torch warned that "no accelerator is found".  In the default mode: in
    mode "accelerate" batches are handed out on the accelerator itself."""
    if TARGET.type == "cpu":
        pytest.skip("no accelerator in this run")
    script = tmp_path / "pinning.py"
    script.write_text(ACCEL_PINNING)
    native = run_python(script=script)
    assert native.returncode == 0, native.stderr[-3000:]
    proc = run_python("import sys, runpy; sys.argv = ['TorchDevice', 'run', "
                      f"{str(script)!r}]; "
                      "runpy.run_module('TorchDevice', run_name='__main__')",
                      env={"PYTHONWARNINGS": "error::UserWarning",
                           "TORCHDEVICE_MODE": "cpu-stays-cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == native.stdout.split() == ["True", "True"]


def test_a_generator_without_device_is_the_hosts_as_on_cuda(simulated_mps):
    """On CUDA `torch.Generator()` is a host generator: torch's samplers
    (DataLoader shuffling, random_split) require one, and a device-less draw
    from it is a host tensor with the host's numbers.  Where accelerate mode
    sends device-less tensors to the accelerator, the generator stays on the
    host and a draw from it is drawn there (the host's numbers) and then
    sent where the policy sends the call (docs/policy.md)."""
    import torch
    from torch.utils.data import DataLoader, random_split
    import TorchDevice
    assert str(torch.zeros(1).device) == str(simulated_mps)   # promoted
    g = torch.Generator().manual_seed(3)
    assert g.device.type == "cpu"
    assert torch.Generator(device="cpu").device.type == "cpu"
    (order,) = DataLoader(range(8), batch_size=8, shuffle=True,
                          generator=torch.Generator().manual_seed(3))
    halves = random_split(range(8), [4, 4],
                          generator=torch.Generator().manual_seed(3))
    draw = torch.randn(4, generator=torch.Generator().manual_seed(5))
    host_draw = torch.randn(4, device="cpu",
                            generator=torch.Generator().manual_seed(5))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    with TorchDevice.cpu_override():
        (ref_order,) = DataLoader(range(8), batch_size=8, shuffle=True,
                                  generator=torch.Generator().manual_seed(3))
        ref_halves = random_split(range(8), [4, 4],
                                  generator=torch.Generator().manual_seed(3))
        ref_draw = torch.randn(4, generator=torch.Generator().manual_seed(5))
        ref_perm = torch.randperm(8,
                                  generator=torch.Generator().manual_seed(3))
    assert order.tolist() == ref_order.tolist()
    assert [list(h) for h in halves] == [list(h) for h in ref_halves]
    for got, ref in ((draw, ref_draw), (host_draw, ref_draw),
                     (perm, ref_perm)):
        assert str(got.device) == str(simulated_mps)
        if got.device.type != "meta":            # the stand-in holds no data
            assert torch.equal(host(got), ref)
