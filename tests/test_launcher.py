"""The launcher (`python -m TorchDevice run`, the `torchdevice` script) and
zero-edit activation with TORCHDEVICE=1 (docs/report.md)."""
from __future__ import annotations

import json
import os
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import TorchDevice

from conftest import run_python

cpu_profile = pytest.mark.skipif(
    TorchDevice.hardware_profile() != "cpu",
    reason="expected devices are written for the cpu profile")

# Prints what a program can observe about how it was started.
PROBE = '''\
import sys, pickle
class Thing:
    pass
main = sys.modules["__main__"]
print("argv", sys.argv)
print("name", __name__, main is sys.modules[__name__])
print("file", __file__)
print("path0", sys.path[0])
print("spec", __spec__ if __spec__ is None else __spec__.name)
print("loader", type(__loader__).__name__, getattr(__loader__, "name", None))
print("package", __package__, "cached", globals().get("__cached__"))
print("globals", sorted(k for k in globals() if k.startswith("__")))
print("pickle", type(pickle.loads(pickle.dumps(Thing()))).__name__)
print("annotations", __annotations__ if "__annotations__" in globals() else None)
'''

FAILING = '''\
import sys
def inner(x):
    return 1 / x
def outer():
    try:
        inner(0)
    except ZeroDivisionError as exc:
        raise ValueError("bad input") from exc
if sys.argv[1:] == ["exit"]:
    sys.exit(7)
outer()
'''

CUDA_SCRIPT = '''\
import sys
import torch

model = torch.nn.Linear(4, 2).cuda()
x = torch.randn(3, 4, device="cuda")
y = model(x)
print("devices", x.device.type, y.device.type, next(model.parameters()).device.type)
print("TorchDevice loaded", "TorchDevice" in sys.modules)
'''


def python_m(*args: str, cwd: Path, env: dict | None = None):
    """`python -m TorchDevice ARGS` exactly as a user types it."""
    import subprocess
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("TORCHDEVICE")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], capture_output=True,
                          text=True, env=full_env, cwd=str(cwd), timeout=300)


@pytest.fixture
def progs(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "failing.py").write_text(FAILING)
    (tmp_path / "cuda_script.py").write_text(CUDA_SCRIPT)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "probe.py").write_text(PROBE)
    (pkg / "failing.py").write_text(FAILING)
    return tmp_path


def test_script_sees_what_a_direct_run_shows(progs):
    direct = python_m("probe.py", "a", "--flag", cwd=progs)
    via = python_m("-m", "TorchDevice", "run", "probe.py", "a", "--flag",
                   cwd=progs)
    assert direct.returncode == 0, direct.stderr
    assert via.returncode == 0, via.stderr
    assert via.stdout == direct.stdout
    assert "argv ['probe.py', 'a', '--flag']" in via.stdout
    assert f"path0 {progs}" in via.stdout
    assert via.stderr == direct.stderr == ""


def test_script_given_by_path_from_elsewhere(progs, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cwd")
    script = str(progs / "probe.py")
    direct = python_m(script, cwd=elsewhere)
    via = python_m("-m", "TorchDevice", "run", script, cwd=elsewhere)
    assert via.returncode == 0, via.stderr
    assert via.stdout == direct.stdout


def test_module_sees_what_python_m_shows(progs):
    direct = python_m("-m", "pkg.probe", "x", "y", cwd=progs)
    via = python_m("-m", "TorchDevice", "run", "-m", "pkg.probe", "x", "y",
                   cwd=progs)
    assert direct.returncode == 0, direct.stderr
    assert via.returncode == 0, via.stderr
    assert via.stdout == direct.stdout
    assert f"argv ['{progs / 'pkg' / 'probe.py'}', 'x', 'y']" in via.stdout


@pytest.mark.parametrize("how", ["script", "module"])
def test_exception_traceback_and_exit_code_as_direct(progs, how):
    target = ["failing.py"] if how == "script" else ["-m", "pkg.failing"]
    direct = python_m(*target, cwd=progs)
    via = python_m("-m", "TorchDevice", "run", *target, cwd=progs)
    assert direct.returncode == 1
    assert via.returncode == 1
    assert via.stderr == direct.stderr
    assert "ZeroDivisionError" in via.stderr and "ValueError: bad input" \
        in via.stderr
    assert "TorchDevice" not in via.stderr


@pytest.mark.parametrize("how", ["script", "module"])
def test_sys_exit_code_passes_through(progs, how):
    target = ["failing.py"] if how == "script" else ["-m", "pkg.failing"]
    via = python_m("-m", "TorchDevice", "run", *target, "exit", cwd=progs)
    assert via.returncode == 7
    assert via.stderr == ""


def test_syntax_error_as_direct(progs):
    (progs / "syntax.py").write_text("x = 1\ndef (:\n")
    direct = python_m("syntax.py", cwd=progs)
    via = python_m("-m", "TorchDevice", "run", "syntax.py", cwd=progs)
    assert via.returncode == direct.returncode == 1
    assert via.stderr == direct.stderr
    assert via.stderr.startswith(f'  File "{progs / "syntax.py"}", line 2')


def test_missing_script_and_module(progs):
    via = python_m("-m", "TorchDevice", "run", "nothere.py", cwd=progs)
    direct = python_m("nothere.py", cwd=progs)
    assert via.returncode == direct.returncode == 2
    assert via.stderr == direct.stderr
    via = python_m("-m", "TorchDevice", "run", "-m", "no_such_mod", cwd=progs)
    direct = python_m("-m", "no_such_mod", cwd=progs)
    assert via.returncode == direct.returncode == 1
    assert via.stderr == direct.stderr


@cpu_profile
def test_cuda_script_runs_through_the_launcher(progs):
    direct = python_m("cuda_script.py", cwd=progs)
    assert direct.returncode != 0     # the script really needs CUDA
    via = python_m("-m", "TorchDevice", "run", "cuda_script.py", cwd=progs)
    assert via.returncode == 0, via.stderr
    assert "devices cpu cpu cpu" in via.stdout
    assert "TorchDevice loaded True" in via.stdout


@cpu_profile
def test_console_script(progs):
    exe = Path(sys.executable).with_name("torchdevice")
    assert exe.exists(), "install the package: pip install -e ."
    import subprocess
    proc = subprocess.run([str(exe), "run", "cuda_script.py"], cwd=progs,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "devices cpu cpu cpu" in proc.stdout
    direct = python_m("probe.py", cwd=progs)
    proc = subprocess.run([str(exe), "run", "probe.py"], cwd=progs,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout == direct.stdout


@cpu_profile
def test_options_report_and_children_inherit(progs):
    out = progs / "r.json"
    proc = python_m("-m", "TorchDevice", "run", f"--report={out}",
                    "--log-level", "INFO", "cuda_script.py", cwd=progs)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    apis = {r["api"] for r in doc["records"]}
    assert {"Module.cuda", "torch.randn"} <= apis
    assert all(r["file"] == str(progs / "cuda_script.py")
               for r in doc["records"])
    assert "[TorchDevice] " in proc.stderr          # INFO log lines
    assert "TorchDevice report (profile cpu)" in proc.stderr


def test_bad_option_values_are_usage_errors(progs):
    proc = python_m("-m", "TorchDevice", "run", "--mode", "fast", "probe.py",
                    cwd=progs)
    assert proc.returncode == 2
    assert "mode must be one of" in proc.stderr
    proc = python_m("-m", "TorchDevice", "run", "--bogus", "probe.py",
                    cwd=progs)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    proc = python_m("-m", "TorchDevice", "run", cwd=progs)
    assert proc.returncode == 2 and "nothing to run" in proc.stderr
    proc = python_m("-m", "TorchDevice", "frobnicate", cwd=progs)
    assert proc.returncode == 2 and "unknown command" in proc.stderr
    proc = python_m("-m", "TorchDevice", "run", "--help", cwd=progs)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:")


def test_run_may_be_left_out(progs):
    # A user's first try, as with `python -m cProfile script.py`.
    direct = python_m("probe.py", "a", "--flag", cwd=progs)
    for how in (["probe.py"], ["--report", "probe.py"],
                ["--log-level=INFO", "probe.py"]):
        via = python_m("-m", "TorchDevice", *how, "a", "--flag", cwd=progs)
        assert via.returncode == 0, via.stderr
        assert via.stdout == direct.stdout
    via = python_m("-m", "TorchDevice", "--report", "probe.py", cwd=progs)
    assert "TorchDevice report" in via.stderr
    direct = python_m("-m", "pkg.probe", "x", cwd=progs)
    via = python_m("-m", "TorchDevice", "-m", "pkg.probe", "x", cwd=progs)
    assert via.returncode == 0, via.stderr
    assert via.stdout == direct.stdout
    # A missing script gets Python's message, as with run; a name that is
    # neither a command, a script nor a file is still a usage error.
    via = python_m("-m", "TorchDevice", "missing.py", cwd=progs)
    direct = python_m("missing.py", cwd=progs)
    assert via.returncode == direct.returncode == 2
    assert via.stderr == direct.stderr
    proc = python_m("-m", "TorchDevice", "trian", cwd=progs)
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr


def test_parse():
    from TorchDevice._launcher import UsageError, parse
    assert parse(["--report", "s.py", "--report"]) == (
        {"TORCHDEVICE_REPORT": "1"}, "s.py", None, ["--report"])
    assert parse(["--target=cpu", "-m", "pkg.mod", "-m", "x"]) == (
        {"TORCHDEVICE_TARGET": "cpu"}, None, "pkg.mod", ["-m", "x"])
    assert parse(["-mpkg", "a"]) == ({}, None, "pkg", ["a"])
    assert parse(["--", "--weird.py"]) == ({}, "--weird.py", None, [])
    with pytest.raises(UsageError):
        parse(["--log-level"])
    with pytest.raises(UsageError):
        parse(["-m"])


def test_early_environment_restarts_before_torch_loads(progs):
    """Variables torch reads at load time (PYTORCH_ENABLE_MPS_FALLBACK on
    Apple) force a restart of the launcher with them set; simulated here
    with a stand-in variable, since this machine is not a Mac."""
    (progs / "early.py").write_text(
        "import os, sys\nprint('early', os.environ.get('TD_TEST_EARLY'), "
        "sys.argv)\n")
    code = ("import os, sys; from TorchDevice import _launcher as L; "
            "print('launcher pid', os.getpid(), flush=True); "
            "L.early_environment = lambda: {'TD_TEST_EARLY': '1'}; "
            "sys.exit(L.run(['early.py', 'arg']))")
    proc = run_python(code, cwd=progs)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # The launcher ran twice in the same process: once without the
    # variable (then exec), once with it.
    assert len([l for l in lines if l.startswith("launcher pid")]) == 2
    assert len(set(l for l in lines if l.startswith("launcher pid"))) == 1
    assert lines[-1] == "early 1 ['early.py', 'arg']"


def test_early_environment_is_the_capability_records_fallback_variable():
    """MPS's record names PYTORCH_ENABLE_MPS_FALLBACK (set before torch
    loads, as on Apple); the other records name none."""
    from TorchDevice import _capabilities, _launcher
    records = _capabilities.RECORDS
    assert _launcher.early_environment(records["mps"]) == {
        "PYTORCH_ENABLE_MPS_FALLBACK": "1"}
    for name in ("cpu", "cuda", "accelerator"):
        assert _launcher.early_environment(records[name]) == {}
    # Without a record: this machine's, TORCHDEVICE_CAPABILITIES applied.
    expected = _capabilities.record_for(
        TorchDevice._patches.detect_profile(),
        os.environ.get("TORCHDEVICE_CAPABILITIES") or None)
    assert _launcher.early_environment() == _launcher.early_environment(
        expected)


# ---- zero-edit activation -------------------------------------------------

def _autoload_registered() -> bool:
    return any(ep.value == "torchdevice_autoload:autoload"
               for ep in entry_points(group="torch.backends"))


def test_entry_point_is_registered():
    assert _autoload_registered(), (
        "the torch.backends entry point is missing: pip install -e .")


@cpu_profile
def test_torchdevice_env_enables_without_an_import(progs):
    proc = python_m("cuda_script.py", env={"TORCHDEVICE": "1"}, cwd=progs)
    assert proc.returncode == 0, proc.stderr
    assert "devices cpu cpu cpu" in proc.stdout
    assert "TorchDevice loaded True" in proc.stdout
    assert proc.stderr == ""


@cpu_profile
def test_zero_edit_activation_reports_the_real_lines(progs):
    out = progs / "zero.json"
    proc = python_m("cuda_script.py", cwd=progs,
                    env={"TORCHDEVICE": "1", "TORCHDEVICE_REPORT": str(out)})
    assert proc.returncode == 0, proc.stderr
    lines = CUDA_SCRIPT.splitlines()
    expected = {("Module.cuda", lines.index(
                    "model = torch.nn.Linear(4, 2).cuda()") + 1),
                ("torch.randn", lines.index(
                    'x = torch.randn(3, 4, device="cuda")') + 1)}
    doc = json.loads(out.read_text())
    assert {(r["api"], r["line"]) for r in doc["records"]} == expected
    assert "TorchDevice report (profile cpu): 2 call sites" in proc.stderr


def test_without_the_variable_nothing_changes(progs):
    proc = run_python("""
        import sys, torch
        print(sorted(m for m in sys.modules if m.lower().startswith("torchdevice")))
        print(repr(torch.device("cuda")), type(torch.zeros).__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    # The entry point ran (its module is loaded) and did nothing else.
    assert proc.stdout.splitlines() == [
        "['torchdevice_autoload']",
        "device(type='cuda') builtin_function_or_method"]


@cpu_profile
def test_spawned_children_inherit_activation(progs):
    """DataLoader workers and spawn pools start fresh interpreters: the
    launcher's TORCHDEVICE=1 reaches them through the entry point."""
    (progs / "spawn.py").write_text(textwrap.dedent("""\
        import multiprocessing as mp
        import torch

        def child(q):
            q.put(torch.zeros(1, device="cuda").device.type)

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            print("child", q.get(timeout=120))
            p.join()
            print("exit", p.exitcode)
    """))
    proc = python_m("-m", "TorchDevice", "run", "spawn.py", cwd=progs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["child cpu", "exit 0"]


def _entry_point_env(tmp_path: Path) -> dict:
    """Where the package is not installed (scripts/gpu_check.sh runs from
    the source tree on PYTHONPATH), registers the entry point through a
    dist-info directory on PYTHONPATH, as an install would."""
    if _autoload_registered():
        return {}
    info = tmp_path / "ep" / "torchdevice_entry-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchdevice-entry\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[torch.backends]\ntorchdevice = torchdevice_autoload:autoload\n")
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join(p for p in (str(info.parent), str(root),
                                       os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


@pytest.mark.cuda
def test_mps_script_runs_on_cuda_through_the_launcher(tmp_path):
    """On an NVIDIA machine, code written for MPS runs on CUDA."""
    (tmp_path / "mps_script.py").write_text(
        "import torch\nx = torch.ones(2, device='mps')\nprint(x.device.type)\n")
    proc = python_m("-m", "TorchDevice", "run", "mps_script.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cuda"
    env = {"TORCHDEVICE": "1", **_entry_point_env(tmp_path)}
    proc = python_m("mps_script.py", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cuda"


RANKS = '''\
import sys
import torch.distributed as dist
dist.init_process_group("gloo")
print("rank", dist.get_rank(), "says hello", flush=True)
print("rank", dist.get_rank(), "on stderr", file=sys.stderr, flush=True)
dist.barrier()
if dist.get_rank() == 1:
    raise ValueError("rank 1 fails")
dist.destroy_process_group()
'''


def _prefixed(text: str) -> list:
    """The lines torchrun and torch.distributed prefix with the rank.  A
    rank that asked for gloo itself may abort at exit in torch's own race
    (docs/compile-checkpoints-distributed.md, "At exit"), in either launch:
    its "terminate called" line is not a prefix's."""
    import re
    return sorted(line for line in text.splitlines()
                  if re.match(r"\[(rank|default)\d+\]:", line)
                  and "terminate called without an active exception"
                  not in line)


@pytest.mark.parametrize("mode", [[], ["--tee", "3"], ["--log-dir", "LOGS"]])
def test_torchrun_line_prefixes_as_direct(progs, mode):
    """`python -m TorchDevice run -m torch.distributed.run ...` shows the
    ranks' lines with the prefixes torchrun and torch.distributed give
    them (`[default0]:` with --tee, `[rank1]:` on a rank's traceback),
    exactly as torchrun alone does."""
    (progs / "ranks.py").write_text(RANKS)

    def launch(*prefix: str, logs: str):
        opts = [logs if o == "LOGS" else o for o in mode]
        return python_m(*prefix, "-m", "torch.distributed.run",
                        "--standalone", "--nproc_per_node", "2", *opts,
                        "ranks.py", cwd=progs)

    direct = launch(logs=str(progs / "direct-logs"))
    through = launch("-m", "TorchDevice", "run", logs=str(progs / "td-logs"))
    assert direct.returncode == through.returncode != 0
    expected = _prefixed(direct.stdout + direct.stderr)
    assert any("[rank1]: ValueError: rank 1 fails" in line
               for line in expected)
    assert _prefixed(through.stdout + through.stderr) == expected


def test_usage_names_the_defaults_in_force():
    # The usage text once called "accelerate" the default mode.
    from TorchDevice import _config, _launcher
    defaults = _config.Config()
    lines = {line.split()[0]: line for line in _launcher.USAGE.splitlines()
             if line.strip().startswith("--")}
    for option, default in (("--mode", defaults.mode),
                            ("--float64", defaults.float64)):
        assert f"{default} (default)" in lines[option], lines[option]
