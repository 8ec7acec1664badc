"""enable/disable, configuration, the TorchDevice object and the override."""
from __future__ import annotations

import logging

import pytest
import torch

import TorchDevice
from TorchDevice import TorchDevice as TD
from TorchDevice import _patches, _tdcore
from conftest import HAS_CUDA, PROFILE, TARGET, run_python

# The host, and the device "cuda" requests land on (the CPU itself on
# profile cpu; the accelerator on profile accelerator, where in the default
# mode a device-less or "cpu" request lands too).  torch.device("cpu") is
# itself redirected there in the default mode: the host device is built
# under the override.
with TorchDevice.cpu_override():
    CPU = torch.device("cpu")
cpu_profile = pytest.mark.skipif(HAS_CUDA, reason="CUDA redirected: "
                                 "profiles cpu and accelerator only")


def test_disable_restores_identical_originals(restore_config):
    applied = _patches.replaced()
    assert applied, "nothing was patched"
    TorchDevice.disable()
    for owner, name, orig, repl in applied:
        now = (owner.__dict__.get(name) if isinstance(owner, type)
               else getattr(owner, name))
        if isinstance(owner, type) and orig is not None \
                and name not in owner.__dict__:
            now = getattr(owner, name)
        assert now is orig or (orig is None and not hasattr(owner, name)), \
            (owner, name)
    assert torch.zeros is torch._C._VariableFunctions.zeros
    assert torch.Tensor.to is torch._C.TensorBase.to
    assert "to" not in torch.Tensor.__dict__
    assert not hasattr(torch.Tensor, "mps")
    assert not hasattr(torch.nn.Module, "mps")
    assert not _tdcore.hooks_installed()
    if not HAS_CUDA:
        # Native again: a CPU-only torch cannot allocate on CUDA.
        with pytest.raises((RuntimeError, AssertionError)):
            torch.zeros(1, device="cuda")
    assert torch.device("cuda").type == "cuda"
    assert torch.device("cuda") != torch.device("cpu")
    TorchDevice.enable()
    assert _tdcore.hooks_installed()
    # Asked for "cuda", it reads so; what lands there is on the device used.
    assert torch.device("cuda").type == "cuda"
    assert torch.zeros(1, device=torch.device("cuda")).device.type != "cuda" \
        or HAS_CUDA
    # Re-enabling reuses the same replacement objects.
    assert [r for *_, r in _patches.replaced()] == [r for *_, r in applied]


def test_enable_twice_and_import_twice_change_nothing():
    before = [(o, n, r) for o, n, _, r in _patches.replaced()]
    TorchDevice.enable()
    import importlib
    import TorchDevice as again
    importlib.import_module("TorchDevice")
    assert again is TorchDevice
    assert [(o, n, r) for o, n, _, r in _patches.replaced()] == before


def test_import_order_and_silence():
    proc = run_python("""
        import TorchDevice
        import torch
        print(torch.zeros(1, device='cuda').device.type)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip() == _patches.device_type_of(PROFILE)


@cpu_profile
def test_cpu_override_scoped(restore_config):
    assert TorchDevice.policy()["cpu_override"] is False
    with TorchDevice.cpu_override():
        assert TorchDevice.policy()["cpu_override"] is True
        assert torch.zeros(1).device == CPU
        with pytest.raises(ZeroDivisionError):
            with TorchDevice.cpu_override(False):
                assert TorchDevice.policy()["cpu_override"] is False
                1 / 0
        assert TorchDevice.policy()["cpu_override"] is True
    assert TorchDevice.policy()["cpu_override"] is False


def test_bad_input_leaves_override_untouched(restore_config):
    for state in (False, True):
        _tdcore.set_cpu_override(state)
        for bad in (lambda: torch.device("cuda:x"),
                    lambda: torch.device("nonsense"),
                    lambda: torch.device("cuda", -2),
                    lambda: torch.zeros(2, device=3.5),
                    lambda: torch.ones(1).to("cud"),
                    lambda: torch.device("cpu:-1x")):
            with pytest.raises((RuntimeError, TypeError)):
                bad()
            assert _tdcore.get_cpu_override() is state


class TestConfiguration:
    def test_api_validates_and_applies(self, restore_config):
        cfg = TorchDevice.configure(mode="cpu-stays-cpu")
        assert cfg.mode == "cpu-stays-cpu"
        assert TorchDevice.policy()["mode"] == "cpu-stays-cpu"
        with pytest.raises(ValueError, match="mode"):
            TorchDevice.configure(mode="fast")
        assert TorchDevice.config().mode == "cpu-stays-cpu"
        with pytest.raises(ValueError, match="float64"):
            TorchDevice.configure(float64="maybe")
        with pytest.raises(TypeError, match="unknown"):
            TorchDevice.configure(colour="blue")
        with pytest.raises(ValueError, match="log level"):
            TorchDevice.configure(log_level="LOUD")

    @cpu_profile
    def test_target_must_exist(self, restore_config):
        with pytest.raises(ValueError, match="not available"):
            TorchDevice.configure(target="cuda")
        with pytest.raises(ValueError, match="not available"):
            TorchDevice.configure(target="mps")
        assert TorchDevice.configure(target="cpu").target == "cpu"

    def test_environment_variables(self):
        proc = run_python("""
            import TorchDevice
            print(TorchDevice.config())
            print(TorchDevice.policy())
        """, env={"TORCHDEVICE_MODE": "accelerate",
                  "TORCHDEVICE_FLOAT64": "error",
                  "TORCHDEVICE_LOG_LEVEL": "debug",
                  "TORCHDEVICE_TARGET": "cpu"})
        assert proc.returncode == 0, proc.stderr
        assert "mode='accelerate'" in proc.stdout
        assert "'float64': 'error'" in proc.stdout
        assert "log_level=10" in proc.stdout
        assert "target='cpu'" in proc.stdout

    def test_a_capability_record_not_applied_is_said_once(self):
        """TORCHDEVICE_CAPABILITIES applies on profile accelerator only
        (docs/configuration.md); elsewhere a program must not look run with
        another device's rules without a word."""
        proc = run_python("""
            import TorchDevice
            TorchDevice.enable()
            TorchDevice.configure(mode="accelerate")
            print(TorchDevice.hardware_profile(),
                  TorchDevice.policy()["capabilities"])
        """, env={"TORCHDEVICE_CAPABILITIES": "mps"})
        assert proc.returncode == 0, proc.stderr
        profile, used = proc.stdout.split()
        said = [line for line in proc.stderr.splitlines()
                if "capability record 'mps' not applied" in line]
        if profile == "accelerator":
            assert used == "mps" and said == []
        else:
            assert used == profile
            assert len(said) == 1, proc.stderr
            assert f"on profile '{profile}'" in said[0]

    def test_bad_environment_warns_and_uses_defaults(self):
        proc = run_python("""
            import TorchDevice
            print(TorchDevice.config().mode)
        """, env={"TORCHDEVICE_MODE": "sideways"})
        assert proc.returncode == 0, proc.stderr
        assert "TORCHDEVICE" in proc.stderr and "sideways" in proc.stderr
        assert proc.stdout.strip() == "cpu-stays-cpu"   # docs/policy.md


@cpu_profile
class TestTorchDeviceObject:
    def test_default_and_requests(self):
        d = TD()
        assert isinstance(d.device, torch.device)
        assert d.device == TARGET and d.type == TARGET.type
        assert d.index == TARGET.index
        assert str(d) == str(TARGET)
        assert repr(d) == f"TorchDevice({TARGET!r})"
        c = TD("cuda")
        assert c.device == TARGET
        assert TD("cuda", 1).device == TARGET
        assert TD(torch.device("mps")).device == TARGET
        assert TD("meta").device == torch.device("meta")

    def test_accepted_wherever_a_device_is(self):
        d = TD("cuda")
        assert torch.zeros(2, device=d).device == TARGET
        m = torch.nn.Linear(2, 2).to(TD())
        assert m.weight.device == TARGET
        assert torch.ones(1).to(d).device == TARGET
        assert torch.device(d) == TARGET

    def test_control_through_the_class(self, restore_config):
        TD.disable()
        assert not TD.is_enabled()
        TD.enable()
        assert TD.is_enabled()

    def test_bad_request_raises_like_torch(self):
        with pytest.raises(RuntimeError, match="Invalid device string"):
            TD("cuda:x")


@cpu_profile
def test_logging_names_the_call_site(restore_config, caplog, tmp_path):
    TorchDevice.clear_report()
    TorchDevice.configure(log_level="INFO")
    with caplog.at_level(logging.INFO, logger="TorchDevice"):
        for _ in range(3):
            torch.zeros(2, device="cuda")      # one record, count 3
    rows = [r for r in TorchDevice.report() if r["api"].endswith("zeros")]
    assert len(rows) == 1
    assert rows[0]["count"] == 3
    assert rows[0]["file"] == __file__
    assert rows[0]["from"] == "cuda" and rows[0]["to"] == str(TARGET)
    messages = [r.getMessage() for r in caplog.records]
    hits = [m for m in messages if "torch.zeros" in m]
    assert len(hits) == 1 and f"{__file__}:" in hits[0]


@cpu_profile
def test_deprecated_cuda_amp_alias_is_reported_at_the_users_line(tmp_path):
    # torch.cuda.amp.GradScaler is wrapped by typing_extensions' @deprecated:
    # that shim's frame must not be taken for the user's.
    script = tmp_path / "amp_user.py"
    script.write_text(
        "import warnings\n"
        "import TorchDevice, torch\n"
        "TorchDevice.configure(report=True)\n"
        "warnings.simplefilter('ignore')\n"
        "scaler = torch.cuda.amp.GradScaler()\n"
        "with torch.cuda.amp.autocast():\n"
        "    pass\n"
        "class Region(torch.cuda.amp.autocast):\n"
        "    pass\n"
        "with Region(), torch.autocast('cuda'):\n"
        "    scaler = torch.amp.GradScaler('cuda')\n"
        "for r in TorchDevice.report():\n"
        "    print(r['file'], r['line'], r['api'])\n")
    proc = run_python(script=script)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows and all(ln.startswith(f"{script} ") for ln in rows), \
        proc.stdout
    # Each row names the API the line calls (torch.cuda.amp's classes are
    # subclasses of torch.amp's, which did the recording under its name).
    apis = {(int(ln.split()[1]), ln.split()[2]) for ln in rows}
    assert apis == {(5, "torch.cuda.amp.GradScaler"),
                    (6, "torch.cuda.amp.autocast"),
                    (10, "torch.cuda.amp.autocast"), (10, "torch.autocast"),
                    (11, "torch.amp.GradScaler")}, proc.stdout


@cpu_profile
def test_torch_calling_torch_cuda_is_not_reported(tmp_path):
    # torch.manual_seed seeds CUDA through torch.cuda.manual_seed_all: that
    # is torch's business, not a line the user has to port.
    script = tmp_path / "seeds.py"
    script.write_text(
        "import TorchDevice, torch\n"
        "TorchDevice.configure(report=True)\n"
        "torch.manual_seed(0)\n"
        "torch.cuda.manual_seed(1)\n"
        "for r in TorchDevice.report():\n"
        "    print(r['line'], r['api'], r['what'])\n")
    proc = run_python(script=script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["4 torch.cuda.manual_seed emulated"]


@cpu_profile
def test_enabling_does_not_import_psutil_until_it_is_needed():
    # psutil's import alone costs more than enabling TorchDevice: the CUDA
    # properties that need it (the CPU's, profile cpu) are built at first
    # use.  An accelerator's come from its device module.
    proc = run_python("""
        import sys, torch, TorchDevice
        print('psutil' in sys.modules)
        props = torch.cuda.get_device_properties(0)
        accel = TorchDevice._patches.accelerator_device()
        if accel is None:
            import psutil
            print(props.total_memory == psutil.virtual_memory().total,
                  props.multi_processor_count
                  == psutil.cpu_count(logical=False))
        else:
            own = torch.get_device_module(accel.type).get_device_properties(
                accel)
            print(props.total_memory == own.total_memory,
                  props.name == own.name)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]
