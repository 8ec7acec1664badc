"""The migration report: call sites recorded in C, de-duplicated, counted,
printed at exit and written as JSON (docs/report.md)."""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import TorchDevice
from TorchDevice import _config, _log, _report, _tdcore

from conftest import cuda_redirected, run_python

cpu_profile = pytest.mark.skipif(
    TorchDevice.hardware_profile() != "cpu",
    reason="expected targets are written for the cpu profile")


@pytest.fixture
def recording():
    """Recording on for the test, everything put back afterwards."""
    saved = TorchDevice.config()
    TorchDevice.clear_report()
    TorchDevice.configure(report=True)
    yield
    TorchDevice.configure(report=saved.report, log_level=saved.log_level)
    TorchDevice.clear_report()


def qualified(name: str) -> str:
    """The report's function column: the qualified name, which code objects
    carry from Python 3.11; the plain name before (docs/report.md)."""
    return name if sys.version_info >= (3, 11) else name.rsplit(".", 1)[-1]


def marker_lines(path: Path) -> dict:
    """{marker: line number} of `# site:NAME` comments in a file."""
    found = {}
    for number, text in enumerate(path.read_text().splitlines(), 1):
        m = re.search(r"# site:(\w+)", text)
        if m:
            found[m.group(1)] = number
    return found


SAMPLE = '''\
import torch
import helper


def make(n):
    return torch.zeros(n, device="cuda")           # site:zeros


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2, device="cuda")   # site:linear


for _ in range(1000):
    make(2)
t = torch.ones(3).cuda()                           # site:cuda
dev = torch.device("cuda:0")                       # site:device
net = Net()
helper.move(t)
'''

HELPER = '''\
def move(t):
    return t.to("cuda")                             # site:to
'''


@pytest.fixture
def sample(tmp_path):
    (tmp_path / "sample.py").write_text(SAMPLE)
    (tmp_path / "helper.py").write_text(HELPER)
    return tmp_path


@cpu_profile
def test_sample_script_records_the_users_real_lines(sample):
    out = sample / "report.json"
    code = f"import TorchDevice, runpy; runpy.run_path({str(sample / 'sample.py')!r}, run_name='__main__')"
    proc = run_python(code, env={"TORCHDEVICE_REPORT": str(out),
                                 "PYTHONPATH": str(sample)}, cwd=sample)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    main = str(sample / "sample.py")
    helper = str(sample / "helper.py")
    lines = marker_lines(sample / "sample.py")
    helper_lines = marker_lines(sample / "helper.py")
    got = {(r["file"], r["line"], r["function"], r["api"], r["from"], r["to"],
            r["count"]) for r in doc["records"]}
    assert got == {
        (main, lines["zeros"], "make", "torch.zeros", "cuda", "cpu", 1000),
        # weight and bias: two calls inside torch.nn, reported at the
        # user's line that asked for them
        (main, lines["linear"], qualified("Net.__init__"), "torch.empty",
         "cuda", "cpu", 2),
        (main, lines["cuda"], "<module>", "Tensor.cuda", "cuda", "cpu", 1),
        (main, lines["device"], "<module>", "torch.device", "cuda:0", "cpu",
         1),
        (helper, helper_lines["to"], "move", "Tensor.to", "cuda", "cpu", 1),
    }
    assert all(r["what"] == "redirected" for r in doc["records"])
    # Sorted by file, then line.
    keys = [(r["file"], r["line"]) for r in doc["records"]]
    assert keys == sorted(keys)


@cpu_profile
def test_table_at_exit_on_stderr(sample):
    proc = run_python(
        f"import TorchDevice, runpy; runpy.run_path('sample.py', run_name='__main__')",
        env={"TORCHDEVICE_REPORT": "1", "PYTHONPATH": str(sample)},
        cwd=sample)
    assert proc.returncode == 0, proc.stderr
    lines = marker_lines(sample / "sample.py")
    table = proc.stderr.splitlines()
    assert table[0] == ("TorchDevice report (profile cpu): 5 call sites, "
                        "1005 calls")
    assert table[1].split() == ["site", "api", "what", "from", "->", "to",
                                "count"]
    rows = [line.split() for line in table[2:]]
    assert rows[0][:2] == ["helper.py:2", "(move)"]
    assert rows[1][:3] == [f"sample.py:{lines['zeros']}", "(make)",
                           "torch.zeros"]
    assert rows[1][-1] == "1000"
    assert [r[0] for r in rows[2:]] == [
        f"sample.py:{lines['linear']}", f"sample.py:{lines['cuda']}",
        f"sample.py:{lines['device']}"]
    assert proc.stdout == ""


def test_import_prints_nothing_and_records_nothing_by_default():
    proc = run_python("""
        import torch, TorchDevice
        from TorchDevice import _tdcore
        torch.zeros(2, device="cuda") if TorchDevice.hardware_profile() != "cuda" else None
        torch.device("cuda")
        assert not _tdcore.get_report()
        assert TorchDevice.report() == [], TorchDevice.report()
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


@cpu_profile
def test_loop_logs_once_and_counts_every_call(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent("""\
        import torch, TorchDevice
        for i in range(100000):
            torch.zeros(1, device="cuda")
        print(TorchDevice.report()[0]["count"])
    """))
    proc = run_python(script=script,
                      env={"TORCHDEVICE_LOG_LEVEL": "INFO"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "100000"
    logged = [l for l in proc.stderr.splitlines() if "torch.zeros" in l]
    assert logged == [f"[TorchDevice] {script}:3 in <module>: "
                      f"torch.zeros: cuda -> cpu"]


@cpu_profile
def test_records_in_process(recording):
    def site():
        return torch.zeros(1, device="cuda"), torch.device("cuda")
    for _ in range(5):
        site()
    line = site.__code__.co_firstlineno + 1
    rows = [r for r in TorchDevice.report() if r["file"] == __file__]
    name = qualified("test_records_in_process.<locals>.site")
    assert [(r["line"], r["function"], r["api"], r["count"]) for r in rows] \
        == [(line, name, "torch.device", 5), (line, name, "torch.zeros", 5)]


@cpu_profile
def test_a_get_device_answer_is_named_in_the_report(recording):
    x = torch.ones(2, device="cuda")
    torch.zeros(1, device=x.get_device())
    rows = [r for r in TorchDevice.report() if r["api"] == "torch.zeros"]
    assert [(r["from"], r["to"]) for r in rows] \
        == [("-1 (get_device() of a CPU tensor)", "cpu")]


@cpu_profile
def test_a_storage_constructor_is_one_row_under_its_own_name(recording):
    """TypedStorage builds its UntypedStorage with the device it was given:
    one request, one row, named as the program wrote it."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # TypedStorage is deprecated
        typed = torch.TypedStorage(4, dtype=torch.float32, device="cuda")
        untyped = torch.UntypedStorage(8, device="cuda")
    assert typed.device == untyped.device == torch.device("cpu")
    rows = [r for r in TorchDevice.report() if r["file"] == __file__]
    assert [(r["api"], r["count"]) for r in rows] \
        == [("torch.TypedStorage", 1), ("torch.UntypedStorage", 1)]


@pytest.mark.skipif(TorchDevice.hardware_profile() == "mps",
                    reason="torch.mps.Event is MPS's own there")
def test_an_mps_event_is_reported_under_its_own_name(recording):
    """torch.mps.Event and torch.cuda.Event share their type's code; each
    row names what the program called and the kind it asked for (the MPS
    one read "torch.cuda.Event", "cuda -> cpu")."""
    torch.mps.Event(enable_timing=True)
    torch.cuda.Event(enable_timing=True)
    rows = {r["api"]: (r["what"], r["from"]) for r in TorchDevice.report()
            if r["file"] == __file__}
    assert rows.pop("torch.mps.Event") == ("emulated", "mps")
    if TorchDevice.hardware_profile() == "cuda":
        assert rows == {}                  # torch.cuda.Event is CUDA's own
    else:
        assert rows == {"torch.cuda.Event": ("emulated", "cuda")}


@pytest.mark.skipif(TorchDevice.hardware_profile() == "mps",
                    reason="torch.mps is MPS's own there")
def test_mps_actions_are_reported_once_under_their_own_names(recording):
    """torch.mps's actions answer through torch.cuda's; where that is our
    masquerade too (neither kind is real) it added a torch.cuda row for a
    call the program did not make."""
    # As an MPS-written program, which asks for its device first (before
    # that, where MPS is not announced, torch.mps's actions are torch's).
    torch.ones(1, device="mps")
    torch.mps.synchronize()
    torch.mps.empty_cache()
    torch.mps.manual_seed(0)
    torch.mps.set_rng_state(torch.mps.get_rng_state())
    torch.mps.current_allocated_memory()
    apis = sorted(r["api"] for r in TorchDevice.report()
                  if r["file"] == __file__
                  and r["api"].startswith("torch.mps."))
    assert apis == ["torch.mps.current_allocated_memory",
                    "torch.mps.empty_cache", "torch.mps.get_rng_state",
                    "torch.mps.manual_seed", "torch.mps.set_rng_state",
                    "torch.mps.synchronize"]


@cpu_profile
def test_two_calls_on_one_line_share_a_row(recording):
    for _ in range(3):
        torch.zeros(1, device="cuda"); torch.zeros(2, device="cuda")  # noqa
    rows = [r for r in TorchDevice.report() if r["api"] == "torch.zeros"]
    assert len(rows) == 1 and rows[0]["count"] == 6


@cpu_profile
def test_off_records_nothing(restore_config):
    TorchDevice.configure(report=False, log_level="WARNING")
    TorchDevice.clear_report()
    assert not _tdcore.get_report()
    torch.zeros(1, device="cuda")
    assert TorchDevice.report() == []


@cpu_profile
def test_log_level_info_turns_recording_on(restore_config, recording):
    TorchDevice.configure(report=False, log_level="INFO")
    assert _tdcore.get_report()
    TorchDevice.configure(log_level="WARNING")
    assert not _tdcore.get_report()


def test_classified_records_from_python(recording, caplog):
    with caplog.at_level(logging.INFO, logger="TorchDevice"):
        for _ in range(2):
            _tdcore.record("torch.cuda.memory_allocated", "emulated", "cuda",
                           "cpu")
        _tdcore.record("torch.cuda.CUDAGraph", "unsupported", "cuda", "cpu")
    rows = {r["api"]: r for r in TorchDevice.report()}
    assert rows["torch.cuda.memory_allocated"]["what"] == "emulated"
    assert rows["torch.cuda.memory_allocated"]["count"] == 2
    assert rows["torch.cuda.memory_allocated"]["file"] == __file__
    assert rows["torch.cuda.CUDAGraph"]["what"] == "unsupported"
    prefix = f"{__file__}:"
    assert all(r.getMessage().startswith(prefix) for r in caplog.records)
    levels = {r.getMessage().split(": ", 1)[1]: r.levelno
              for r in caplog.records}
    assert levels == {
        "torch.cuda.memory_allocated: emulated (cuda -> cpu)": logging.INFO,
        "torch.cuda.CUDAGraph: unsupported (cuda -> cpu)": logging.WARNING}


def test_record_arguments(recording):
    with pytest.raises(TypeError):
        _tdcore.record(1, "emulated", "cuda", "cpu")
    with pytest.raises(TypeError):
        _tdcore.record("api", None, "cuda", "cpu")
    with pytest.raises(TypeError):
        _tdcore.record("api", "emulated", "cuda")
    # Devices (or anything else) as from/to are kept as their text.
    _tdcore.record("x.api", "emulated", "cuda", torch.device("meta"))
    (row,) = [r for r in TorchDevice.report() if r["api"] == "x.api"]
    assert (row["from"], row["to"]) == ("cuda", "meta")


def test_record_is_a_no_op_when_off(restore_config):
    TorchDevice.configure(report=False, log_level="WARNING")
    TorchDevice.clear_report()
    _tdcore.record("torch.cuda.x", "emulated", "cuda", "cpu")
    assert TorchDevice.report() == []


@cpu_profile
def test_clear_report(recording):
    torch.zeros(1, device="cuda")
    assert TorchDevice.report()
    TorchDevice.clear_report()
    assert TorchDevice.report() == []


@cpu_profile
def test_records_survive_disable(recording, restore_config):
    torch.zeros(1, device="cuda")
    TorchDevice.disable()
    rows = TorchDevice.report()
    assert rows and rows[0]["to"] == "cpu"


@cpu_profile
def test_threads_count_every_hit(recording):
    def work():
        for _ in range(2000):
            torch.device("cuda")
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [r for r in TorchDevice.report() if r["function"].endswith("work")]
    assert len(rows) == 1 and rows[0]["count"] == 8000


# The format the original TorchDevice documented for its log.
ORIGINAL_FORMAT = ('GPU REDIRECT - [%(program_name)s] "%(caller_func_name)s" '
                   'in File: %(caller_filename)s:%(caller_lineno)s - Called: '
                   '%(torch_function)s %(message)s')


def test_a_site_record_names_the_site_in_any_format(recording, caplog):
    with caplog.at_level(logging.INFO, logger="TorchDevice"):
        line = sys._getframe().f_lineno + 1
        _tdcore.record("torch.cuda.memory_reserved", "emulated", "cuda", "cpu")
        _log.logger.info("a record of TorchDevice's own")
    site, own = caplog.records
    # logging's own fields name the program's call site, not TorchDevice
    assert (site.pathname, site.lineno, site.funcName) == (
        __file__, line, "test_a_site_record_names_the_site_in_any_format")
    assert site.filename == os.path.basename(__file__)
    assert (site.caller_filename, site.caller_lineno, site.caller_func_name,
            site.torch_function) == (
        __file__, line, "test_a_site_record_names_the_site_in_any_format",
        "torch.cuda.memory_reserved")
    formatter = logging.Formatter(ORIGINAL_FORMAT)
    assert formatter.format(site).startswith(
        f'GPU REDIRECT - [{os.path.basename(sys.argv[0])}] '
        f'"test_a_site_record_names_the_site_in_any_format" in File: '
        f'{__file__}:{line} - Called: torch.cuda.memory_reserved ')
    assert formatter.format(own).endswith(
        "Called:  a record of TorchDevice's own")


@cpu_profile
def test_broken_log_handler_does_not_break_the_call(recording, monkeypatch):
    class Broken(logging.Handler):
        def emit(self, record):
            raise RuntimeError("handler broke")

        def handleError(self, record):
            raise RuntimeError("handler broke")
    handler = Broken()
    _log.logger.addHandler(handler)
    level = _log.logger.level
    _log.logger.setLevel(logging.INFO)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    try:
        x = torch.zeros(1, device="cuda")
    finally:
        _log.logger.removeHandler(handler)
        _log.logger.setLevel(level)
    assert x.device.type == "cpu"
    assert len(unraisable) == 1
    assert "handler broke" in str(unraisable[0].exc_value)


def test_report_setting_validation(restore_config):
    with pytest.raises(ValueError):
        TorchDevice.configure(report="")
    with pytest.raises(ValueError):
        TorchDevice.configure(report=3)
    assert TorchDevice.config().report is False
    assert _config.parse_report("0") is False
    assert _config.parse_report("on") is True
    assert _config.parse_report(" out.json ") == "out.json"
    env = {"TORCHDEVICE_REPORT": "yes"}
    assert _config.from_environment(env).report is True


def test_json_document_schema(recording, tmp_path):
    _tdcore.record("torch.cuda.synchronize", "emulated", "cuda", "cpu")
    path = tmp_path / "r-{pid}.json"
    with open(tmp_path / "table.txt", "w") as table:
        _report.emit(str(path), stream=table)
    import os
    written = tmp_path / f"r-{os.getpid()}.json"
    doc = json.loads(written.read_text())
    assert doc["schema"] == "torchdevice-report/1"
    assert doc["torch"] == torch.__version__
    assert doc["torchdevice"] == TorchDevice.__version__
    assert doc["pid"] == os.getpid()
    assert doc["profile"] == TorchDevice.hardware_profile()
    assert set(doc) == {"schema", "torchdevice", "torch", "python",
                        "platform", "pid", "argv", "profile", "mode",
                        "processes", "records", "fell_back_to_host"}
    assert doc["fell_back_to_host"] == []
    assert doc["processes"] == 1
    (row,) = doc["records"]
    assert set(row) == {"file", "line", "function", "api", "what", "from",
                        "to", "count", "processes"}
    assert row["processes"] == 1
    assert row["file"] == __file__ and isinstance(row["line"], int)
    assert "written to" in (tmp_path / "table.txt").read_text()


def test_empty_report_says_so():
    assert "no call site needed a change" in _report.format_table([], "cpu")


# ---- which line is the site (docs/report.md) -------------------------------


def run_launcher(*args: str, env: dict | None = None, cwd: Path):
    """python -m TorchDevice run ARGS, in a fresh process."""
    import os
    import subprocess
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("TORCHDEVICE")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "TorchDevice", "run", *args],
                          capture_output=True, text=True, env=full,
                          cwd=str(cwd), timeout=600)


def test_site_classes_of_files():
    import contextlib
    import _pytest
    from TorchDevice import _report
    _report.ensure_site_rules()
    assert _tdcore.site_class(__file__) == _report.USER
    assert _tdcore.site_class("<string>") == _report.USER
    assert _tdcore.site_class(contextlib.__file__) == _report.STDLIB
    assert _tdcore.site_class("<frozen runpy>") == _report.STDLIB
    assert _tdcore.site_class(_pytest.__file__) == _report.LIBRARY
    assert _tdcore.site_class(torch.__file__) == _report.INTERNAL
    assert _tdcore.site_class(_report.__file__) == _report.INTERNAL
    assert _tdcore.site_class("<eval_with_key>.3") == _report.INTERNAL


COMPILED = '''\
import torch

def step(x):
    return (x * 2).sum()

x = torch.ones(3, device="cuda")
with torch.autocast("cuda"):                     # site:autocast
    y = torch.ones(2, device="cuda") @ torch.ones(2, device="cuda")
with torch.amp.autocast(device_type="cuda", dtype=torch.bfloat16):
    z = torch.ones(2, device="cuda")
compiled = torch.compile(step)
print(compiled(torch.ones(4, device="cuda")))    # site:compiled
'''


@cpu_profile
def test_compile_and_autocast_report_only_the_users_lines(tmp_path):
    """No frame of contextlib, functools or torch is ever a site: the
    autocast context managers and torch.compile's tracing are reported at
    the user's line that entered them.  What inductor asks torch.cuda for
    itself while compiling (the machine's properties, for its cache key)
    is not a call of the user's."""
    script = tmp_path / "compiled.py"
    script.write_text(COMPILED)
    out = tmp_path / "r.json"
    proc = run_launcher(f"--report={out}", str(script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert {r["file"] for r in doc["records"]} == {str(script)}
    lines = marker_lines(script)
    apis = {(r["line"], r["api"]) for r in doc["records"]}
    assert (lines["autocast"], "torch.autocast") in apis
    assert any(line == lines["compiled"] for line, _ in apis)
    assert not [api for _, api in apis if api.startswith("torch.cuda.")]


LIBRARY = '''\
import torch

def make():
    return torch.zeros(2, device="cuda")

def ask():
    return torch.cuda.is_available()

import dataclasses

@dataclasses.dataclass
class Args:
    n: int = 1

    def __post_init__(self):
        self.device = torch.device("cuda")
'''

USES_LIBRARY = '''\
import fakelib
fakelib.make()                                    # site:make
fakelib.ask()                                     # site:ask
fakelib.Args()                                    # site:args
'''


@cpu_profile
def test_installed_library_reports_the_users_calling_line(tmp_path):
    """A library installed in site-packages is not the user's code: the
    site is the user's line that called into it, also through the
    __init__ that dataclasses writes (transformers' TrainingArguments)."""
    lib = tmp_path / "site-packages"
    lib.mkdir()
    (lib / "fakelib.py").write_text(LIBRARY)
    (lib / "fakeprog.py").write_text(LIBRARY + "make()\nask()\n")
    script = tmp_path / "prog.py"
    script.write_text(USES_LIBRARY)
    out = tmp_path / "r.json"
    env = {"PYTHONPATH": str(lib)}
    proc = run_launcher(f"--report={out}", str(script), env=env,
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = marker_lines(script)
    got = {(r["file"], r["line"], r["api"])
           for r in json.loads(out.read_text())["records"]}
    assert got == {(str(script), lines["make"], "torch.zeros"),
                   (str(script), lines["ask"], "torch.cuda.is_available"),
                   (str(script), lines["args"], "torch.device")}
    # The program itself lives in site-packages (python -m an installed
    # tool): no frame is the user's, so its own lines are the sites.
    proc = run_launcher(f"--report={out}", "-m", "fakeprog", env=env,
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = {(r["file"], r["line"], r["api"])
           for r in json.loads(out.read_text())["records"]}
    assert got == {(str(lib / "fakeprog.py"), 4, "torch.zeros"),
                   (str(lib / "fakeprog.py"), 7, "torch.cuda.is_available")}


# ---- queries the masquerade answers (docs/report.md) -----------------------


masquerade = pytest.mark.skipif(
    TorchDevice.hardware_profile() == "cuda",
    reason="on NVIDIA the torch.cuda queries are torch's own")


@masquerade
def test_queries_are_recorded_once_per_site(recording):
    for _ in range(100):
        torch.cuda.is_available(); torch.cuda.device_count()  # noqa: E702
    torch.accelerator.is_available(); torch.accelerator.device_count()  # noqa: E702
    torch.accelerator.current_accelerator()
    here = [r for r in TorchDevice.report() if r["file"] == __file__]
    got = {(r["api"], r["what"], r["from"], r["count"]) for r in here}
    assert got == {
        ("torch.cuda.is_available", "emulated", "cuda", 100),
        ("torch.cuda.device_count", "emulated", "cuda", 100),
        ("torch.accelerator.is_available", "emulated", "cuda", 1),
        ("torch.accelerator.device_count", "emulated", "cuda", 1),
        ("torch.accelerator.current_accelerator", "emulated", "cuda", 1),
    }
    assert len({r["line"] for r in here if r["count"] == 100}) == 1
    assert {r["to"] for r in here} == {TorchDevice.policy()["device"]}


@masquerade
def test_queries_torch_makes_itself_are_not_recorded(recording):
    """torch's own code is told the truth and is not the user's to port."""
    code = compile("torch.cuda.is_available(); torch.cuda.device_count();"
                   "torch.accelerator.is_available()", __file__, "exec")
    exec(code, {"__name__": "torch.utils.fake", "torch": torch})
    assert TorchDevice.report() == []


@masquerade
def test_queries_are_not_recorded_when_the_report_is_off(restore_config):
    TorchDevice.clear_report()
    torch.cuda.is_available()
    torch.accelerator.current_accelerator()
    assert TorchDevice.report() == []


ACCELERATOR_PROGRAM = '''\
import torch
if torch.accelerator.is_available():
    device = torch.accelerator.current_accelerator()
else:
    device = torch.device("cpu")
print(device.type)
'''


@cpu_profile
def test_device_chosen_through_torch_accelerator_is_reported(tmp_path):
    """The way pytorch/examples pick their device now: the report shows
    where it was answered instead of "no call site needed a change"."""
    script = tmp_path / "acc.py"
    script.write_text(ACCELERATOR_PROGRAM)
    proc = run_launcher("--report", str(script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no call site needed a change" not in proc.stderr
    assert "acc.py:2" in proc.stderr and "acc.py:3" in proc.stderr
    assert "torch.accelerator.current_accelerator" in proc.stderr


# ---- standard logging configuration (docs/configuration.md) ---------------


@cpu_profile
@pytest.mark.parametrize("setup", [
    # the logger's own level and handler, before TorchDevice is imported
    """logging.getLogger("TorchDevice").setLevel(logging.DEBUG)
logging.getLogger("TorchDevice").addHandler(logging.StreamHandler(sys.stdout))
import TorchDevice""",
    # the same after the import
    """import TorchDevice
logging.getLogger("TorchDevice").setLevel(logging.INFO)
logging.getLogger("TorchDevice").addHandler(logging.StreamHandler(sys.stdout))""",
    # the root's level, as most applications configure it
    """import TorchDevice
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")""",
])
def test_standard_logging_configuration_turns_the_log_on(setup):
    proc = run_python(f"""
import logging, sys
import torch
from TorchDevice import _tdcore
{setup}
assert _tdcore.get_report()
torch.zeros(2, device="cuda")
logging.getLogger("TorchDevice").setLevel(logging.WARNING)
assert not _tdcore.get_report()
torch.ones(2, device="cuda")
""")
    assert proc.returncode == 0, proc.stderr
    assert "<string>:" in proc.stdout and "torch.zeros: cuda -> cpu" \
        in proc.stdout
    assert "torch.ones" not in proc.stdout + proc.stderr


def test_logging_off_leaves_recording_off():
    proc = run_python("""
import logging
import torch, TorchDevice
from TorchDevice import _tdcore
assert not _tdcore.get_report()
logging.basicConfig(level=logging.WARNING)
logging.getLogger("other").setLevel(logging.DEBUG)
assert not _tdcore.get_report()
logging.getLogger().setLevel(logging.INFO)
assert _tdcore.get_report()
logging.disable(logging.INFO)
assert not _tdcore.get_report()
print("ok")
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@cuda_redirected
def test_environment_log_level_is_not_undone_by_the_application_logger():
    """TORCHDEVICE_LOG_LEVEL=INFO shows call sites on stderr with
    TorchDevice's own handler when the application configured none."""
    proc = run_python("""
import torch, TorchDevice
torch.zeros(2, device="cuda")
""", env={"TORCHDEVICE_LOG_LEVEL": "INFO"})
    assert proc.returncode == 0, proc.stderr
    assert "[TorchDevice] <string>:3" in proc.stderr
