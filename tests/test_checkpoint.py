"""Checkpoints written on CUDA load under TorchDevice; checkpoints written
under TorchDevice load without it (docs/compile-checkpoints-distributed.md)."""
from __future__ import annotations

import json

import pytest
import torch

import TorchDevice
from conftest import HAS_CUDA, HAS_MPS, TARGET, host, run_python

pytestmark = pytest.mark.skipif(
    HAS_CUDA or HAS_MPS, reason="expectations of the cpu profile (and of "
    "the accelerator profile in make test-accel)")

# Writes a checkpoint exactly as torch.save does on an NVIDIA machine: a
# tagger ahead of torch's own names every storage "cuda:0" (the tag is all
# that differs; the bytes are written from the host either way).
WRITE_CUDA_CHECKPOINT = '''
import sys, torch
torch.serialization.register_package(1, lambda storage: "cuda:0",
                                     lambda storage, location: None)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
torch.save({"model": model.state_dict(), "step": 7,
            "extra": torch.arange(6.).reshape(2, 3)}, sys.argv[1])
torch.save(model, sys.argv[2])            # a whole module (weights_only=False)
'''


@pytest.fixture(scope="module")
def cuda_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    state, whole = d / "cuda_state.pt", d / "cuda_module.pt"
    proc = run_python(WRITE_CUDA_CHECKPOINT, str(state), str(whole))
    assert proc.returncode == 0, proc.stderr
    return state, whole


def _expected():
    torch.manual_seed(0)
    with TorchDevice.cpu_override():
        model = torch.nn.Sequential(torch.nn.Linear(3, 4),
                                    torch.nn.BatchNorm1d(4))
    return model.state_dict()


def test_the_file_is_cuda_tagged(cuda_checkpoint):
    """Without TorchDevice, torch itself refuses it on this machine."""
    state, _ = cuda_checkpoint
    proc = run_python("import sys, torch; torch.load(sys.argv[1])", str(state))
    assert proc.returncode != 0
    assert "CUDA" in proc.stderr


MAP_LOCATIONS = {
    "none": None,
    "str cuda": "cuda",
    "str cuda:0": "cuda:0",
    "device cuda": torch.device("cuda"),
    "dict": {"cuda:0": "cuda:1"},
    "callable storage.cuda()": lambda storage, loc: storage.cuda(),
    "callable keep": lambda storage, loc: storage,
}


@pytest.mark.parametrize("weights_only", [True, False])
@pytest.mark.parametrize("where", list(MAP_LOCATIONS))
def test_cuda_checkpoint_loads(cuda_checkpoint, where, weights_only):
    state, _ = cuda_checkpoint
    kwargs = {"weights_only": weights_only}
    if MAP_LOCATIONS[where] is not None:
        kwargs["map_location"] = MAP_LOCATIONS[where]
    ckpt = torch.load(state, **kwargs)
    expected = _expected()
    # Where "cuda:0" storages land; a callable keeping the host storage
    # keeps it there, as on CUDA.
    where = "cpu" if where == "callable keep" else TARGET.type
    assert ckpt["step"] == 7
    assert torch.equal(host(ckpt["extra"]), host(torch.arange(6.).reshape(2, 3)))
    assert ckpt["extra"].device.type == where
    for name, value in expected.items():
        assert torch.equal(host(ckpt["model"][name]), value), name
        assert ckpt["model"][name].device.type == where


@pytest.mark.parametrize("weights_only", [True, False])
@pytest.mark.parametrize("where", [w for w in MAP_LOCATIONS
                                   if w != "callable keep"])
def test_tensors_loaded_onto_cuda_are_copied_by_cpu(cuda_checkpoint, where,
                                                    weights_only):
    """Loaded onto "cuda", a tensor's `.cpu()` is a copy, as on CUDA: a
    program editing it leaves the loaded weights alone (docs/policy.md,
    "Moves copy")."""
    state, _ = cuda_checkpoint
    kwargs = {"weights_only": weights_only}
    if MAP_LOCATIONS[where] is not None:
        kwargs["map_location"] = MAP_LOCATIONS[where]
    if where == "device cuda":
        # built by this installation (a test before may have re-enabled)
        kwargs["map_location"] = torch.device("cuda")
    ckpt = torch.load(state, **kwargs)
    weight = ckpt["model"]["0.weight"]
    before = host(weight).clone()
    on_host = weight.cpu()
    on_host.add_(1)
    assert torch.equal(host(weight), before)
    assert on_host.cuda() is not on_host


def test_default_is_weights_only(cuda_checkpoint):
    _, whole = cuda_checkpoint
    with pytest.raises(Exception, match="weights_only"):
        torch.load(whole)
    module = torch.load(whole, weights_only=False)
    assert module[0].weight.device == TARGET


def test_load_state_dict_into_a_cuda_model(cuda_checkpoint):
    state, _ = cuda_checkpoint
    model = torch.nn.Sequential(torch.nn.Linear(3, 4),
                                torch.nn.BatchNorm1d(4)).cuda()
    model.load_state_dict(torch.load(state)["model"])
    for name, value in _expected().items():
        assert torch.equal(host(model.state_dict()[name]), value)


def test_written_here_loads_without_torchdevice(tmp_path):
    path = tmp_path / "here.pt"
    torch.manual_seed(3)
    model = torch.nn.Linear(3, 2).cuda()
    torch.save({"model": model.state_dict(), "device": torch.device("cuda"),
                "x": torch.ones(2, device="cuda")}, path)
    proc = run_python('''
import json, sys, torch
ckpt = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({"weight": ckpt["model"]["weight"].tolist(),
                  "device": str(ckpt["device"]), "x": ckpt["x"].tolist(),
                  "td": "TorchDevice" in sys.modules}))
''', str(path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["td"] is False
    assert out["weight"] == model.weight.tolist()
    assert out["x"] == [1.0, 1.0]
    assert out["device"] == str(TARGET)     # where it really was


def test_disabled_torchdevice_leaves_loading_to_torch(cuda_checkpoint,
                                                      restore_config):
    state, _ = cuda_checkpoint
    TorchDevice.disable()
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(state)
    TorchDevice.enable()
    assert torch.load(state)["step"] == 7


@pytest.mark.parametrize("where", ["none", "str cuda", "dict"])
def test_report_names_torch_load_only(cuda_checkpoint, where,
                                      restore_config):
    """Loading a CUDA checkpoint is recorded as torch.load at the user's
    line, counted once per call as every row counts calls (it was counted
    once per storage: a model's load read as hundreds of calls); the device
    the loader resolves for each storage is not a torch.device call of the
    user's."""
    state, _ = cuda_checkpoint
    kwargs = {}
    if MAP_LOCATIONS[where] is not None:
        kwargs["map_location"] = MAP_LOCATIONS[where]
    TorchDevice.clear_report()
    TorchDevice.configure(report=True)
    try:
        for _ in range(2):
            ckpt = torch.load(state, **kwargs)
        records = TorchDevice._tdcore.records()
    finally:
        TorchDevice.configure(report=False)
        TorchDevice.clear_report()
    assert len(ckpt["model"]) + 1 > 2          # several storages a call
    apis = {key[3] for key in records}
    assert apis == {"torch.load"}, records
    assert list(records.values()) == [2], records


def test_rng_states_restored_from_a_checkpoint(tmp_path):
    """A resumable CUDA script saves torch.get_rng_state() and
    torch.cuda.get_rng_state_all(), loads them with map_location="cuda" and
    restores them with `.cpu()`.  Where accelerate mode keeps that `.cpu()`
    on the accelerator, every setter still gets the host state it needs, and
    the draws repeat."""
    path = tmp_path / "rng.pt"
    torch.manual_seed(3)
    torch.save({"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all()}, path)
    with TorchDevice.cpu_override():
        expected_host = torch.rand(4)
    expected_cuda = torch.rand(4, device="cuda")
    ck = torch.load(path, map_location="cuda")
    assert ck["cpu"].device == TARGET
    setters = [
        (torch.set_rng_state,
         lambda: torch.cuda.set_rng_state_all([s.cpu() for s in ck["cuda"]])),
        (torch.random.set_rng_state,
         lambda: torch.cuda.set_rng_state(ck["cuda"][0].cpu())),
    ]
    for set_host, set_cuda in setters:
        # Where "cuda" is the CPU, both states are the one generator's:
        # the draws come in the order they were made.
        set_host(ck["cpu"].cpu())
        set_cuda()
        with TorchDevice.cpu_override():
            assert torch.equal(torch.rand(4), expected_host)
        assert torch.equal(torch.rand(4, device="cuda"), expected_cuda)


def _cuda_generator_state(seed: int, offset: int, legacy: bool = False):
    """What torch.cuda.get_rng_state() returns on an NVIDIA GPU: the
    Philox seed and offset, 16 bytes (before torch 2.1: after 800 bytes of
    retired MTGP32 states)."""
    state = torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8)
    if legacy:
        state = torch.cat([torch.full((800,), 255, dtype=torch.uint8), state])
    return state


def test_rng_state_saved_on_an_nvidia_gpu_seeds_the_generator(tmp_path):
    """A run resumed from a checkpoint written on an NVIDIA GPU restores
    CUDA's generator state, which no other generator can take: the
    generator is seeded from it, with a warning naming the line, and the run
    goes on (docs/masquerade.md)."""
    path = tmp_path / "gpu_rng.pt"
    torch.save({"cuda": _cuda_generator_state(1234, 0),
                "cuda_later": _cuda_generator_state(1234, 8192),
                "cuda_2_0": [_cuda_generator_state(1234, 0, legacy=True)]},
               path)
    ck = torch.load(path, map_location="cuda")
    torch.cuda.manual_seed(1234)
    after_seeding = torch.rand(5, device="cuda")
    TorchDevice.clear_report()
    TorchDevice.configure(report=True)
    try:
        with pytest.warns(UserWarning, match=r"NVIDIA GPU's generator "
                          r"\(seed 1234, offset 0\)") as caught:
            torch.cuda.set_rng_state(ck["cuda"].cpu())
        assert caught[0].filename == __file__
        # Offset 0 is what torch.cuda.manual_seed(1234) leaves on the GPU.
        assert torch.equal(torch.rand(5, device="cuda"), after_seeding)
        with pytest.warns(UserWarning, match="offset 0"):
            torch.cuda.set_rng_state_all([s.cpu() for s in ck["cuda_2_0"]])
        assert torch.equal(torch.rand(5, device="cuda"), after_seeding)
        # A later checkpoint does not repeat the stream of an earlier one,
        # and the same checkpoint always resumes the same way.
        with pytest.warns(UserWarning, match="offset 8192"):
            torch.cuda.set_rng_state(ck["cuda_later"].cpu())
        later = torch.rand(5, device="cuda")
        assert not torch.equal(later, after_seeding)
        with pytest.warns(UserWarning):
            torch.cuda.set_rng_state(ck["cuda_later"].cpu())
        assert torch.equal(torch.rand(5, device="cuda"), later)
        records = TorchDevice._tdcore.records()
    finally:
        TorchDevice.configure(report=False)
        TorchDevice.clear_report()
    assert {(key[3], key[4]) for key in records} >= {
        ("torch.cuda.set_rng_state", "emulated"),
        ("torch.cuda.set_rng_state_all", "emulated")}, records
    # The generator's own states still restore exactly, and a state of
    # neither kind is still torch's error.
    own = torch.cuda.get_rng_state()
    expected = torch.rand(5, device="cuda")
    torch.cuda.set_rng_state(own)
    assert torch.equal(torch.rand(5, device="cuda"), expected)
    with pytest.raises(RuntimeError):
        torch.cuda.set_rng_state(torch.zeros(17, dtype=torch.uint8))
