"""Install and teardown are symmetric (docs/reliability.md).

Every step of enabling (publishing the installation, hooking the tp_new
slot of torch.device, then what its objects read as, the tp_new slot of
torch.Generator, torch.Stream, torch.Event, then the patch table) has its undo, run in reverse order on any failure and at
module teardown.  A failure injected at each slot step leaves torch
exactly as it was; a type that torch calls through a vectorcall entry
(which would bypass the hook) is refused with a clear error; tearing a
module down gives torch its slots back; and an interpreter that exits with
TorchDevice enabled, while atexit handlers and finalizers still call
redirected APIs, exits 0.
"""
from __future__ import annotations

import gc
import importlib.util
import textwrap

import pytest
import torch

import TorchDevice
from TorchDevice import _patches, _tdcore
from conftest import run_python

NAMESPACES = (
    "torch", "torch.device", "torch.Tensor", "torch.nn.Module", "torch.cuda",
    "torch.cuda.streams", "torch.cuda.memory", "torch.mps",
    "torch.backends.mps", "torch.accelerator", "torch.jit",
    "torch.UntypedStorage", "torch.TypedStorage", "torch.distributed",
    "torch.utils.data._utils.worker",
)


def _resolve(path: str):
    obj = torch
    for part in path.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def _used(kind: str) -> str:
    """The type of the device a torch.device(kind) really is."""
    return torch.zeros(0, device=torch.device(kind)).device.type


def snapshot():
    """What TorchDevice can change: every attribute of the namespaces it
    patches (by identity), the hooked slots, and what torch.device,
    torch.Generator, torch.Stream and torch.Event build for "cuda".

    The behaviour is read first: on an NVIDIA GPU its first use of CUDA
    initializes torch.cuda, which fills attributes of torch's own."""
    behaviour = []
    for make in (lambda: repr(torch.device("cuda")),
                 lambda: _used("cuda"),
                 lambda: torch.Generator(device="cuda").device.type,
                 lambda: type(torch.Stream("cuda")).__module__,
                 lambda: type(torch.Event("cuda")).__module__):
        try:
            behaviour.append(make())
        except Exception as exc:  # noqa: BLE001 - native errors compared
            behaviour.append(type(exc).__name__)
    attrs = {}
    for path in NAMESPACES:
        ns = _resolve(path)
        attrs[path] = {k: id(v) for k, v in vars(ns).items()}
    return attrs, _tdcore.hooked_slots(), behaviour


@pytest.fixture
def disabled(restore_config):
    TorchDevice.disable()
    yield
    _tdcore._inject_install_failure(None)


@pytest.mark.parametrize("step", _tdcore.install_steps())
def test_failure_at_each_step_leaves_torch_as_it_was(disabled, step):
    before = snapshot()
    assert before[1] == ()
    _tdcore._inject_install_failure(step)
    with pytest.raises(RuntimeError, match=f"injected failure hooking {step}"):
        TorchDevice.enable()
    _tdcore._inject_install_failure(None)
    assert not TorchDevice.is_enabled()
    assert _tdcore.installation() is None
    after = snapshot()
    assert after[1] == before[1] and after[2] == before[2]
    for path in NAMESPACES:
        assert after[0][path] == before[0][path], path
    TorchDevice.enable()
    assert _used("cuda") == TorchDevice.policy()["device"]
    assert _tdcore.hooked_slots() == _tdcore.install_steps()


def test_a_type_with_vectorcall_is_refused(disabled):
    """`dict` is called through its vectorcall entry, as a future torch
    type might be: hooking its tp_new would change nothing, silently."""
    before = snapshot()
    objects = dict(_patches.core_objects(), generator_type=dict)
    with pytest.raises(RuntimeError, match=r"torch.Generator \(dict\).*"
                       r"vectorcall.*TorchDevice is not enabled"):
        _tdcore.install(**objects)
    assert snapshot() == before
    assert _tdcore.installation() is None


def test_module_teardown_gives_the_slots_back(disabled):
    """A second instance of the extension module installs, then is
    collected: its teardown undoes every hook, Stream and Event too."""
    spec = importlib.util.find_spec("TorchDevice._tdcore")
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    other.install(**_patches.core_objects())
    other.streams_setup(generic_stream=torch.Stream,
                        generic_event=torch.Event)
    assert _tdcore.hooked_slots() == _tdcore.install_steps()
    assert _used("cuda") == TorchDevice.policy()["device"]
    del other, spec
    gc.collect()
    assert _tdcore.hooked_slots() == ()
    assert torch.device("cuda").type == "cuda"


def test_exit_with_redirected_calls_in_atexit_and_finalizers():
    code = textwrap.dedent("""
        import atexit, gc, logging, sys
        import torch, TorchDevice
        TorchDevice.configure(log_level=logging.INFO)

        def use(tag):
            d = torch.device("cuda")
            z = torch.zeros(2, device="cuda").to("cuda")
            torch.cuda.memory_allocated()
            torch.cuda.Event()
            torch.Generator(device="cuda")
            print(tag, torch.zeros(0, device=d).device.type, z.device.type,
                  flush=True)

        class Finalized:
            def __del__(self):
                use("finalizer")

        class Cycle:
            def __init__(self):
                self.me = self
            def __del__(self):
                use("cycle")

        keep = Finalized()          # dies when the module is torn down
        Cycle()                     # left for the collector at exit
        atexit.register(use, "atexit")
        use("main")
    """)
    proc = run_python(code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = TorchDevice.policy()["device"]
    assert f"main {profile} {profile}" in proc.stdout
    assert f"atexit {profile} {profile}" in proc.stdout
    assert f"cycle {profile} {profile}" in proc.stdout
    assert f"finalizer {profile} {profile}" in proc.stdout
    assert "Segmentation" not in proc.stderr and "Fatal" not in proc.stderr
