"""The failure classes benchmarks/policy_matrix.py showed, on the simulated
accelerator with MPS's capability record, in both modes (docs/policy.md,
"Real programs under each mode").

Each test runs a small program in a fresh process the way a user runs one
(`python -m TorchDevice run`), with the simulated accelerator loaded before
TorchDevice looks for hardware (tests/simaccel/README.md).  Skipped, with
the reason, where the simulated accelerator is not built (`make
simaccel`).
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from conftest import ROOT, run_python, settings_free_env

# Every program here runs with the environment the test gives it.
pytestmark = pytest.mark.own_machine

MODES = ("accelerate", "cpu-stays-cpu")
ACCEL_ENV = {"SIMACCEL_AUTOLOAD": "1", "SIMACCEL_MPS_RULES": "1",
             "TORCHDEVICE_CAPABILITIES": "mps"}


@functools.lru_cache(maxsize=1)
def simaccel_missing() -> str:
    """Why the simulated accelerator cannot run here, or ""."""
    proc = run_python("import torch; "
                      "print(torch.accelerator.current_accelerator())",
                      env=ACCEL_ENV, timeout=120)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1][:200]
    if "simaccel" not in proc.stdout:
        return ("the simulated accelerator's start-up hook is not installed "
                "(make simaccel)")
    return ""


@pytest.fixture(autouse=True)
def needs_simaccel():
    why = simaccel_missing()
    if why:
        pytest.skip(f"simulated accelerator unavailable: {why}")


def launch(tmp_path: Path, code: str, mode: str, *options: str,
           native: bool = False) -> subprocess.CompletedProcess:
    """Runs `code` as a script: with the launcher on the simulated
    accelerator in `mode`, or (`native`) with plain Python, no accelerator,
    no TorchDevice."""
    return run_script(_write(tmp_path, "prog.py", code), mode, *options,
                      native=native, cwd=tmp_path)


def relaunch_on_the_cpu(tmp_path: Path) -> subprocess.CompletedProcess:
    """The script launch() wrote, with the launcher on this machine's CPU
    (no simulated accelerator: a device with float64)."""
    return subprocess.run(
        [sys.executable, "-m", "TorchDevice", "run",
         str(tmp_path / "prog.py")],
        capture_output=True, text=True, env=_accel_env(None),
        cwd=str(tmp_path), timeout=300)


def run_script(script: Path, mode: str, *options: str, native: bool = False,
               cwd: Path = ROOT, args: Tuple[str, ...] = (),
               path: Tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`path`: folders put first on the script's PYTHONPATH."""
    env = _accel_env(None if native else mode)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (*path, env.get("PYTHONPATH")) if p)
    if native:
        cmd = [sys.executable, str(script), *args]
    else:
        cmd = [sys.executable, "-m", "TorchDevice", "run", *options,
               str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=str(cwd), timeout=300)


def _accel_env(mode: Optional[str]) -> Dict[str, str]:
    """This run's environment without TorchDevice's and the simulated
    accelerator's settings; with `mode`, the simulated accelerator (MPS's
    record) in that mode."""
    env = settings_free_env()
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONWARNINGS="ignore")
    if mode is not None:
        env.update(ACCEL_ENV, TORCHDEVICE_MODE=mode)
    return env


# ---- host generators --------------------------------------------------------

GENERATOR_PROGRAM = """
import torch
from torch.utils.data import DataLoader
g = torch.Generator().manual_seed(0)
order = [b.tolist() for b in DataLoader(list(range(8)), batch_size=4,
                                        shuffle=True, generator=g)]
print("order", order)
g = torch.Generator().manual_seed(1)
x = torch.randn(4, generator=g)
print("drawn", x.tolist())
print("randperm", torch.randperm(6, generator=g).tolist())
print("generator", g.device.type)
print("device", x.device.type)
"""


@pytest.mark.parametrize("mode", MODES)
def test_host_generator_shuffles_and_draws_as_natively(tmp_path, mode):
    """`torch.Generator()` is a host generator in both modes: torch's
    DataLoader shuffling accepts no other (accelerate mode used to make it
    an accelerator generator: "Expected a 'cpu' device type for generator
    but found 'simaccel'").  A factory drawing from it draws the native
    numbers, and lands where the policy sends the call."""
    native = launch(tmp_path, GENERATOR_PROGRAM, mode, native=True)
    assert native.returncode == 0, native.stderr
    got = launch(tmp_path, GENERATOR_PROGRAM, mode)
    assert got.returncode == 0, got.stderr[-3000:]

    def lines(out, *keys):
        return [ln for ln in out.splitlines() if ln.split(" ")[0] in keys]
    keys = ("order", "drawn", "randperm", "generator")
    assert lines(got.stdout, *keys) == lines(native.stdout, *keys)
    where = "simaccel" if mode == "accelerate" else "cpu"
    assert f"device {where}" in got.stdout


DEFAULT_DEVICE_GENERATOR = """
import torch
from torch.utils.data import DataLoader, RandomSampler
g = torch.Generator(device=torch.get_default_device()).manual_seed(11)
print("generator", g.device.type)
print("order", list(RandomSampler(range(12), generator=g)))
(batch,) = DataLoader(range(12), batch_size=12, sampler=RandomSampler(
    range(12), generator=g))
print("batch", batch.tolist())
print("randperm", torch.randperm(12, generator=g).tolist())
"""


def test_torchs_sampler_draws_from_a_generator_on_the_accelerator(tmp_path):
    """accelerate's seedable sampler (HuggingFace's Trainer) makes its
    generator on torch.get_default_device(), the accelerator in mode
    "accelerate", and torch's sampler draws from it on the host: torch
    refused ("Expected a 'cpu' device type for generator but found
    'simaccel'").  The numbers are drawn from it, where it is, and are the
    native ones (the device's generator is the host's algorithm)."""
    native = launch(tmp_path, DEFAULT_DEVICE_GENERATOR, "accelerate",
                    native=True)
    assert native.returncode == 0, native.stderr
    got = launch(tmp_path, DEFAULT_DEVICE_GENERATOR, "accelerate")
    assert got.returncode == 0, got.stderr[-3000:]
    assert "generator simaccel" in got.stdout
    rest = [ln for ln in got.stdout.splitlines()
            if not ln.startswith("generator")]
    assert rest == [ln for ln in native.stdout.splitlines()
                    if not ln.startswith("generator")]


PACKED_SEQUENCES = """
import torch
from torch.nn.utils.rnn import (pack_padded_sequence, pack_sequence,
                                pad_packed_sequence)
torch.manual_seed(0)
dev = "cuda" if torch.cuda.is_available() else "cpu"
rnn = torch.nn.LSTM(4, 8, batch_first=True).to(dev)
x = torch.randn(3, 5, 4).to(dev)
for lengths in ([5, 3, 2], torch.tensor([5, 3, 2]), torch.tensor([3, 5, 2])):
    packed = pack_padded_sequence(x, lengths, batch_first=True,
                                  enforce_sorted=False)
    out, _ = rnn(packed)
    padded, lens = pad_packed_sequence(out, batch_first=True)
    print("padded", [round(v, 5) for v in padded.sum(dim=(1, 2)).tolist()],
          lens.tolist(), lens.device.type)
out, _ = rnn(pack_sequence([x[0], x[1, :3], x[2, :2]]))
print("pack_sequence", round(out.data.sum().item(), 5))
from torch.utils.data import DataLoader
pairs = list(zip(x.cpu(), torch.tensor([5, 3, 2])))
for xb, lb in DataLoader(pairs, batch_size=3):
    out, _ = rnn(pack_padded_sequence(xb.to(dev), lb, batch_first=True))
    print("loader", round(out.data.sum().item(), 5))
"""

DEVICE_LENGTHS = """
import torch
from torch.nn.utils.rnn import pack_padded_sequence
x = torch.randn(3, 5, 4, device="cuda")
for lengths in (torch.tensor([5, 3, 2], device="cuda"),
                torch.tensor([5, 3, 2]).cuda()):
    try:
        pack_padded_sequence(x, lengths, batch_first=True)
        print("accepted")
    except RuntimeError as exc:
        print("refused", "1D CPU int64" in str(exc))
"""


@pytest.mark.parametrize("mode", ["accelerate", "cpu-stays-cpu"])
def test_packed_sequences_keep_their_lengths_on_the_host(tmp_path, mode):
    """torch.nn.utils.rnn makes the lengths of a packed sequence on the host
    (`torch.as_tensor(lengths, device="cpu")`, and device-less in
    pack_sequence), as its kernels require: torch's own host-side code, kept
    there in mode "accelerate" too (it went to the accelerator: "'lengths'
    argument should be a 1D CPU int64 tensor").  Lengths the program made
    for the host (a device-less tensor, a DataLoader batch), which mode
    "accelerate" puts on the accelerator, are handed to torch on the host.
    The numbers are the native run's, and the lengths come back on the
    host, as on CUDA."""
    native = launch(tmp_path, PACKED_SEQUENCES, mode, native=True)
    assert native.returncode == 0, native.stderr
    got = launch(tmp_path, PACKED_SEQUENCES, mode)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout == native.stdout
    # Lengths the program put on the accelerator: refused, as on CUDA.
    got = launch(tmp_path, DEVICE_LENGTHS, mode)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.split("\n")[:2] == ["refused True"] * 2


PACKED_SEQUENCE_MOVES = """
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
torch.manual_seed(0)
rnn = torch.nn.GRU(4, 3, batch_first=True)
x = torch.randn(3, 5, 4)
packed = pack_padded_sequence(x, [5, 3, 2], batch_first=True)
for name, moved in (("cpu", packed.cpu()), ("to", packed.to("cpu")),
                    ("to_kw", packed.to(device="cpu"))):
    out, _ = rnn(moved)
    padded, lens = pad_packed_sequence(out, batch_first=True)
    print(name, moved is packed, x.cpu() is x,
          [round(v, 5) for v in padded.sum(dim=(1, 2)).tolist()],
          lens.tolist())
"""


def test_packed_sequence_moves_follow_the_programs_rule(tmp_path):
    """A PackedSequence's .cpu() and .to("cpu") build their "cpu" request in
    torch.nn.utils.rnn; only the two functions there that keep lengths on
    the host are torch's own host-side code, so in mode "accelerate" the
    packed sequence goes where the program's x.cpu() goes (it stayed on the
    host, and the model on the accelerator refused it: "Expected all tensors
    to be on the same device").  docs/policy.md, failure classes."""
    native = launch(tmp_path, PACKED_SEQUENCE_MOVES, "accelerate",
                    native=True)
    assert native.returncode == 0, native.stderr
    got = launch(tmp_path, PACKED_SEQUENCE_MOVES, "accelerate")
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout == native.stdout


def test_device_generator_still_follows_the_request(tmp_path):
    got = launch(tmp_path, """
        import torch
        print(torch.Generator(device="cuda").device.type)
        print(torch.Generator("cuda").device.type)
    """, "accelerate")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["simaccel", "simaccel"]


@pytest.mark.slow
def test_dataloader_program_with_workers_and_pinning_runs(tmp_path):
    """benchmarks/programs/dataloader_workers.py (two workers, pinned
    memory, a seeded shuffling generator) in the default mode."""
    proc = run_script(ROOT / "benchmarks" / "programs" /
                      "dataloader_workers.py", "accelerate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT accuracy" in proc.stdout


FLOAT64_BATCHES = """
import numpy as np, torch
from torch.utils.data import DataLoader
for b in DataLoader(np.arange(8.0).reshape(4, 2), batch_size=2):
    c = b.cuda()
    c.add_(1)
    print(b.dtype, b.device.type != "cpu", c.data_ptr() != b.data_ptr(),
          float(b.sum()))
"""


def test_float64_batches_placed_on_a_device_without_float64(tmp_path):
    """In mode accelerate the loader places batches on the device; a float64
    batch (numpy data) follows the float64 rule there as a program's own
    move would: float32, a downcast row at the program's line, or with
    TORCHDEVICE_FLOAT64=error TorchDevice's error (docs/policy.md, "float64
    on MPS").  The batch stays a host tensor for the program: .cuda()
    copies, as on CUDA."""
    proc = launch(tmp_path, FLOAT64_BATCHES, "accelerate", "--report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["torch.float32 True True 6.0",
                                        "torch.float32 True True 22.0"]
    assert re.search(r"prog\.py:4 +Tensor\.to +downcast +float64 -> float32 "
                     r"+2", proc.stderr), proc.stderr
    strict = launch(tmp_path, FLOAT64_BATCHES, "accelerate",
                    "--float64", "error")
    assert strict.returncode == 1
    assert "TypeError: Tensor.to: the simaccel device does not support " \
           "float64" in strict.stderr, strict.stderr[-3000:]


DATASET_IN_MAIN = """
import sys
import torch
from torch.utils.data import DataLoader, Dataset, Subset


class Patterns(Dataset):
    def __init__(self):
        self.table = {"base": [torch.arange(4.0), torch.ones(4)]}
        self.scale = torch.full((4,), 2.0)

    def __len__(self):
        return 6

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        base, ones = self.table["base"]
        return base * self.scale + ones + torch.randn(4, generator=g)


if __name__ == "__main__":
    data = Patterns()
    loader = DataLoader(Subset(data, range(6)), batch_size=3, num_workers=2,
                        multiprocessing_context=sys.argv[1])
    total = sum(batch.sum() for batch in loader)
    print("total", round(float(total), 4))
    print("dataset", data.scale.device.type)
"""


@pytest.mark.slow
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_dataset_built_in_the_main_process_serves_host_workers(tmp_path,
                                                             start):
    """A Dataset built in the training process holds tensors made without a
    device, which accelerate mode puts on the accelerator; its DataLoader
    workers compute on the host (CPU override) and combine them with host
    tensors.  They get the dataset's tensors on the host (the worker's copy;
    the training process's stays where the policy put it) and compute the
    native numbers."""
    (tmp_path / "prog.py").write_text(textwrap.dedent(DATASET_IN_MAIN))
    script = tmp_path / "prog.py"
    got = run_script(script, "accelerate", cwd=tmp_path, args=(start,))
    assert got.returncode == 0, got.stderr[-3000:]
    want = run_script(script, "accelerate", native=True, cwd=tmp_path,
                      args=(start,))
    assert want.returncode == 0, want.stderr[-3000:]
    assert _line(got.stdout, "total") == _line(want.stdout, "total")
    assert _line(got.stdout, "dataset") == "dataset simaccel"


def _line(out: str, key: str) -> str:
    return next(ln for ln in out.splitlines() if ln.split(" ")[0] == key)


# ---- the note on device mismatches -----------------------------------------

MISMATCH = """
import numpy as np
import torch

scale = torch.ones(3)                           # line 5: redirected
values = torch.from_numpy(np.arange(3, dtype=np.float32))
total = values * scale                          # line 7: host meets device
"""


def test_mismatch_names_the_sites_and_the_way_out(tmp_path):
    proc = launch(tmp_path, MISMATCH, "accelerate", "--report")
    assert proc.returncode == 1
    err = proc.stderr
    assert "Expected all tensors to be on the same device" in err
    note = err[err.index("TorchDevice: a host tensor"):]
    assert re.search(r"at \S*prog\.py:7 \(in <module>\)", note), note
    assert "values on cpu" in note and "scale on simaccel:0" in note
    assert re.search(r"prog\.py:5 torch\.ones \(default -> simaccel:0", note)
    assert 'device="cpu:-1"' in note and "cpu_override()" in note
    assert "TORCHDEVICE_MODE=cpu-stays-cpu" in note
    # one note, after torch's message, before the report table
    assert err.count("TorchDevice: a host tensor") == 1


def test_mismatch_without_report_says_how_to_list_the_sites(tmp_path):
    proc = launch(tmp_path, MISMATCH, "accelerate")
    assert proc.returncode == 1
    assert "Run with --report" in proc.stderr


def test_no_note_where_torchdevice_did_not_cause_it(tmp_path):
    """cpu-stays-cpu keeps host requests on the host: a mismatch there is
    the program's own (it fails on CUDA too) and torch's message stands
    alone."""
    proc = launch(tmp_path, """
        import torch
        torch.ones(3, device="cuda") + torch.ones(3)
    """, "cpu-stays-cpu")
    assert proc.returncode == 1
    assert "Expected all tensors to be on the same device" in proc.stderr
    assert "TorchDevice:" not in proc.stderr


TENSOR_TEST = """
import torch
emb = torch.nn.Embedding(10, 4).cuda()
idx = torch.arange(3)
if next(emb.parameters()).is_cuda:      # True on CUDA
    idx = idx.cuda()
print(emb(idx).shape)
"""


def test_a_move_behind_a_test_of_a_tensors_device_is_explained(tmp_path):
    """In the default mode a CUDA program that moves its own tensors only
    when a tensor's device reads "cuda" leaves them on the host beside the
    device's (torchkge's evaluators): the note names the test and the mode
    that runs the program; mode "accelerate" does."""
    proc = launch(tmp_path, TENSOR_TEST, "cpu-stays-cpu")
    assert proc.returncode == 1
    err = proc.stderr
    note = err[err.index("TorchDevice: a host tensor"):]
    assert re.search(r"at \S*prog\.py:7 \(in <module>\)", note), note
    assert re.search(r"own device: \S*prog\.py:5 \.is_cuda\.", note), note
    assert "input on cpu, weight on simaccel:0" in note
    assert "TORCHDEVICE_MODE=accelerate" in note
    assert err.count("TorchDevice: a host tensor") == 1
    ran = launch(tmp_path, TENSOR_TEST, "accelerate")
    assert ran.returncode == 0, ran.stderr
    assert "torch.Size([3, 4])" in ran.stdout


def test_explain_for_caught_errors_and_threads(tmp_path):
    proc = launch(tmp_path, """
        import threading
        import numpy as np
        import torch
        import TorchDevice

        try:
            torch.from_numpy(np.zeros(2, dtype=np.float32)) + torch.ones(2)
        except RuntimeError as exc:
            note = TorchDevice.explain(exc)
            again = TorchDevice.explain(exc)
            print("noted", note is not None and note == again,
                  len(exc.__notes__))
        print("other", TorchDevice.explain(ValueError("unrelated")))

        def work():
            torch.frombuffer(bytearray(8), dtype=torch.float32) + torch.ones(2)
        t = threading.Thread(target=work)
        t.start()
        t.join()
    """, "accelerate")
    assert proc.returncode == 0, proc.stderr
    assert "noted True 1" in proc.stdout
    assert "other None" in proc.stdout
    assert "TorchDevice: a host tensor met an accelerator tensor" in \
        proc.stderr          # from threading.excepthook


def test_hooks_leave_with_disable(tmp_path):
    """disable() puts back the hooks it found; under the launcher, whose
    hook calls ours, ours stays chained once (no loop after disable() and
    enable()) and the note still comes."""
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent("""
        import sys, threading
        before = sys.excepthook, threading.excepthook
        import TorchDevice
        assert sys.excepthook is not before[0]
        TorchDevice.disable()
        assert (sys.excepthook, threading.excepthook) == before
        print("restored")
    """))
    plain = run_script(script, "accelerate", native=True, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "restored" in plain.stdout
    proc = launch(tmp_path, """
        import numpy as np
        import torch
        import TorchDevice
        TorchDevice.disable()
        TorchDevice.enable()
        TorchDevice.disable()
        TorchDevice.enable()
        torch.from_numpy(np.zeros(2, dtype=np.float32)) + torch.ones(2)
    """, "accelerate")
    assert proc.returncode == 1
    assert "RecursionError" not in proc.stderr
    assert proc.stderr.count("TorchDevice: a host tensor") == 1


# ---- the overrides in both modes --------------------------------------------

OVERRIDES = """
import torch
import TorchDevice

def where(**kw):
    return torch.ones(1, **kw).device.type

print("start", where(), where(device="cpu"), where(device="cuda"))
print("escape", torch.ones(1, device="cpu:-1").device.type)
print("after-escape", where(), where(device="cpu"), where(device="cuda"))
torch.device("cpu:-1")
print("toggled-back", where(), where(device="cpu"))
with TorchDevice.cpu_override():
    print("scoped", where(), where(device="cpu"), where(device="cuda"))
print("after-scope", where(), where(device="cpu"))
"""


@pytest.mark.parametrize("mode,expected", [
    ("accelerate", {
        "start": "simaccel simaccel simaccel",
        "escape": "cpu",
        "after-escape": "cpu cpu simaccel",       # the toggle is on
        "toggled-back": "simaccel simaccel",
        "scoped": "cpu cpu simaccel",
        "after-scope": "simaccel simaccel"}),
    ("cpu-stays-cpu", {
        "start": "cpu cpu simaccel",
        "escape": "cpu",
        "after-escape": "cpu cpu simaccel",       # no toggle in this mode
        "toggled-back": "cpu cpu",
        "scoped": "cpu cpu simaccel",
        "after-scope": "cpu cpu"}),
])
def test_cpu_override_and_scope_in_both_modes(tmp_path, mode, expected):
    proc = launch(tmp_path, OVERRIDES, mode)
    assert proc.returncode == 0, proc.stderr
    got = {}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(" ")
        got[key] = rest
    assert got == expected


# ---- float64 conversions of tensors already on the device ------------------

FLOAT64_CONVERSIONS = """
import torch
dev = torch.device("cuda")
x = torch.arange(6, dtype=torch.float32, device=dev).reshape(2, 3)
host = torch.arange(3, dtype=torch.float32)
# PyTorch-Ignite's metrics pick float64 unless the device reads "mps".
wide = torch.float64 if dev.type != "mps" else torch.float32
made = {
    "to": x.to(torch.float64),
    "to-keyword": x.to(dtype=wide),
    "to-copy": x.to(torch.float64, copy=True),
    "double": x.double(),
    "double-format": x.t().double(memory_format=torch.contiguous_format),
    "int-double": x.long().double(),
    "type": x.type(torch.float64),
}
for name, t in made.items():
    fresh = t.data_ptr() != x.data_ptr() and t is not x
    print(name, t.device.type, str(t.dtype), fresh, t.is_contiguous(),
          t.tolist() == x.tolist() or t.tolist() == x.t().tolist())
before = x.clone()
made["double"].add_(1)
print("input-unchanged", torch.equal(x, before))
m = torch.nn.Linear(3, 2).cuda()
m.double()
print("module-double", m.weight.device.type, str(m.weight.dtype))
m.to(torch.float64)
print("module-to", str(m.bias.dtype))
a = torch.ones(2, device=dev, requires_grad=True)
a.double().mul(3).sum().backward()
print("grad", a.grad.tolist())
h = host.to(torch.float64)
print("host", h.device.type, str(h.dtype))
# Made where the input tensor is, in float64.
like = {
    "zeros-like": torch.zeros_like(x, dtype=torch.float64),
    "like-input": torch.zeros_like(input=x, dtype=torch.float64),
    "full-like": torch.full_like(x, 2.0, dtype=torch.float64),
    "rand-like": torch.rand_like(x, dtype=torch.float64),
    "new-zeros": x.new_zeros((2, 3), dtype=torch.float64),
    "new-full": x.new_full((2, 3), 2.0, dtype=torch.float64),
    "new-tensor": x.new_tensor(x.tolist(), dtype=torch.float64),
}
for name, t in like.items():
    print(name, t.device.type, str(t.dtype), tuple(t.shape))
print("host-like", str(torch.zeros_like(host, dtype=torch.float64).dtype))
# Operations whose dtype= names their result's dtype compute where x is.
ops = {
    "sum": (x.sum(dtype=torch.float64), x.sum(dtype=torch.float32)),
    "torch-sum": (torch.sum(x, 1, dtype=torch.float64), x.sum(1)),
    "mean": (x.mean(dtype=torch.float64), x.mean()),
    "cumsum": (torch.cumsum(x, 1, dtype=torch.float64), x.cumsum(1)),
    "cumprod": (x.cumprod(0, dtype=torch.float64), x.cumprod(0)),
    "softmax": (torch.softmax(x, 1, torch.float64), x.softmax(1)),
    "log-softmax": (torch.nn.functional.log_softmax(x, dim=1,
                                                    dtype=torch.float64),
                    x.log_softmax(1)),
    "vector-norm": (torch.linalg.vector_norm(x, dtype=torch.float64),
                    torch.linalg.vector_norm(x)),
    "vector-norm-x": (torch.linalg.vector_norm(x=x, dtype=torch.float64),
                      torch.linalg.vector_norm(x)),
    "matrix-norm": (torch.linalg.matrix_norm(x, dtype=torch.float64),
                    torch.linalg.matrix_norm(x)),
    "linalg-norm": (torch.linalg.norm(x, dtype=torch.float64),
                    torch.linalg.norm(x)),
    "tensor-norm": (x.norm(dim=1, dtype=torch.float64), x.norm(dim=1)),
    "special-softmax": (torch.special.softmax(x, 1, torch.float64),
                        x.softmax(1)),
    "special-log-softmax": (torch.special.log_softmax(
        x, 1, dtype=torch.float64), x.log_softmax(1)),
}
for name, (t, same) in ops.items():
    print(name, t.device.type, str(t.dtype), t.tolist() == same.tolist())
print("host-sum", str(host.sum(dtype=torch.float64).dtype))
print("replaced", torch.sum is not torch._C._VariableFunctions.sum)
# torch.compile traces the conversions through the same replacements.
compiled = torch.compile(lambda t: (t.double() * 2, t.to(torch.float64) + 1,
                                    torch.zeros_like(t, dtype=torch.float64),
                                    torch.sum(t, dtype=torch.float64),
                                    torch.softmax(t, 0, torch.float64)),
                         backend="aot_eager", fullgraph=True)
c1, c2, c3, c4, c5 = compiled(x)
print("compiled", c1.device.type, str(c1.dtype), str(c2.dtype),
      c1.tolist() == (x * 2).tolist(), str(c3.dtype), str(c4.dtype),
      str(c5.dtype))
"""


@pytest.mark.parametrize("mode", MODES)
def test_float64_conversions_on_the_device_compute_in_float32(tmp_path,
                                                              mode):
    """A CUDA program converts its "cuda" tensors to float64 in place
    (`.double()`, `.to(torch.float64)`, `.type(torch.float64)`,
    `Module.double()`), makes float64 tensors where they are
    (`zeros_like(x, dtype=torch.float64)`, `x.new_zeros(...)`) and asks
    operations for a float64 result (`x.sum(dtype=torch.float64)`,
    `torch.softmax(x, 1, torch.float64)`): on a device
    without float64 each is float32 there, a new tensor as the conversion
    is on CUDA, where the device alone raises MPS's "Cannot convert a MPS
    Tensor to float64 dtype" (docs/policy.md, "float64 on MPS").  Host
    tensors keep float64 unless accelerate mode put them on the device."""
    proc = launch(tmp_path, FLOAT64_CONVERSIONS, mode,
                  f"--report={tmp_path / 'report.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    # Each conversion is a "downcast" row at the program's own line.
    records = json.loads((tmp_path / "report.json").read_text())["records"]
    lines = FLOAT64_CONVERSIONS.splitlines()
    downcast = {(r["api"], lines[r["line"] - 1].strip()[:14])
                for r in records if r["what"] == "downcast"
                and r["file"].endswith("prog.py")}
    assert ("Tensor.double", 'm.double()') in downcast
    assert ("Tensor.to", '"to": x.to(tor') in downcast
    assert ("Tensor.double", '"double": x.do') in downcast
    assert ("Tensor.type", '"type": x.type') in downcast
    assert ("torch.zeros_like", '"zeros-like": ') in downcast
    assert ("Tensor.new_full", '"new-full": x.') in downcast
    assert all(r["from"] == "float64" and r["to"] == "float32"
               for r in records if r["what"] == "downcast")
    for name in ("to", "to-keyword", "to-copy", "double", "int-double",
                 "type"):
        assert got[name] == "simaccel torch.float32 True True True", name
    assert got["double-format"] == "simaccel torch.float32 True True True"
    assert got["input-unchanged"] == "True"
    assert got["module-double"] == "simaccel torch.float32"
    assert got["module-to"] == "torch.float32"
    assert got["grad"] == "[3.0, 3.0]"
    assert got["host"] == ("simaccel torch.float32" if mode == "accelerate"
                           else "cpu torch.float64")
    for name in ("zeros-like", "like-input", "full-like", "rand-like",
                 "new-zeros", "new-full", "new-tensor"):
        assert got[name] == "simaccel torch.float32 (2, 3)", name
    assert got["host-like"] == ("torch.float32" if mode == "accelerate"
                                else "torch.float64")
    for name in ("sum", "torch-sum", "mean", "cumsum", "cumprod", "softmax",
                 "log-softmax", "vector-norm", "vector-norm-x", "matrix-norm",
                 "linalg-norm", "tensor-norm", "special-softmax",
                 "special-log-softmax"):
        assert got[name] == "simaccel torch.float32 True", name
    assert got["host-sum"] == ("torch.float32" if mode == "accelerate"
                               else "torch.float64")
    assert ("Tensor.sum", '"sum": (x.sum(') in downcast
    assert ("torch.softmax", '"softmax": (to') in downcast
    assert ("torch.linalg.vector_norm", '"vector-norm":') in downcast
    assert ("torch.special.softmax", '"special-softm') in downcast
    assert got["replaced"] == "True"
    assert got["compiled"] == ("simaccel torch.float32 torch.float32 True "
                               "torch.float32 torch.float32 torch.float32")


DEFAULT_DEVICE_FLOAT64 = """
import numpy as np
import torch
# Scientific code (Pyro's examples): float64 by default, on the GPU.
torch.set_default_dtype(torch.float64)
torch.set_default_device("cuda")
made = {
    "tensor": torch.tensor([1.5, 0.25]),
    "zeros": torch.zeros(2),
    "full": torch.full((2,), 2.0),
    "arange": torch.arange(2.0),
    "dtype": torch.ones(2, dtype=torch.float64),
    "numpy": torch.as_tensor(np.array([1.5, 0.25])),
    "int": torch.tensor([1, 2]),
    "complex": torch.tensor([1j, 2.0]),
}
for name, t in made.items():
    print(name, t.device.type, str(t.dtype), t.tolist())
with torch.device("cuda"):
    print("with", str(torch.zeros(1).dtype))
m = made["tensor"]
print("moves", m.to("cuda") is m, m.cuda() is m)
"""


def test_default_device_context_with_float64_default_dtype(tmp_path):
    """`torch.set_default_dtype(torch.float64)` and
    `torch.set_default_device("cuda")`: torch fills the device of each
    factory from its context, and on a device without float64 each tensor
    is float32 there, as a factory naming the device gives (docs/policy.md,
    "float64 on MPS"); the device alone raises "Cannot convert a MPS Tensor
    to float64 dtype".  They are on the accelerator for the moves."""
    proc = launch(tmp_path, DEFAULT_DEVICE_FLOAT64, "cpu-stays-cpu",
                  f"--report={tmp_path / 'report.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert got == {
        "tensor": "simaccel torch.float32 [1.5, 0.25]",
        "zeros": "simaccel torch.float32 [0.0, 0.0]",
        "full": "simaccel torch.float32 [2.0, 2.0]",
        "arange": "simaccel torch.float32 [0.0, 1.0]",
        "dtype": "simaccel torch.float32 [1.0, 1.0]",
        "numpy": "simaccel torch.float32 [1.5, 0.25]",
        "int": "simaccel torch.int64 [1, 2]",
        "complex": "simaccel torch.complex64 [1j, (2+0j)]",
        "with": "torch.float32",
        "moves": "True True",
    }
    records = json.loads((tmp_path / "report.json").read_text())["records"]
    assert {r["api"] for r in records if r["what"] == "downcast"} >= {
        "torch.tensor", "torch.zeros", "torch.full", "torch.arange",
        "torch.ones", "torch.as_tensor"}


COMPLEX128 = """
import numpy as np
import torch
x = torch.ones(2, device="cuda")
spec = np.fft.fft(np.arange(2.0))       # numpy's complex128: [1, -1]
made = {
    "factory": torch.zeros(2, dtype=torch.complex128, device="cuda"),
    "tensor": torch.tensor(spec, device="cuda"),
    "as-tensor": torch.as_tensor(spec, device="cuda"),
    "moved": torch.from_numpy(spec).to("cuda"),
    "cuda": torch.from_numpy(spec).cuda(),
    "to": x.to(torch.complex128),
    "cdouble": x.cdouble(),
    "type": x.type(torch.complex128),
    "zeros-like": torch.zeros_like(x, dtype=torch.complex128),
}
for name, t in made.items():
    print(name, t.device.type, str(t.dtype), (t * 2).cpu().tolist())
host = torch.from_numpy(spec)
print("host", str(host.dtype), str(host.cdouble().dtype))
compiled = torch.compile(lambda t: torch.zeros_like(t, dtype=torch.complex128)
                         + t.to(torch.complex128), backend="aot_eager")
print("compiled", str(compiled(x).dtype))
"""


def test_complex128_follows_float64(tmp_path):
    """complex128 is a pair of float64, and MPS has neither ("Trying to
    convert ComplexDouble to the MPS backend"): numpy's complex arrays moved
    to "cuda", `dtype=torch.complex128` and `.cdouble()` give complex64
    there, by the float64 setting, with a "downcast" row; host tensors keep
    complex128 (docs/policy.md, "float64 on MPS")."""
    proc = launch(tmp_path, COMPLEX128, "cpu-stays-cpu",
                  f"--report={tmp_path / 'report.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    for name in ("tensor", "as-tensor", "moved", "cuda"):
        assert got[name] == "simaccel torch.complex64 [(2+0j), (-2+0j)]", name
    for name in ("to", "cdouble", "type"):
        assert got[name] == "simaccel torch.complex64 [(2+0j), (2+0j)]", name
    assert got["factory"] == got["zeros-like"] == \
        "simaccel torch.complex64 [0j, 0j]"
    assert got["host"] == "torch.complex128 torch.complex128"
    assert got["compiled"] == "torch.complex64"
    records = json.loads((tmp_path / "report.json").read_text())["records"]
    downcast = {r["api"] for r in records if r["what"] == "downcast"
                and (r["from"], r["to"]) == ("complex128", "complex64")}
    assert downcast >= {"torch.zeros", "torch.tensor", "torch.as_tensor",
                        "Tensor.to", "Tensor.cuda", "torch.zeros_like",
                        "Tensor.cdouble"}
    # Each row names the call the program wrote: x.cdouble() is one row of
    # Tensor.cdouble, not one of the Tensor.to it amounts to.
    cdouble_line = 1 + COMPLEX128.splitlines().index(
        '    "cdouble": x.cdouble(),')
    assert {r["api"] for r in records if r["line"] == cdouble_line} == {
        "Tensor.cdouble"}
    proc = launch(tmp_path, """
        import numpy as np, torch
        try:
            torch.from_numpy(np.ones(2, dtype=np.complex128)).to("cuda")
        except TypeError as e:
            print(e)
        """, "cpu-stays-cpu", "--float64", "error")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("Tensor.to: "), proc.stdout
    assert "does not support complex128" in proc.stdout
    assert "use complex64 instead" in proc.stdout


def test_capabilities_option_overrides_the_environment(tmp_path):
    """`run --capabilities NAME` wins over TORCHDEVICE_CAPABILITIES in the
    environment (here "mps"), in the launched program itself as in its
    children."""
    code = """
        import os, subprocess, sys, TorchDevice
        p = TorchDevice.policy()
        print(p["capabilities"], p["device_float64"])
        child = ("import TorchDevice; p = TorchDevice.policy(); "
                 "print(p['capabilities'], p['device_float64'])")
        sys.stdout.flush()
        subprocess.run([sys.executable, "-c", child], check=True)
        """
    proc = launch(tmp_path, code, "accelerate", "--capabilities",
                  "accelerator")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["accelerator True"] * 2


def test_result_dtype_operations_stay_torchs_where_the_device_has_float64(
        tmp_path):
    """sum, cumsum, softmax, ... are hot: they are replaced only where the
    device in force has no float64, and are torch's own elsewhere."""
    code = """
        import torch
        print(torch.sum is torch._C._VariableFunctions.sum,
              torch.Tensor.cumsum is torch._C.TensorBase.cumsum,
              torch.linalg.vector_norm is torch._C._linalg.linalg_vector_norm,
              torch.ones(1, device="cuda").sum(dtype=torch.float64).dtype)
        """
    # The simulated device without MPS's rules, as the generic record
    # describes it: float64 and all.
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(code))
    env = _accel_env("accelerate")
    del env["SIMACCEL_MPS_RULES"], env["TORCHDEVICE_CAPABILITIES"]
    native = subprocess.run(
        [sys.executable, "-m", "TorchDevice", "run", str(script)],
        capture_output=True, text=True, env=env, cwd=str(tmp_path),
        timeout=300)
    assert native.returncode == 0, native.stderr[-3000:]
    assert native.stdout.split() == ["True"] * 3 + ["torch.float64"]
    lowered = launch(tmp_path, code, "accelerate")
    assert lowered.returncode == 0, lowered.stderr[-3000:]
    assert lowered.stdout.split() == ["False"] * 3 + ["torch.float32"]


def test_float64_conversions_on_the_device_raise_under_error(tmp_path):
    """TORCHDEVICE_FLOAT64=error: the conversion raises TypeError naming the
    call and the setting, as for a float64 request with a device."""
    for call, api in (("x.to(torch.float64)", "Tensor.to"),
                      ("x.to(dtype=torch.float64)", "Tensor.to"),
                      ("x.double()", "Tensor.double"),
                      ("x.type(torch.float64)", "Tensor.type"),
                      ("torch.zeros_like(x, dtype=torch.float64)",
                       "torch.zeros_like"),
                      ("x.new_ones(2, dtype=torch.float64)",
                       "Tensor.new_ones"),
                      ("x.cumsum(0, dtype=torch.float64)", "Tensor.cumsum"),
                      ("torch.softmax(x, 0, torch.float64)",
                       "torch.softmax"),
                      ("x.norm(dtype=torch.float64)",
                       "torch.linalg.vector_norm")):
        proc = launch(tmp_path, f"""
            import torch
            x = torch.ones(2, device="cuda")
            try:
                {call}
            except TypeError as e:
                print("raised", e)
            """, "cpu-stays-cpu", "--float64", "error")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.startswith(f"raised {api}: "), proc.stdout
        assert "does not support float64" in proc.stdout
        assert "TORCHDEVICE_FLOAT64=downcast" in proc.stdout


def test_float64_bytes_are_not_read_as_float32(tmp_path):
    """A float64 tensor rebuilt over bytes moved to the device (tensordict's
    consolidated `.to("cuda")`: `new_empty(0, device=...).set_(storage,
    offset, size, stride)`) was made float32 and read the float64 bytes as
    float32, silently: [0, 2.8e-45, 0] for [0, 1, 2].  set_ now refuses;
    over a storage made float32 too, and on a device with float64, it is
    torch's (docs/policy.md, "float64 on MPS")."""
    code = """
        import torch
        x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
        buf = x.view(torch.uint8).to("cuda")     # float64 bytes, on "cuda"
        try:
            y = x.new_empty(0, device="cuda").set_(
                buf.untyped_storage(), 0, x.shape, x.stride())
            print("set", y.dtype, y.tolist())
        except TypeError as e:
            print("refused", e)
        lowered = torch.arange(3, dtype=torch.float64, device="cuda")
        z = torch.empty(0, dtype=torch.float64, device="cuda").set_(
            lowered.untyped_storage(), 0, (3,), (1,))
        print("alike", z.dtype, z.tolist())
        w = torch.empty(0, device="cuda").set_(buf.untyped_storage(), 0, (2,))
        print("float32", w.dtype)
        """
    proc = launch(tmp_path, code, "cpu-stays-cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("refused Tensor.set_: this tensor was asked "
                               "for as torch.float64"), lines
    assert lines[1:] == ["alike torch.float32 [0.0, 1.0, 2.0]",
                         "float32 torch.float32"]
    on_cpu = relaunch_on_the_cpu(tmp_path)
    assert on_cpu.returncode == 0, on_cpu.stderr[-3000:]
    assert on_cpu.stdout.splitlines() == [
        "set torch.float64 [0.0, 1.0, 2.0]",
        "alike torch.float64 [0.0, 1.0, 2.0]", "float32 torch.float32"]


def test_a_float64_typed_storage_is_made_float32(tmp_path):
    """A TypedStorage's float64 request on a device without float64 is
    float32, as the report says, not a float64 storage on that device:
    the dtype is read where the storage is built, with the device."""
    code = """
        import torch, warnings
        warnings.simplefilter("ignore")     # TypedStorage is deprecated
        s = torch.TypedStorage([0.5, 1.5], dtype=torch.float64, device="cuda")
        print(s.dtype, s.tolist(), s.nbytes())
        e = torch.TypedStorage(3, dtype=torch.float64, device="cuda")
        print(e.dtype, e.size(), e.nbytes())
        legacy = torch.cuda.DoubleStorage(3)
        print(legacy.dtype, legacy.size(), legacy.nbytes())
        """
    proc = launch(tmp_path, code, "cpu-stays-cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "torch.float32 [0.5, 1.5] 8", "torch.float32 3 12",
        "torch.float32 3 12"]
    on_cpu = relaunch_on_the_cpu(tmp_path)
    assert on_cpu.returncode == 0, on_cpu.stderr[-3000:]
    assert on_cpu.stdout.splitlines() == [
        "torch.float64 [0.5, 1.5] 16", "torch.float64 3 24",
        "torch.float64 3 24"]


def test_storages_follow_the_factories_rule_in_mode_accelerate(tmp_path):
    """Mode "accelerate" sends the program's "cpu" requests to the
    accelerator and leaves what torch's own code makes, and a storage
    constructor called without a device, where torch puts it
    (docs/policy.md, the FACTORY grammar): a TypedStorage builds its
    UntypedStorage in torch's code, which must stay torch's even with
    TorchDevice's storage wrappers in between."""
    code = """
        import torch, warnings
        warnings.simplefilter("ignore")     # TypedStorage is deprecated
        f32 = torch.float32
        print(torch.UntypedStorage(4).device.type,
              torch.TypedStorage(4, dtype=f32).device.type,
              torch.FloatStorage(4).device.type,
              torch.UntypedStorage(4, device="cpu").device.type,
              torch.TypedStorage(4, dtype=f32, device="cpu").device.type,
              torch.TypedStorage(4, dtype=f32, device="cuda").device.type)
        """
    proc = launch(tmp_path, code, "accelerate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["cpu"] * 3 + ["simaccel"] * 3


def test_a_float64_checkpoint_loads_onto_the_device_as_float32(tmp_path):
    """torch.load(..., map_location="cuda") of float64 tensors rebuilt
    each over its storage with an empty float64 tensor and set_: made
    float32, it read the float64 bytes as float32 ([0.0, 0.0, 0.0] for
    [0, 1, 2]).  The values arrive as float32, a storage shared by views
    and tied entries stays shared, the tensors move as loaded onto "cuda"
    do, and nothing warns but the first downcast, which is TorchDevice's
    log, not a Python warning (docs/policy.md, "float64 on MPS").  The
    report counts each torch.load call once (it counted every tensor)."""
    torch_save = """
        import io, torch, warnings
        warnings.simplefilter("error")     # as test suites often run
        w = torch.tensor([0.25, 1.5, -2.0, 3.0], dtype=torch.float64)
        buf = io.BytesIO()
        torch.save({"w": w, "v": w[1:3], "tied": w,
                    "c": torch.tensor([1 + 2j], dtype=torch.complex128)}, buf)
        for weights_only in (True, False):
            buf.seek(0)
            d = torch.load(buf, map_location="cuda", weights_only=weights_only)
            print(d["w"].dtype, d["w"].tolist(), d["v"].tolist(),
                  d["c"].dtype, d["c"].tolist())
            d["w"].add_(1)
            print(d["v"].tolist(), d["tied"].tolist() == d["w"].tolist(),
                  d["w"].cuda() is d["w"], d["w"].cpu() is d["w"])
        """
    proc = launch(tmp_path, torch_save, "cpu-stays-cpu",
                  f"--report={tmp_path / 'report.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "torch.float32 [0.25, 1.5, -2.0, 3.0] [1.5, -2.0] torch.complex64 "
        "[(1+2j)]", "[2.5, -1.0] True True False"] * 2
    records = json.loads((tmp_path / "report.json").read_text())["records"]
    loads = sorted((r["what"], r["from"], r["to"], r["count"])
                   for r in records if r["api"] == "torch.load")
    assert loads == [("downcast", "complex128", "complex64", 2),
                     ("downcast", "float64", "float32", 2),
                     ("redirected", "cuda", "simaccel:0", 2)], records
    said = said_once(proc)
    assert said[0].startswith("TorchDevice: float64 computed in float32 at "
                              ), proc.stderr
    # named as the program's call: torch.load, not a torch.empty it never
    # wrote
    assert "(torch.load)" in said[0], said
    under_error = launch(tmp_path, torch_save, "cpu-stays-cpu",
                         "--float64", "error")
    assert under_error.returncode != 0
    assert "TypeError: torch.load: " in under_error.stderr
    assert "does not support float64" in under_error.stderr
    on_cpu = relaunch_on_the_cpu(tmp_path)
    assert on_cpu.returncode == 0, on_cpu.stderr[-3000:]
    assert on_cpu.stdout.splitlines() == [
        "torch.float64 [0.25, 1.5, -2.0, 3.0] [1.5, -2.0] torch.complex128 "
        "[(1+2j)]", "[2.5, -1.0] True True False"] * 2


# ---- what a program saves for the host ----------------------------------------

SAVE_FOR_THE_HOST = """
import sys
import torch
from safetensors.torch import save_file

# The pointers safetensors' writer reads as host bytes (through numpy).
read_from = set()
data_ptr = torch.Tensor.data_ptr
def spy(self):
    if sys._getframe(1).f_code.co_name in ("_to_ndarray", "_tobytes"):
        read_from.add(self.device.type)
    return data_ptr(self)
torch.Tensor.data_ptr = spy

torch.manual_seed(0)
model = torch.nn.Linear(4, 3).to("cuda")
snapshot = {k: v.cpu() for k, v in model.state_dict().items()}
torch.save(snapshot, "snapshot.pt")
torch.save(model.state_dict(), "live.pt")
save_file(model.state_dict(), "model.safetensors")
save_file(snapshot, "snapshot.safetensors")
torch.Tensor.data_ptr = data_ptr
print("read", sorted(read_from))
print("weights", model.weight.tolist(), model.bias.tolist())
"""

READ_BACK = """
import json, sys
import torch
from safetensors.torch import load_file
snapshot = torch.load("snapshot.pt")
print("snapshot.pt", sorted({v.device.type for v in snapshot.values()}))
for name in ("model", "snapshot"):
    state = load_file(name + ".safetensors")
    print(name, state["weight"].tolist(), state["bias"].tolist())
"""


@pytest.mark.parametrize("mode", MODES)
def test_what_the_program_saves_for_the_host_is_host_data(tmp_path, mode):
    """Mode "accelerate" keeps the program's `.cpu()` on the device.  What
    it saves from there must still be what CUDA writes.  torch.save tagged
    the `{k: v.cpu()}` snapshot with the device ("simaccel:0", on a Mac
    "mps"), so a process without that device could not load it.
    safetensors' writer (transformers' save_pretrained) moves each tensor
    with .to("cpu") and reads its data pointer as host memory: that move
    stayed on the device, whose data pointer on MPS is a Metal buffer, not
    the values.  Both are host data now: the snapshot loads on the host in
    a process without TorchDevice, and safetensors reads host memory.  The
    live state dict of the model on the device keeps its device's tag, as
    CUDA's keeps "cuda:0".  docs/compile-checkpoints-distributed.md."""
    pytest.importorskip("safetensors")
    got = launch(tmp_path, SAVE_FOR_THE_HOST, mode)
    assert got.returncode == 0, got.stderr[-3000:]
    lines = got.stdout.splitlines()
    assert lines[0] == "read ['cpu']"
    weights = lines[1].split(" ", 1)[1]
    back = run_script(_write(tmp_path, "read_back.py", READ_BACK), mode,
                      native=True, cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    assert back.stdout.splitlines() == [
        "snapshot.pt ['cpu']", f"model {weights}", f"snapshot {weights}"]
    # The model's own state dict is on the device: tagged so, as on CUDA.
    live = subprocess.run(
        [sys.executable, "-c", "import torch; torch.load('live.pt')"],
        capture_output=True, text=True, env=_accel_env(None),
        cwd=str(tmp_path), timeout=120)
    assert live.returncode != 0
    assert "tagged with simaccel:0" in live.stderr


PINNED_STAGING = """
import torch
from safetensors.torch import load_file, save_file
for made in (torch.empty(3, pin_memory=True),
             torch.zeros(2, device="cpu", pin_memory=True)):
    print(made.device.type, made.is_pinned())
print(torch.zeros(2).device.type, torch.zeros(2, device="cpu").device.type)
save_file({"w": torch.arange(6.).reshape(2, 3)}, "w.safetensors")
loaded = load_file("w.safetensors", device="cuda")["w"]
print(loaded.device.type, loaded.tolist())
"""


@pytest.mark.parametrize("mode", MODES)
def test_pinned_memory_is_the_hosts(tmp_path, mode):
    """Pinned memory is host memory, a staging buffer for copies to the
    device.  Mode "accelerate" sent `torch.empty(..., pin_memory=True)`
    (device-less or "cpu") to the device, where torch refuses it ("Only
    dense CPU tensors can be pinned"): safetensors' `load_file(...,
    device="cuda")` (PEFT's adapter loading) stopped there.  Other host
    requests still go where the mode sends them."""
    pytest.importorskip("safetensors")
    got = launch(tmp_path, PINNED_STAGING, mode)
    assert got.returncode == 0, got.stderr[-3000:]
    host = "simaccel" if mode == "accelerate" else "cpu"
    assert got.stdout.splitlines() == [
        "cpu True", "cpu True", f"{host} {host}",
        "simaccel [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]"]


def _write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


# ---- legacy host constructors --------------------------------------------------

LEGACY_HOST = """
import math, pickle, sys
import numpy as np
import torch
import torch.nn as nn

class GraphConvolution(nn.Module):
    # As CPU-era graph and attention layers write their parameters.
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.FloatTensor(n_in, n_out))
        self.bias = nn.Parameter(torch.Tensor(n_out))
        stdv = 1.0 / math.sqrt(n_out)
        self.weight.data.uniform_(-stdv, stdv)
        self.bias.data.uniform_(-stdv, stdv)

    def forward(self, x, adj):
        return adj @ (x @ self.weight) + self.bias

torch.manual_seed(0)
layer = GraphConvolution(8, 4)
x, adj = torch.randn(6, 8), torch.eye(6)
idx = torch.LongTensor([0, 2, 5])
opt = torch.optim.SGD(layer.parameters(), lr=0.1)
for _ in range(3):
    loss = layer(x, adj)[idx].pow(2).sum()
    opt.zero_grad(); loss.backward(); opt.step()
print("loss", f"{loss.item():.6f}")
print("places", layer.weight.device.type, layer.bias.device.type,
      idx.device.type, x.device.type)
print("values", torch.Tensor([1.5, 2]).tolist(),
      torch.LongTensor(np.array([3, 4])).tolist(),
      torch.DoubleTensor(1).dtype)
storage = torch.zeros(2).untyped_storage() if x.device.type == "cpu" else \\
    torch.from_numpy(np.zeros(2, dtype=np.float32)).untyped_storage()
host = torch.from_numpy(np.zeros(2, dtype=np.float32))
view, alias = torch.FloatTensor(storage), torch.Tensor(host)
view.fill_(7); alias.add_(1)
print("shares", view.device.type, alias.device.type,
      torch.Tensor(storage).data_ptr() == view.data_ptr(), host.tolist())
print("isinstance", isinstance(x, torch.FloatTensor),
      isinstance(idx, torch.LongTensor), isinstance(x, torch.LongTensor))
print("type", host.type(torch.FloatTensor).device.type,
      host.type("torch.DoubleTensor").device.type)

class Sub(torch.Tensor):
    def __new__(cls, data):
        return super().__new__(cls, data)

print("subclass", type(Sub(torch.ones(2))).__name__,
      pickle.loads(pickle.dumps(torch.FloatTensor)) is torch.FloatTensor)
torch.set_default_tensor_type(torch.FloatTensor)
torch.set_default_tensor_type("torch.FloatTensor")
if "TorchDevice" in sys.modules:
    import TorchDevice
    TorchDevice.configure(mode="cpu-stays-cpu")
    print("switched", torch.FloatTensor(1).device.type,
          torch.Tensor(1).device.type,
          type(torch.FloatTensor).__name__)
"""


@pytest.mark.parametrize("mode", MODES)
def test_legacy_host_constructors_are_cpu_requests(tmp_path, mode):
    """`torch.FloatTensor(n, m)`, `torch.LongTensor([...])` and
    `torch.Tensor(n)` are host requests: in mode "accelerate" they land on
    the accelerator with the rest of the program (before, a CPU-era layer's
    `nn.Parameter(torch.FloatTensor(...))` stayed on the host and met its
    input there: "Expected all tensors to be on the same device"); what
    shares memory with a storage or a tensor stays with it; in
    "cpu-stays-cpu" they are torch's own (docs/policy.md, "Legacy tensor
    types")."""
    native = launch(tmp_path, LEGACY_HOST, mode, native=True)
    assert native.returncode == 0, native.stderr[-3000:]
    report = tmp_path / "report.json"
    got = launch(tmp_path, LEGACY_HOST, mode, f"--report={report}")
    assert got.returncode == 0, got.stderr[-3000:]
    mine = dict(line.split(" ", 1) for line in got.stdout.splitlines())
    theirs = dict(line.split(" ", 1) for line in native.stdout.splitlines())
    assert abs(float(mine["loss"]) - float(theirs["loss"])) < 1e-5
    assert mine["subclass"] == theirs["subclass"] == "Sub True"
    where = "simaccel" if mode == "accelerate" else "cpu"
    assert mine["places"] == " ".join([where] * 4)
    assert mine["values"] == ("[1.5, 2.0] [3, 4] torch.float32"
                              if mode == "accelerate" else theirs["values"])
    assert mine["shares"] == "cpu cpu True [1.0, 1.0]" == theirs["shares"]
    assert mine["isinstance"] == theirs["isinstance"] == "True True False"
    assert mine["type"] == f"{where} {where}"
    records = json.loads(report.read_text())["records"]
    made = {r["api"] for r in records
            if r["what"] == "redirected" and r["from"] == "cpu"}
    if mode == "accelerate":
        assert {"torch.FloatTensor", "torch.Tensor",
                "torch.LongTensor"} <= made
        assert mine["switched"] == "cpu cpu tensortype"
    else:
        assert not made & {"torch.FloatTensor", "torch.Tensor",
                           "torch.LongTensor"}
        assert mine["switched"] == "cpu cpu tensortype"


FLOAT64_ONLY_NUMBER = """
import torch, TorchDevice
w = torch.randn(3, 3, device="cuda", dtype=torch.float64)
try:
    w.fill_diagonal_(torch.finfo(torch.float64).min)
except RuntimeError as e:
    print("caught", TorchDevice.explain(e) is not None)
print("fits", w.masked_fill(w > 10, torch.finfo(w.dtype).min).dtype)
m = torch.zeros(2, dtype=torch.float64, device="cuda")
m.masked_fill_(m == 0, -1e300)
"""

COMPLEX128_ONLY_NUMBER = """
import torch
z = torch.zeros(2, dtype=torch.complex128, device="cuda")
z.fill_(complex(1e300, 0))
"""

FLOAT64_RESULT = """
import numpy as np, torch, TorchDevice
p = torch.tensor(100, dtype=torch.float64, device="cuda")
a = torch.from_numpy(np.array(0.5))
try:
    torch.mul(a, p)
except TypeError as e:
    print("direct", TorchDevice.explain(e) is not None)
def other(x):
    wide = torch.zeros(1, dtype=torch.float64)
    try:
        x * None
    except TypeError as e:
        return TorchDevice.explain(e)
print("other", other(p))
print("fixed", (a.float() * p).dtype, (a.item() * p).dtype)
def step(x):
    return a * x
print("result", step(p).dtype)
"""


def test_an_operation_refused_for_its_float64_result_is_explained(tmp_path):
    """A float64 host tensor with no dimensions (torch.from_numpy of a numpy
    scalar) meets a tensor TorchDevice made float32 on a device without
    float64: the result would be float64, which the device refuses, and an
    operator reports it as "unsupported operand type(s)". The note names
    the line, the float64 tensors there and the way out; an operator's
    TypeError between a tensor and something else gets none (docs/policy.md,
    "float64 on MPS")."""
    proc = launch(tmp_path, FLOAT64_RESULT, "cpu-stays-cpu")
    assert proc.returncode == 1
    assert "direct True" in proc.stdout and "other None" in proc.stdout
    assert "fixed torch.float32 torch.float32" in proc.stdout
    assert "unsupported operand type(s) for *: 'Tensor' and 'Tensor'" in \
        proc.stderr
    note = proc.stderr[proc.stderr.index("TorchDevice: an operation"):]
    assert note.startswith("TorchDevice: an operation would make float64 on "
                           "a device without it at prog.py:18 (in step).")
    assert "float64 tensors at prog.py:18 (in step): a (cpu, float64, " \
        "0 dimensions)." in note
    assert "(.float()) or a Python number (.item())" in note
    # On a device with float64 (the CPU here) the program runs through, and
    # the result is float64 as on CUDA.
    proc = relaunch_on_the_cpu(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "result torch.float64" in proc.stdout
    assert "TorchDevice:" not in proc.stderr


def said_once(proc: subprocess.CompletedProcess) -> list:
    """The lines of the first-downcast warning on the run's stderr."""
    return [line for line in proc.stderr.splitlines() if "Said once" in line]


FIRST_DOWNCAST = """
import numpy as np, torch
x = torch.tensor(np.ones(3), device="cuda")
for _ in range(3):
    y = torch.zeros(2, dtype=torch.float64, device="cuda")
print(x.dtype, y.dtype)
"""


def test_the_first_float64_request_made_float32_is_said_once(tmp_path):
    """The program's numbers change where float64 becomes float32, so the
    first such request warns through the "TorchDevice" logger, once per
    process, report or not; the report lists them all (docs/policy.md,
    "float64 on MPS")."""
    proc = launch(tmp_path, FIRST_DOWNCAST, "cpu-stays-cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["torch.float32", "torch.float32"]
    said = said_once(proc)
    assert len(said) == 1, proc.stderr
    assert said[0].startswith("TorchDevice: float64 computed in float32 at ")
    assert "prog.py:3 in <module> (torch.tensor)" in said[0]
    assert "TORCHDEVICE_FLOAT64=error" in said[0]
    report = launch(tmp_path, FIRST_DOWNCAST, "cpu-stays-cpu", "--report")
    assert report.stderr.count("Said once") == 1
    # TorchDevice's own handler (its log level set) names TorchDevice once.
    logged = launch(tmp_path, FIRST_DOWNCAST, "cpu-stays-cpu",
                    "--log-level", "INFO")
    said = said_once(logged)
    assert len(said) == 1, logged.stderr
    assert said[0].startswith("TorchDevice: float64 computed in float32 at ")
    assert "[TorchDevice] " + str(tmp_path / "prog.py") + ":5 in <module>: " \
        "torch.zeros: downcast (float64 -> float32)" in logged.stderr
    assert "prog.py:5" in report.stderr and "downcast" in report.stderr
    # A device with float64 (the CPU here) computes it: nothing to say.
    native = relaunch_on_the_cpu(tmp_path)
    assert native.stdout.split() == ["torch.float64", "torch.float64"]
    assert "Said once" not in native.stderr


FLOAT64_LIBRARY = """
import numpy as np, torch
def make():
    return torch.tensor(np.linspace(0.0, 1.0, 3), device="cuda")
"""


def test_the_first_downcast_is_said_at_the_users_line(tmp_path):
    """A library's float64 made float32 is said at the user's line that
    called into it, report or not, as the report names it
    (docs/report.md, "Which line is the site")."""
    lib = tmp_path / "site-packages"
    lib.mkdir()
    (lib / "f64lib.py").write_text(FLOAT64_LIBRARY)
    script = tmp_path / "prog.py"
    script.write_text("import f64lib\nprint(f64lib.make().dtype)\n")
    for options in ([], ["--report"]):
        proc = run_script(script, "cpu-stays-cpu", *options, cwd=tmp_path,
                          path=(str(lib),))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == ["torch.float32"]
        said = said_once(proc)
        assert len(said) == 1, proc.stderr
        assert f"at {script}:2 in <module> (torch.tensor)" in said[0]


CONTEXT_WARNING = """
import warnings, torch
torch.set_default_dtype(torch.float64)
torch.set_default_device("cuda")
t = torch.ones(2)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    u = torch.tensor(t)     # torch: "To copy construct from a tensor ..."
print(u.dtype, [w.filename.replace("\\\\", "/") for w in caught])
"""


def test_torch_warnings_under_a_lowered_default_device_name_torchs_line(
        tmp_path):
    """Under set_default_device("cuda") on a device without float64 the
    constructors go through the float64 rule; torch's own warnings still
    name torch's line, as without TorchDevice, so that filters keyed on
    torch's modules keep working."""
    proc = launch(tmp_path, CONTEXT_WARNING, "cpu-stays-cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dtype, files = proc.stdout.split(" ", 1)
    assert dtype == "torch.float32"
    assert files.strip().endswith("torch/utils/_device.py']"), files


GRADCHECK = """
import torch, TorchDevice
from torch.autograd import gradcheck
def f(x):
    return (x * x).sin()
with TorchDevice.cpu_override():
    h = torch.randn(4, dtype=torch.float64, device="cpu", requires_grad=True)
    print("host", h.device.type, str(h.dtype), gradcheck(f, (h,)))
x = torch.randn(4, dtype=torch.float64, device="cuda", requires_grad=True)
try:
    gradcheck(f, (x,), eps=1e-6, atol=1e-5)
except RuntimeError as e:
    print("caught", TorchDevice.explain(e) is not None)
def wrong(t):
    return t * t.detach()   # half the gradient: fails in float64 too
try:
    gradcheck(wrong, (h,))
except RuntimeError as e:
    print("own", TorchDevice.explain(e))
gradcheck(f, (x,), eps=1e-6, atol=1e-5)
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_gradcheck_of_lowered_inputs_is_explained(tmp_path, mode):
    """gradcheck needs float64; a CUDA program's float64 inputs made for a
    device without float64 are float32 there, and the check fails where it
    passes on CUDA.  The GradcheckError gets a note naming the line, the
    float32 inputs and the way out; one failing on float64 inputs gets none,
    nor one on a device with float64 (docs/policy.md, "Gradient checks")."""
    proc = launch(tmp_path, GRADCHECK, mode)
    assert proc.returncode == 1
    assert "host cpu torch.float64 True" in proc.stdout
    assert "caught True" in proc.stdout and "own None" in proc.stdout
    assert "GradcheckError: Jacobian mismatch" in proc.stderr
    note = proc.stderr[proc.stderr.index("TorchDevice: gradcheck"):]
    assert note.startswith("TorchDevice: gradcheck ran in float32 on a "
                           "device without float64 at prog.py:20 "
                           "(in <module>).")
    assert "input #0 (simaccel:0, float32)" in note
    assert 'inputs made with device="cpu"' in note
    proc = relaunch_on_the_cpu(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "caught" not in proc.stdout and "own None" in proc.stdout
    assert "TorchDevice:" not in proc.stderr


def test_a_float64_only_number_in_a_lowered_tensor_is_explained(tmp_path):
    """A number only float64 holds (a CUDA program's
    `torch.finfo(torch.float64).min` mask value) stored into a tensor
    TorchDevice made float32 on a device without float64: torch's bare
    "value cannot be converted to type float without overflow" gets a note
    naming the line, the float64 requests made float32 and what to do
    (docs/policy.md, "float64 on MPS")."""
    proc = launch(tmp_path, FLOAT64_ONLY_NUMBER, "cpu-stays-cpu", "--report")
    assert proc.returncode == 1
    assert "caught True" in proc.stdout and "fits torch.float32" in proc.stdout
    assert "without overflow" in proc.stderr
    note = proc.stderr[proc.stderr.index("TorchDevice: a number"):]
    assert note.startswith("TorchDevice: a number only float64 holds does "
                           "not fit in float32 at prog.py:10 (in <module>).")
    assert "prog.py:3 torch.randn (x1); prog.py:9 torch.zeros (x1)" in note
    assert "torch.finfo(t.dtype)" in note
    assert "TORCHDEVICE_FLOAT64=error" in note
    # The complex counterpart: torch names complex64's C++ type, and the
    # note names complex128 and the complex128 requests made complex64.
    proc = launch(tmp_path, COMPLEX128_ONLY_NUMBER, "cpu-stays-cpu",
                  "--report")
    assert proc.returncode == 1
    assert "c10::complex<float> without overflow" in proc.stderr
    note = proc.stderr[proc.stderr.index("TorchDevice: a number"):]
    assert note.startswith("TorchDevice: a number only complex128 holds "
                           "does not fit in complex64 at prog.py:4 (in "
                           "<module>).")
    assert ("complex128 requests TorchDevice made complex64: "
            "prog.py:3 torch.zeros (x1).") in note
    assert "float64 requests" not in note
    # Where the device has float64 (the CPU here) the number fits, and a
    # float32 tensor's own overflow is the program's: torch's message
    # stands alone.
    for code, ok in ((FLOAT64_ONLY_NUMBER, "fits torch.float64"),
                     ("import torch\n"
                      "torch.zeros(2, device='cuda').fill_(1e300)\n", "")):
        script = tmp_path / "host.py"
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, "-m", "TorchDevice", "run", str(script)],
            capture_output=True, text=True, env=_accel_env(None),
            cwd=str(tmp_path), timeout=300)
        assert "TorchDevice:" not in proc.stderr
        if ok:
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert ok in proc.stdout
        else:
            assert "without overflow" in proc.stderr


# ---- a device read off a host tensor ----------------------------------------

HOST_PLACE = """
import numpy as np
import torch
M = torch.from_numpy(np.ones((2, 2)))      # host memory, float64, any mode
u = torch.ones(2, dtype=M.dtype, device=M.device)
print("like", u.device.type, str(u.dtype), (M @ u).tolist())
print("same", M.to(M.device) is M)
print("back", torch.ones(2).to(M.device).device.type)
print("asked", torch.zeros(1, device=torch.device("cpu")).device.type)
f = torch.compile(lambda m: torch.ones(2, dtype=m.dtype, device=m.device)
                  + m[0], backend="eager", fullgraph=True)
print("compiled", f(M).device.type)
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_device_read_off_a_host_tensor_is_its_place(tmp_path, mode):
    """`device=x.device` of a host tensor (torch.from_numpy's, which stays
    on the host in every mode) means where x is: in mode "accelerate" it
    is not a "cpu" request sent to the accelerator, which would put the new
    tensor (in float32) beside a host float64 one they are used with, and
    `x.to(x.device)` stays the tensor itself. The program's own
    torch.device("cpu") stays a request (docs/policy.md, the table)."""
    proc = launch(tmp_path, HOST_PLACE, mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert got["like"] == "cpu torch.float64 [2.0, 2.0]"
    assert got["same"] == "True"
    assert got["back"] == "cpu"
    assert got["compiled"] == "cpu"
    assert got["asked"] == ("simaccel" if mode == "accelerate" else "cpu")


# ---- a CUDA device past the ones really there ------------------------------

SECOND_GPU = """
import torch
import TorchDevice
torch.cuda.set_device(1)            # rank 1's line under torchrun
f = torch.compile(lambda t: t * 2, backend="eager")
y = f(torch.ones(2, device="cuda"))
print("selected", torch.cuda.current_device(),
      torch.accelerator.current_device_index())
print("computed", y.device.type, y.tolist())
"""


@pytest.mark.parametrize("target", ["accelerator", "cpu"])
def test_compiling_after_selecting_a_second_cuda_device(tmp_path, target):
    """Two "cuda" devices shown (a rank of two under torchrun), one device
    really there: torch.cuda.set_device(1) and then torch.compile, with
    "cuda" on the device (profile accelerator) or on the host beside it
    (TORCHDEVICE_TARGET=cpu, as on a Mac).  Dynamo takes the current stream
    of the accelerator really there when it starts tracing; it asked for
    device 1, which does not exist ("Invalid device index 1").  The program
    still sees the device it selected (docs/masquerade.md)."""
    env = dict(ACCEL_ENV, TORCHDEVICE_DEVICE_COUNT="2",
               TORCHDEVICE_TARGET=target, PYTHONWARNINGS="ignore")
    proc = run_python(SECOND_GPU, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert got["selected"] == "1 1"
    assert got["computed"] == \
        ("simaccel" if target == "accelerator" else "cpu") + " [2.0, 2.0]"
