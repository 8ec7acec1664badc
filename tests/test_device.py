"""torch.device redirection on this machine (profile cpu; profile
accelerator in `make test-accel`, where TARGET is the simulated device):
the real type stays in place, only construction is redirected.  A device
built for "cuda" or "mps" is the device really used and reads, to the
program, as the kind it asked for (docs/policy.md, "What a device reads
as")."""
from __future__ import annotations

import copy
import pickle
import typing

import pytest
import torch

import TorchDevice
from conftest import HAS_CUDA, TARGET, run_python

pytestmark = pytest.mark.skipif(HAS_CUDA, reason="profile cpu expectations")
# Where accelerator requests land in this run, and how torch spells it.
WHERE = TARGET.type
SPELLED = str(TARGET)


def shown(kind: str, form=repr, index: typing.Optional[int] = None) -> str:
    """What a device asked for as `kind` (with `index`, if one was asked
    for) reads as: what torch.device(kind, index) reads as on a machine
    that has that kind, whatever device really runs it."""
    if form is repr:
        return (f"device(type='{kind}')" if index is None
                else f"device(type='{kind}', index={index})")
    return kind if index is None else f"{kind}:{index}"


def asked_index(args) -> typing.Optional[int]:
    if isinstance(args[0], int):
        return args[0]
    if len(args) > 1:
        return args[1]
    return int(args[0].split(":")[1]) if ":" in args[0] else None


@pytest.mark.parametrize("args", [("cuda",), ("cuda", 1), ("cuda:3",),
                                  ("mps",), ("mps:0",), (0,), (2,)])
def test_accelerator_requests_become_cpu(args):
    d = torch.device(*args)
    assert d == TARGET
    assert type(d) is torch.device
    kind = args[0].split(":")[0] if isinstance(args[0], str) else "cuda"
    assert d.type == kind and d.index == asked_index(args)
    index = asked_index(args)
    assert repr(d) == shown(kind, repr, index)
    assert str(d) == f"{d}" == shown(kind, str, index)
    assert torch.zeros(1, device=d).device == TARGET


def _read_as(module_name: str, dev):
    """dev's type, str and repr read by code whose module is `module_name`."""
    scope = {"__name__": module_name}
    exec("def read(d):\n    return d.type, str(d), repr(d)\n", scope)
    return scope["read"](dev)


def test_a_device_reads_as_asked_to_the_program_only():
    d = torch.device("cuda")
    assert _read_as("user_code", d) == ("cuda", shown("cuda", str),
                                        shown("cuda"))
    # torch routes work by what it reads; TorchDevice reads the truth too.
    for module in ("torch.serialization", "torch.nn.modules.module",
                   "TorchDevice._amp"):
        assert _read_as(module, d) == (WHERE, SPELLED, repr(TARGET))
    # A device read off a tensor is torch's, and says where the tensor is.
    x = torch.ones(1, device=d)
    assert x.device.type == WHERE and str(x.device) == SPELLED
    # torch.device("cpu") reads as where it lands (the accelerator in mode
    # "accelerate"), devices of other kinds as themselves.
    assert torch.device("cpu").type == torch.zeros(0, device="cpu").device.type
    assert str(torch.device("meta")) == "meta"


def test_a_device_reads_the_index_it_was_asked_for():
    """torch.device("cuda", rank) reads as cuda:<rank> to the program, as on
    a machine with that many GPUs; torch's own code reads the device really
    used."""
    d = torch.device("cuda", 1)
    assert (d.index, str(d), repr(d)) == (1, "cuda:1",
                                          "device(type='cuda', index=1)")
    # Code that rebuilds a device from its parts (it failed with
    # "Invalid device string: 'cuda:None'").
    assert torch.device(f"{d.type}:{d.index}") is d
    assert torch.device(d.type, d.index) is d
    assert torch.device("cuda:1") is d and torch.device(1) is d
    assert torch.device("cuda:2") is not d and torch.device("cuda:2").index == 2
    assert d == TARGET and torch.zeros(1, device=d).device == TARGET
    scope = {"__name__": "torch.nn.modules.module"}
    exec("def read(d):\n    return d.index, str(d)\n", scope)
    assert scope["read"](d) == (TARGET.index, SPELLED)
    # A move to it is an accelerator request (docs/policy.md, "Moves copy").
    x = torch.ones(2)
    assert TorchDevice._tdcore.device_intent(d) == "accelerator"
    assert x.to(d) is not x and x.to(d).cpu() is not None


def test_selecting_a_device_by_the_device_asked_for(restore_config):
    c = torch.cuda
    TorchDevice.configure(device_count=2)
    try:
        one = torch.device("cuda", 1)
        c.set_device(one)
        assert c.current_device() == 1
        c.set_device(torch.device("cuda:0"))
        assert c.current_device() == 0
        with c.device(one):
            assert c.current_device() == 1
        assert c.current_device() == 0
        assert c._get_device_index(one) == 1
    finally:
        TorchDevice.configure(device_count=None)


def test_threads_asking_for_one_index_get_one_device():
    import threading

    got = []
    barrier = threading.Barrier(8)

    def ask():
        barrier.wait()
        got.append(torch.device("cuda:7"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(d is got[0] for d in got)
    assert str(got[0]) == "cuda:7"


def test_code_written_for_cuda_gets_past_its_checks():
    """What Lightning's CUDA accelerator checks before it starts, and what
    programs pick their CUDA path by (the masquerade answers that path)."""
    for d in (torch.device("cuda"), torch.device("cuda", 0), torch.device(0),
              torch.device(type="cuda"),
              torch.accelerator.current_accelerator()):
        if d.type != "cuda":
            raise AssertionError(f"Device should be GPU, got {d} instead")
        assert "cuda" in str(d) and d == TARGET
    device = torch.device("cuda")
    torch.cuda.set_device(device)
    use_amp = device.type == "cuda"
    with torch.autocast(device_type=device.type, enabled=use_amp):
        y = torch.nn.Linear(4, 4).to(device)(torch.ones(2, 4, device=device))
    assert y.device == TARGET


def test_copies_and_pickles_are_the_same_device():
    d = torch.device("cuda")
    assert copy.deepcopy(d) is d and copy.copy(d) is d
    assert pickle.loads(pickle.dumps(d)) is d
    assert torch.device(d) is d and torch.device(str(d)) is d
    m = torch.device("mps")
    assert pickle.loads(pickle.dumps(m)).type == "mps"


def test_the_truth_for_everyone_when_truthful(restore_config):
    d = torch.device("cuda")
    TorchDevice.configure(cuda_truthful=True)
    assert d.type == WHERE and str(d) == SPELLED
    TorchDevice.configure(cuda_truthful=False, truth_for=("user_pkg",))
    assert _read_as("user_pkg.sub", d)[0] == WHERE
    assert _read_as("user_pkg_other", d)[0] == "cuda"


def test_disable_shows_the_truth_and_gives_torch_its_own_back():
    d = torch.device("cuda")
    names = ("type", "__reduce__", "__str__", "__repr__")
    TorchDevice.disable()
    try:
        native = {n: torch.device.__dict__[n] for n in names}
        assert d.type == WHERE and repr(d) == repr(TARGET)
        TorchDevice.enable()
        assert torch.device.__dict__["type"] is not native["type"]
        assert torch.device("cuda").type == "cuda"
        TorchDevice.disable()
        assert all(torch.device.__dict__[n] is native[n] for n in names)
        assert str(torch.device("cuda")) == "cuda"
    finally:
        TorchDevice.enable()


def test_real_type_is_kept():
    d = torch.device("cuda")
    assert isinstance(d, torch.device)
    assert torch.device is torch._C.device
    assert (torch.device | None) == typing.Optional[torch.device]
    assert typing.get_args(typing.Optional[torch.device])[0] is torch.device
    from torch import device as aliased
    assert aliased("cuda") == TARGET and aliased("cuda").type == "cuda"
    assert torch.device.__new__(torch.device, "cuda") == TARGET


def test_meta_and_cpu_are_untouched():
    assert torch.device("meta").type == "meta"
    assert torch.device("cpu", 0) == torch.device("cpu:0")
    assert torch.device("xpu").type == "xpu"


def test_device_context_and_default_device():
    with torch.device("cuda"):
        assert torch.zeros(1).device.type == WHERE
    with torch.device("meta"):
        assert torch.zeros(1).device.type == "meta"
        assert torch.nn.Linear(2, 2).weight.device.type == "meta"
    torch.set_default_device("cuda")
    try:
        assert torch.get_default_device() == TARGET
        assert torch.ones(2).device.type == WHERE
    finally:
        torch.set_default_device(None)


def test_the_default_device_reads_as_asked():
    """Under set_default_device("cuda") torch.get_default_device() is
    cuda:0 on CUDA, the index filled with the current device; programs
    build tensors and generators on it and test its type
    (docs/policy.md, "What a device reads as")."""
    torch.set_default_device("cuda")
    try:
        d = torch.get_default_device()
        assert (d.type, d.index, str(d)) == ("cuda", 0, "cuda:0")
        assert d == TARGET
        x = torch.zeros(3, device=d)
        assert x.device == TARGET
        x.cpu().add_(1)                 # a copy on CUDA
        assert x.tolist() == [0.0, 0.0, 0.0]
        assert torch.Generator(device=d).device == TARGET
    finally:
        torch.set_default_device(None)
    with torch.device("cuda:1"):
        assert str(torch.get_default_device()) == "cuda:1"
    with torch.device("mps"):
        assert str(torch.get_default_device()) == "mps:0"
    with torch.device("meta"):
        assert torch.get_default_device() == torch.device("meta")
    with torch.device("cpu"):
        assert torch.get_default_device() == torch.device("cpu")
    assert torch.get_default_device() == torch.device("cpu")


class _Calls(torch.overrides.TorchFunctionMode):
    """A torch-function mode of the kind profilers and tracers push: it
    sees every torch call, torch.device(...) included, and passes it on."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(getattr(func, "__name__", func))
        return func(*args, **(kwargs or {}))


FORMS = [("cuda",), ("cuda:0",), ("cuda:1",), ("cuda:127",), ("mps",),
         ("mps:0",), ("cuda", 1), (0,), ("cpu",), ("cpu:0",), ("meta",)]


@pytest.mark.parametrize("args", FORMS, ids=[str(a) for a in FORMS])
def test_under_a_torch_function_mode_a_device_reads_as_asked(args):
    # The mode sees the call, and hands back the device the program gets
    # without one: the same object, reading the same.  It read "cpu" for
    # "cuda" (the mode's torch.device came back through the hook and was
    # read as a fresh device).
    plain = torch.device(*args)
    with _Calls() as mode:
        moded = torch.device(*args)
    # An ordinal is resolved before torch sees it: a CPU build's torch
    # would ask for its accelerator and fail.
    assert mode.seen == ([] if isinstance(args[0], int) else ["device"])
    assert (moded.type, moded.index, str(moded), repr(moded)) == \
        (plain.type, plain.index, str(plain), repr(plain))
    assert moded == plain
    if plain.type in ("cuda", "mps"):
        assert moded is plain


def test_torch_device_reads_as_asked_under_the_default_device():
    # torch.set_default_device("cuda") and `with torch.device("cuda")` push
    # a torch-function mode: code that then builds torch.device("cuda")
    # and checks its type must still see "cuda".
    forms = ["cuda", "cuda:1", "mps", "cpu"]
    plain = [str(torch.device(f)) for f in forms]
    assert plain[:3] == ["cuda", "cuda:1", "mps"]
    torch.set_default_device("cuda")
    try:
        assert [str(torch.device(f)) for f in forms] == plain
        assert torch.device("cuda").type == "cuda"
        assert torch.ones(1).device == TARGET
    finally:
        torch.set_default_device(None)
    with torch.device("cuda"):
        assert torch.device("cuda").type == "cuda"
        assert torch.device(0).index == 0


def test_pickle_names_torch_device_and_loads_without_torchdevice(tmp_path):
    d = torch.device("cuda")
    data = pickle.dumps(d)
    assert b"torch" in data and b"device" in data and b"TorchDevice" not in data
    path = tmp_path / "dev.pkl"
    path.write_bytes(pickle.dumps({"d": d, "m": torch.device("mps"),
                                   "i": torch.device("cuda", 1)}))
    proc = run_python(f"""
        import pickle, sys, torch
        obj = pickle.loads(open({str(path)!r}, 'rb').read())
        assert 'TorchDevice' not in sys.modules
        print(obj['d'], obj['m'], obj['i'])
    """)
    assert proc.returncode == 0, proc.stderr
    # What the program asked for, as a pickle made on CUDA holds.
    assert proc.stdout.split() == [shown("cuda", str), shown("mps", str),
                                   "cuda:1"]


def test_weights_only_load_of_devices(tmp_path):
    path = tmp_path / "devs.pt"
    torch.save({"d": torch.device("cuda"), "t": torch.ones(2, device="cuda")},
               path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["d"] == TARGET
    assert torch.equal(loaded["t"].cpu(), torch.ones(2).cpu())
    proc = run_python(f"""
        import torch, sys
        obj = torch.load({str(path)!r}, weights_only=True)
        assert 'TorchDevice' not in sys.modules
        print(obj['d'], obj['t'].sum().item())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [SPELLED, "2.0"]


def test_torchscript_device_annotation(tmp_path):
    # TorchScript needs source on disk.
    src = tmp_path / "scripted.py"
    src.write_text(
        "import torch\n"
        "import TorchDevice\n"
        "@torch.jit.script\n"
        "def move(x: torch.Tensor, device: torch.device) -> torch.Tensor:\n"
        "    return x.to(device) * 2\n"
        "print(move(torch.ones(2), torch.device('cuda')).device)\n")
    proc = run_python(script=src)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == SPELLED


def test_cpu_minus_one_toggles_override(restore_config):
    TorchDevice._tdcore.set_cpu_override(False)
    assert torch.device("cpu:-1").type == "cpu"
    assert TorchDevice.policy()["cpu_override"] is True
    assert torch.device("cpu", -1).type == "cpu"
    assert TorchDevice.policy()["cpu_override"] is False


@pytest.mark.parametrize("args, exc, words", [
    (("cuda:x",), RuntimeError, "Invalid device string: 'cuda:x'"),
    (("nonsense",), RuntimeError, "device type at start of device string"),
    (("cuda", -2), RuntimeError, "must not be negative"),
    (("cuda:01",), RuntimeError, "Invalid device string"),
    ((" cuda",), RuntimeError, "Invalid device string"),
    ((1.5,), TypeError, "received an invalid combination of arguments"),
    ((True,), TypeError, "received an invalid combination of arguments"),
    ((), TypeError, "received an invalid combination of arguments"),
])
def test_bad_devices_raise_like_torch(args, exc, words, restore_config):
    before = TorchDevice.policy()["cpu_override"]
    with pytest.raises(exc) as info:
        torch.device(*args)
    assert words in str(info.value)
    assert TorchDevice.policy()["cpu_override"] == before
    # Same type and message as torch itself.
    TorchDevice.disable()
    try:
        with pytest.raises(exc) as native:
            torch.device(*args)
    finally:
        TorchDevice.enable()
    assert str(native.value) == str(info.value)


def test_keyword_forms():
    assert torch.device(type="cuda", index=1) == TARGET
    assert torch.device(type="cuda") == TARGET


def _construct_as(module_name: str, *args):
    """torch.device(*args) called from code whose module is `module_name`."""
    scope = {"__name__": module_name, "torch": torch}
    exec("def make(*a):\n    return torch.device(*a)\n", scope)
    return scope["make"](*args)


@pytest.mark.parametrize("args", [("mps:0",), ("cuda",), ("cuda", 1)])
def test_torch_internal_devices_are_the_truth(args):
    # e.g. torch/amp/grad_scaler.py compares against torch.device("mps:0").
    truth = _construct_as("torch.amp.grad_scaler", *args)
    assert truth.type == args[0].split(":")[0]
    assert _construct_as("user_module", *args) == TARGET


@pytest.mark.parametrize("module_name", [
    "torch.nn.modules.linear", "torch.utils._device",
    "torch._dynamo.variables.torch", "torch.fx.graph_module",
    "torch._inductor.lowering", "torch.jit._script",
])
def test_code_run_for_the_user_is_redirected(module_name):
    # Layers, the default-device context and the compilers act for the user.
    assert _construct_as(module_name, "cuda") == TARGET
