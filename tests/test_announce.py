"""No accelerator announced that is not honoured, and never two that are not
there (docs/masquerade.md, "Which accelerator is announced").

On a machine with neither CUDA nor MPS, user code is told about one kind:
CUDA by default, MPS with TORCHDEVICE_ANNOUNCE=mps.  For each announced
kind, every API whose use that answer invites runs; every availability
query of the other kind answers False.  Each setting runs in a fresh
process (the announced kind is fixed when TorchDevice is enabled)."""
from __future__ import annotations

import json

import pytest

from conftest import CUDA_BUILD, HAS_CUDA, HAS_MPS, run_python

pytestmark = pytest.mark.skipif(
    HAS_CUDA or HAS_MPS, reason="a machine with neither CUDA nor MPS")

# name -> Python expression run in the child; it must not raise, and where
# its value is a bool it must be True.
CUDA_APIS = {
    "torch.cuda.is_available()": "torch.cuda.is_available()",
    "torch.backends.cuda.is_built()": "torch.backends.cuda.is_built()",
    "torch.cuda.device_count()": "torch.cuda.device_count() >= 1",
    "torch.cuda.current_device()": "torch.cuda.current_device() == 0",
    "torch.cuda.set_device(0)": "torch.cuda.set_device(0) is None",
    "torch.cuda.get_device_name()": "bool(torch.cuda.get_device_name())",
    "torch.cuda.get_device_properties(0)":
        "torch.cuda.get_device_properties(0).total_memory > 0",
    "torch.cuda.get_device_capability()":
        "torch.cuda.get_device_capability() >= (7, 0)",
    "torch.cuda.get_arch_list()": "len(torch.cuda.get_arch_list()) > 0",
    "torch.cuda.get_allocator_backend()":
        "torch.cuda.get_allocator_backend() == 'native'",
    "torch.cuda.is_bf16_supported()":
        "isinstance(torch.cuda.is_bf16_supported(), bool)",
    "torch.cuda.memory_allocated()":
        "holding('cuda') and torch.cuda.memory_allocated() > 0",
    "torch.cuda.max_memory_allocated()":
        "holding('cuda') and torch.cuda.max_memory_allocated() > 0",
    "torch.cuda.memory_reserved()":
        "holding('cuda') and torch.cuda.memory_reserved() > 0",
    "torch.cuda.mem_get_info()": "torch.cuda.mem_get_info()[1] > 0",
    "torch.cuda.memory_stats()": "len(torch.cuda.memory_stats()) > 0",
    "torch.cuda.memory_summary()": "bool(torch.cuda.memory_summary())",
    "torch.cuda.reset_peak_memory_stats()":
        "torch.cuda.reset_peak_memory_stats() is None",
    "torch.cuda.empty_cache()": "torch.cuda.empty_cache() is None",
    "torch.cuda.manual_seed(0)": "torch.cuda.manual_seed(0) is None",
    "torch.cuda.get_rng_state()":
        "torch.cuda.set_rng_state(torch.cuda.get_rng_state()) is None",
    "torch.cuda.synchronize()": "torch.cuda.synchronize() is None",
    "torch.cuda.Event(enable_timing=True)": "timed(torch.cuda.Event, "
                                            "torch.cuda.synchronize)",
    "torch.cuda.Stream()": "stream_runs(torch.cuda.Stream())",
    "torch.cuda.current_stream()":
        "torch.cuda.current_stream().query() is True",
    "torch.Stream(device='cuda')": "stream_runs(torch.Stream(device='cuda'))",
    "torch.Event(device='cuda')": "event_runs(torch.Event(device='cuda'))",
    "torch.cuda.nvtx.range_push()":
        "torch.cuda.nvtx.range_push('x') == 0 and torch.cuda.nvtx.range_pop()"
        " == 0",
    "torch.autocast('cuda')": "autocast_runs('cuda')",
    "torch.amp.GradScaler('cuda')":
        "torch.amp.GradScaler('cuda').is_enabled()",
    "torch.accelerator.is_available()": "torch.accelerator.is_available()",
    "torch.accelerator.current_accelerator()":
        "torch.accelerator.current_accelerator() is not None",
    "torch.accelerator.device_count()":
        "torch.accelerator.device_count() >= 1",
    "torch.get_device_module('cuda')":
        "torch.get_device_module('cuda').is_available()",
    "tensor on 'cuda'": "tensor_runs('cuda')",
}

MPS_APIS = {
    "torch.backends.mps.is_available()": "torch.backends.mps.is_available()",
    "torch.backends.mps.is_built()": "torch.backends.mps.is_built()",
    "torch.mps.is_available()": "torch.mps.is_available()",
    "torch.mps.device_count()": "torch.mps.device_count() >= 1",
    "torch.mps.synchronize()": "torch.mps.synchronize() is None",
    "torch.mps.empty_cache()": "torch.mps.empty_cache() is None",
    "torch.mps.current_allocated_memory()":
        "holding('mps') and torch.mps.current_allocated_memory() > 0",
    "torch.mps.driver_allocated_memory()":
        "holding('mps') and torch.mps.driver_allocated_memory() > 0",
    "torch.mps.recommended_max_memory()":
        "torch.mps.recommended_max_memory() > 0",
    "torch.mps.set_per_process_memory_fraction(1.5)":
        "torch.mps.set_per_process_memory_fraction(1.5) is None",
    "torch.mps.manual_seed(0)": "torch.mps.manual_seed(0) is None",
    "torch.mps.seed()": "torch.mps.seed() is None",
    "torch.mps.get_rng_state()":
        "torch.mps.set_rng_state(torch.mps.get_rng_state()) is None",
    "torch.mps.Event(enable_timing=True)": "timed(torch.mps.Event, "
                                           "torch.mps.synchronize)",
    "torch.Stream(device='mps')": "stream_runs(torch.Stream(device='mps'))",
    "torch.Event(device='mps')": "event_runs(torch.Event(device='mps'))",
    "torch.autocast('mps')": "autocast_runs('mps')",
    "torch.amp.GradScaler('mps')": "torch.amp.GradScaler('mps').is_enabled()",
    "torch.accelerator.is_available()": "torch.accelerator.is_available()",
    "torch.accelerator.device_count()":
        "torch.accelerator.device_count() >= 1",
    "torch.get_device_module('mps')":
        "torch.get_device_module('mps').is_available()",
    "tensor on 'mps'": "tensor_runs('mps')",
    # What a Mac program asks once MPS is there (transformers'
    # is_torch_bf16_gpu_available() asks for macOS 14).
    "torch.backends.mps.is_macos_or_newer(14, 0)":
        "torch.backends.mps.is_macos_or_newer(14, 0)",
    "torch.backends.mps.is_macos13_or_newer()":
        "torch.backends.mps.is_macos13_or_newer()",
    "torch.mps.profiler.profile()": "mps_profiler_runs()",
    "torch.mps.profiler.metal_capture()": "metal_capture_runs()",
}

# Availability queries of each kind: False when it is not announced.
QUERIES = {
    "cuda": ["torch.cuda.is_available()", "torch.backends.cuda.is_built()"],
    "mps": ["torch.backends.mps.is_available()", "torch.mps.is_available()",
            "torch.backends.mps.is_built()"],
}

# Hard-coded device requests for either kind are redirected whatever is
# announced (the policy does not depend on it).
HARD_CODED = {
    "torch.zeros(device='cuda')": "tensor_runs('cuda')",
    "torch.zeros(device='mps')": "tensor_runs('mps')",
    "torch.Stream(device='mps')": "stream_runs(torch.Stream(device='mps'))",
    "torch.Stream(device='cuda')": "stream_runs(torch.Stream(device='cuda'))",
    "torch.autocast('cuda')": "autocast_runs('cuda')",
    "torch.autocast('mps')": "autocast_runs('mps')",
}

# torch.mps's actions (not its availability) work with CUDA announced: an
# MPS-written program that checks availability takes its other branch, one
# that does not is redirected like device="mps".
MPS_ACTIONS = {
    "torch.mps.synchronize()": "torch.mps.synchronize() is None",
    "torch.mps.manual_seed(0)": "torch.mps.manual_seed(0) is None",
    "torch.mps.current_allocated_memory()":
        "torch.mps.current_allocated_memory() >= 0",
    "torch.mps.empty_cache()": "torch.mps.empty_cache() is None",
    "torch.mps.device_count() == 0": "torch.mps.device_count() == 0",
    "torch.mps.profiler.profile()": "mps_profiler_runs()",
    # Timing with MPS's events, as a Mac program does after choosing "mps".
    "torch.mps.Event(enable_timing=True)": "timed(torch.mps.Event, "
                                           "torch.mps.synchronize)",
    "torch.mps.event.Event(enable_timing=True)":
        "timed(torch.mps.event.Event, torch.mps.synchronize)",
}

CHILD = r'''
import json, sys, warnings
import torch
import TorchDevice
warnings.simplefilter("error", UserWarning)   # "not available ... disabling"

def timed(event_cls, synchronize):
    a, b = event_cls(enable_timing=True), event_cls(enable_timing=True)
    a.record()
    torch.ones(64, 64, device="cuda") @ torch.ones(64, 64, device="cuda")
    b.record()
    synchronize()
    b.synchronize()
    return a.query() and a.elapsed_time(b) >= 0

def stream_runs(s):
    s.synchronize()
    return s.query()

def event_runs(e):
    e.record()
    e.synchronize()
    return e.query()

def autocast_runs(kind):
    # float16 becomes what the device computes (docs/policy.md, "Mixed
    # precision"): bfloat16 or float32 on a CPU, by what it has.
    from TorchDevice import _amp
    with torch.autocast(kind):
        y = torch.ones(2, 2, device=kind) @ torch.ones(2, 2, device=kind)
        return (torch.is_autocast_enabled(kind)
                and y.dtype == _amp._DTYPES[kind][torch.float16])

def mps_profiler_runs():
    with torch.mps.profiler.profile(mode="interval,event"):
        y = torch.ones(2, 2, device="mps") @ torch.ones(2, 2, device="mps")
    torch.mps.profiler.start()
    torch.mps.profiler.stop()
    try:
        torch.mps.profiler.start(mode="everything")
    except RuntimeError:
        return y.sum().item() == 8.0
    return False

def metal_capture_runs():
    if torch.mps.profiler.is_metal_capture_enabled():
        return False              # nothing here can capture Metal calls
    with torch.mps.profiler.metal_capture("trace"):
        assert not torch.mps.profiler.is_capturing_metal()
        y = torch.ones(2, device="mps") * 3
    return y.sum().item() == 6.0

HELD = []

def holding(kind):
    """A tensor kept on the device: a fresh process has nothing allocated
    there (a device's counters read 0, as CUDA's do)."""
    HELD.append(torch.ones(1 << 16, device=kind))
    return True

def tensor_runs(kind):
    return (torch.zeros(2, device=kind) + 1).sum().item() == 2

rows = json.loads(sys.argv[1])
out = {}
for name, expr in rows.items():
    try:
        value = eval(expr)
        out[name] = "ok" if value is not False else "False"
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(out))
'''


def _run(announce: str, rows: dict) -> dict:
    env = {"TORCHDEVICE_ANNOUNCE": announce} if announce != "default" else {}
    proc = run_python(CHILD, json.dumps(rows), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def answers():
    """What a fresh process answers, per announce setting."""
    table = {}
    for setting, kind in (("default", "cuda"), ("cuda", "cuda"),
                          ("mps", "mps")):
        apis = CUDA_APIS if kind == "cuda" else MPS_APIS
        other = "mps" if kind == "cuda" else "cuda"
        unannounced = {q: f"not {q}" for q in QUERIES[other]}
        # torch.mps's actions answer once the program has asked for "mps"
        # (below: before that, torch's own).
        actions = ({"asked for mps": "tensor_runs('mps')", **MPS_ACTIONS}
                   if kind == "cuda" else {})
        table[setting] = _run(setting, {**apis, **unannounced, **actions, **{
            f"hard-coded {k}": v for k, v in HARD_CODED.items()}})
    return table


CASES = ([("default", n) for n in CUDA_APIS] + [("cuda", n) for n in CUDA_APIS]
         + [("mps", n) for n in MPS_APIS])


@pytest.mark.parametrize("setting,name", CASES,
                         ids=[f"{s}:{n}" for s, n in CASES])
def test_every_api_of_the_announced_kind_runs(answers, setting, name):
    assert answers[setting][name] == "ok"


UNANNOUNCED = ([("default", q) for q in QUERIES["mps"]]
               + [("cuda", q) for q in QUERIES["mps"]]
               + [("mps", q) for q in QUERIES["cuda"]])


@pytest.mark.parametrize("setting,query", UNANNOUNCED,
                         ids=[f"{s}:{q}" for s, q in UNANNOUNCED])
def test_nothing_unannounced_answers_true(answers, setting, query):
    if CUDA_BUILD and query == "torch.backends.cuda.is_built()":
        # torch's own answer, left alone: this torch is built with CUDA.
        assert answers[setting][query] == "False"
        return
    assert answers[setting][query] == "ok"        # `not query` held


HARD = [(s, n) for s in ("default", "mps") for n in HARD_CODED]


@pytest.mark.parametrize("setting,name", HARD, ids=[f"{s}:{n}"
                                                    for s, n in HARD])
def test_hard_coded_requests_for_either_kind_are_redirected(answers, setting,
                                                            name):
    assert answers[setting][f"hard-coded {name}"] == "ok"


def test_pytorch_examples_device_choice_takes_the_cuda_branch():
    """pytorch/examples' device selection: CUDA first, then MPS, then CPU;
    with --no-cuda the MPS branch must not be taken on this machine."""
    proc = run_python("""
        import torch, TorchDevice
        def pick(no_cuda, no_mps=False):
            if not no_cuda and torch.cuda.is_available():
                return "cuda"
            if not no_mps and torch.backends.mps.is_available():
                return "mps"
            return "cpu"
        print(pick(False), pick(True))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cuda", "cpu"]


def test_invalid_announce_value_warns_and_uses_the_default():
    proc = run_python("""
        import warnings
        warnings.simplefilter("always")
        import torch, TorchDevice
        print(TorchDevice.config().announce, torch.cuda.is_available(),
              torch.backends.mps.is_available())
    """, env={"TORCHDEVICE_ANNOUNCE": "xpu"})
    assert proc.returncode == 0, proc.stderr
    assert "announce must be one of" in proc.stderr
    assert proc.stdout.split() == ["cuda", "True", "False"]


def test_announce_switches_at_run_time(restore_config):
    import torch
    import TorchDevice
    try:
        TorchDevice.configure(announce="mps")
        assert torch.backends.mps.is_available() is True
        assert torch.cuda.is_available() is False
        e = torch.mps.Event(enable_timing=True)
        e.record()
        e.synchronize()
    finally:
        TorchDevice.configure(announce="cuda")
    assert torch.cuda.is_available() is True
    assert torch.backends.mps.is_available() is False


ACTIONS = [(s, n) for s in ("default", "cuda") for n in MPS_ACTIONS]


@pytest.mark.parametrize("setting,name", ACTIONS,
                         ids=[f"{s}:{n}" for s, n in ACTIONS])
def test_mps_actions_work_while_cuda_is_announced(answers, setting, name):
    assert answers[setting][name] == "ok"


@pytest.mark.skipif(HAS_CUDA or HAS_MPS,
                    reason="CUDA is announced only where neither is present")
def test_mps_actions_are_torchs_own_until_the_program_asks_for_mps():
    """Where CUDA is announced, torch.mps answers an MPS-written program
    once it has asked for "mps"; before that its actions are torch's own,
    which raise on a machine without MPS.  DeepSpeed tells whether MPS is
    there by calling torch.mps.current_allocated_memory() and catching the
    RuntimeError: answered, it chose its MPS accelerator on a CPU-only
    machine and stopped ("Accelerator is not detected") where it runs
    natively (docs/masquerade.md)."""
    proc = run_python(r"""
        import torch
        import TorchDevice

        def answer(fn, *args):
            try:
                return repr(fn(*args))
            except RuntimeError as exc:
                return "RuntimeError: " + str(exc)

        try:                                  # DeepSpeed's detection
            torch.mps.current_allocated_memory()
            print("mps")
        except RuntimeError:
            print("cuda" if torch.cuda.is_available() else "cpu")
        for name in ("synchronize", "empty_cache", "driver_allocated_memory",
                     "recommended_max_memory", "seed", "get_rng_state"):
            print(name, answer(getattr(torch.mps, name)))
        print(answer(torch.mps.set_per_process_memory_fraction, 0.5))
        print(answer(torch.mps.manual_seed, 0))    # torch's no-op here
        x = torch.ones(4, device="mps")            # the program asks
        print(answer(torch.mps.synchronize),
              torch.mps.current_allocated_memory() >= 0)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "cuda"
    for line in lines[1:8]:
        assert "RuntimeError: Cannot execute" in line, line
        assert "without MPS backend" in line, line
    assert lines[8:] == ["None", "None True"]


def test_packages_told_the_truth_get_torchs_own_mps_actions():
    """Where MPS is announced but not there (profile cuda, or here with
    announce=mps), a package told the truth gets torch.mps's own actions,
    which raise without MPS: DeepSpeed checks for MPS that way before it
    checks for CUDA, and took its MPS accelerator on an NVIDIA GPU."""
    if HAS_MPS:
        pytest.skip("MPS is really there")
    proc = run_python(r"""
        import torch
        import TorchDevice
        probe = {"__name__": "deepspeed.accelerator.real_accelerator",
                 "torch": torch}
        try:
            eval("torch.mps.current_allocated_memory()", probe)
            print("answered")
        except RuntimeError:
            print("raised")
        print(eval("torch.backends.mps.is_available()", probe))
        print(torch.mps.current_allocated_memory() >= 0,
              torch.backends.mps.is_available())
    """, env={"TORCHDEVICE_ANNOUNCE": "mps"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["raised", "False", "True", "True"]


def test_torchs_own_code_sees_the_truth_about_mps(restore_config):
    """torch.backends.mps.is_available is lru_cache-wrapped in torch, so the
    masquerade's replacement is a Python function carrying `__wrapped__`;
    that function's own frame hid the caller, and torch's modules were told
    MPS is there (docs/masquerade.md, "`torch.cuda.is_available()`: who is told what")."""
    import torch
    import TorchDevice
    from TorchDevice import _masquerade
    truth = _masquerade._originals["mps.is_available"]()
    try:
        TorchDevice.configure(announce="mps")
        probe = {"__name__": "torch.utils.data.dataloader", "torch": torch}
        assert eval("torch.backends.mps.is_available()", probe) is truth
        assert eval("torch.backends.mps.is_built()", probe) is \
            _masquerade._originals["mps.is_built"]()
        user = {"__name__": "mytrainer", "torch": torch}
        assert eval("torch.backends.mps.is_available()", user) is True
        assert torch.backends.mps.is_available() is True
    finally:
        TorchDevice.configure(announce="cuda")
