"""Operators that fell back to the host: counted per operator and call site,
shown once per operator, in the report's table and JSON (docs/report.md,
"Fell back to host").

The end-to-end tests run on the simulated accelerator (`make test-accel`),
whose fallback switch issues the warning MPS issues; they skip elsewhere.
The in-process tests issue a warning with MPS's own wording from Python
(`warn_like_torch`, a stand-in for the device's warning) and run everywhere.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import TorchDevice
from TorchDevice import _fallback, _log, _report

from conftest import ACCEL, host

SIMACCEL = ACCEL is not None and ACCEL.type == "simaccel"
needs_simaccel = pytest.mark.skipif(
    not SIMACCEL,
    reason="needs the simulated accelerator as this run's accelerator "
           "(make test-accel; tests/simaccel/README.md); this run's profile "
           f"is {TorchDevice.hardware_profile()}")

UNSUPPORTED = "aten::cumsum,aten::erfinv"
# MPS's wording (torch's MPSFallback.mm), with the suffix torch adds.
MPS_TEXT = ("The operator '{op}' is not currently supported on the MPS backend "
            "and will fall back to run on the CPU. This may have performance "
            "implications. (Triggered internally at MPSFallback.mm:14.)")
WARNING_LINE = re.compile(r"UserWarning: The operator '([^']+)' is not "
                          r"currently supported")


def child_env(**extra: str) -> dict:
    """This environment without TorchDevice's settings (the machine's
    variables kept unless dropped by `extra` set to "")."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TORCHDEVICE") or k == "TORCHDEVICE_CAPABILITIES"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for key, value in extra.items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def warnings_state() -> tuple:
    return (list(warnings.filters), warnings._showwarnmsg,
            getattr(warnings, "_filters_mutated", None),
            getattr(warnings, "_filters_mutated_lock_held", None),
            warnings.showwarning)


# ---- the table and the JSON --------------------------------------------------


def row(line: int, api: str, what: str, count: int, src: str = "cuda",
        dst: str = "cpu") -> dict:
    return {"file": "/p/train.py", "line": line, "function": "step",
            "api": api, "what": what, "from": src, "to": dst, "count": count}


def test_table_and_json_have_a_fell_back_to_host_section():
    parent = [row(3, "torch.zeros", "redirected", 2),
              row(7, "aten::cumsum", _log.FELL_BACK, 5, "simaccel"),
              row(9, "aten::erfinv", _log.FELL_BACK, 1, "simaccel")]
    child = [row(7, "aten::cumsum", _log.FELL_BACK, 2, "simaccel")]
    merged = _report.merge([parent, child])
    table = _report.format_table(merged, "accelerator", processes=2)
    lines = table.splitlines()
    assert lines[0] == ("TorchDevice report (profile accelerator): 1 call "
                        "site, 2 calls in 2 processes")
    start = lines.index("fell back to host: 2 operators at 2 call sites, "
                        "8 calls")
    assert lines[start + 1].split() == ["site", "op", "device", "count",
                                        "processes"]
    assert lines[start + 2].split() == ["/p/train.py:7", "(step)",
                                        "aten::cumsum", "simaccel", "7", "2"]
    assert lines[start + 3].split() == ["/p/train.py:9", "(step)",
                                        "aten::erfinv", "simaccel", "1", "1"]
    assert not any("fell back" in line for line in lines[:start])

    doc = _report.document(merged, processes=2)
    assert [r["api"] for r in doc["records"]] == ["torch.zeros"]
    assert doc["fell_back_to_host"][0] == {
        "op": "aten::cumsum", "device": "simaccel", "count": 7,
        "processes": 2, "file": "/p/train.py", "line": 7, "function": "step"}
    assert len(doc["fell_back_to_host"]) == 2


def test_only_fallbacks_still_say_no_call_site_needed_a_change():
    table = _report.format_table(
        [row(7, "aten::cumsum", _log.FELL_BACK, 1, "mps")], "mps")
    assert table.splitlines()[0].endswith("no call site needed a change.")
    assert table.splitlines()[1] == ("fell back to host: 1 operator at "
                                     "1 call site, 1 call")


# ---- the warning hook, in this process ----------------------------------------


# Stand-ins for the device's fallback warning: torch issues it through the
# `warnings` module with stack level 1, from the frame that called torch.
A, B, C, D = (MPS_TEXT.format(op=f"aten::{op}") for op in "abcd")


@pytest.fixture
def hooked():
    """Recording on and the hook installed (as on a device that can fall
    back), everything put back afterwards."""
    saved = TorchDevice.config()
    was = _fallback.is_installed()
    TorchDevice.clear_report()
    TorchDevice.configure(report=True)
    _fallback.sync(True)
    yield
    _fallback.sync(was)
    TorchDevice.configure(report=saved.report)
    TorchDevice.clear_report()


def fell_back() -> list:
    return [(r["api"], r["line"], r["count"], r["from"])
            for r in TorchDevice.report() if r["what"] == _log.FELL_BACK]


def here(name: str) -> int:
    """The line of this file marked `# here:NAME`."""
    for number, line in enumerate(Path(__file__).read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# here:{name}"):
            return number
    raise LookupError(name)


def test_counted_per_site_shown_once_per_operator(hooked):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")       # the program asks for all
        for _ in range(3):
            warnings.warn(A)                                  # here:loop
        warnings.warn(A); warnings.warn(B)                    # here:pair
    assert sorted(fell_back()) == [("aten::a", here("loop"), 3, "mps"),
                                   ("aten::a", here("pair"), 1, "mps"),
                                   ("aten::b", here("pair"), 1, "mps")]
    assert [(str(w.message).split("'")[1], w.lineno) for w in shown] == [
        ("aten::a", here("loop")), ("aten::b", here("pair"))]


def test_the_programs_ignore_and_error_filters_still_apply(hooked):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("ignore")       # added after the hook
        warnings.warn(C)
        warnings.filterwarnings("error", message="The operator 'aten::d'")
        with pytest.raises(UserWarning, match="aten::d"):
            warnings.warn(D)
    assert shown == []
    assert sorted(op for op, *_ in fell_back()) == ["aten::c", "aten::d"]


def test_other_warnings_pass_untouched(hooked):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        warnings.warn("something else", UserWarning)
        warnings.warn("something else", UserWarning)
    assert [str(w.message) for w in shown] == ["something else"] * 2
    assert fell_back() == []


def test_removing_the_hook_restores_warnings():
    was = _fallback.is_installed()
    _fallback.sync(False)
    try:
        before = warnings_state()
        _fallback.sync(True)
        assert warnings.filters[0] is _fallback._FILTER
        assert warnings._showwarnmsg is not before[1]
        warnings.simplefilter("ignore")
        assert warnings.filters[0] is _fallback._FILTER     # kept first
        warnings.filters.pop(1)                             # the program's
        _fallback.sync(False)
        assert warnings_state() == before
    finally:
        _fallback.sync(was)


# ---- on the simulated accelerator --------------------------------------------

PROGRAM = '''\
import json
import sys
import multiprocessing as mp
import torch


def site_a(x):
    return x.cumsum(0)                                  # site:a


def site_b(x):
    return torch.erfinv(x)                              # site:b


def child(q):
    x = torch.linspace(-0.9, 0.9, 7, device="cuda")
    q.put(site_a(x).cpu().tolist())


if __name__ == "__main__":
    x = torch.linspace(-0.9, 0.9, 7, device="cuda")
    out = {"device": str(x.device)}
    out["a"] = [site_a(x).tolist() for _ in range(3)][-1]
    out["b"] = [site_b(x).tolist() for _ in range(2)][-1]
    out["c"] = x.cumsum(0).tolist()                     # site:c
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    out["child"] = q.get()
    p.join()
    print(json.dumps(out))
'''


def marker_lines(text: str) -> dict:
    return {m.group(1): number
            for number, line in enumerate(text.splitlines(), 1)
            for m in [re.search(r"# site:(\w+)", line)] if m}


@needs_simaccel
def test_launcher_reports_host_fallbacks_per_op_and_site(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    sites = marker_lines(PROGRAM)
    proc = subprocess.run(
        [sys.executable, "-m", "TorchDevice", "run", "--report=r.json",
         "prog.py"],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=600,
        env=child_env(SIMACCEL_ENABLE_FALLBACK="1",
                      SIMACCEL_UNSUPPORTED_OPS=UNSUPPORTED))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["device"] == "simaccel:0"

    # Results equal the CPU's.
    with TorchDevice.cpu_override():
        x = torch.linspace(-0.9, 0.9, 7)
        assert x.device.type == "cpu"
        assert out["a"] == out["c"] == out["child"] == host(x.cumsum(0)).tolist()
        assert out["b"] == host(torch.erfinv(x)).tolist()

    # One warning line per operator and process (the child ran cumsum too).
    shown = WARNING_LINE.findall(proc.stderr)
    assert sorted(shown) == ["aten::cumsum", "aten::cumsum", "aten::erfinv"]

    expect = [("aten::cumsum", sites["a"], "site_a", 4, 2),
              ("aten::erfinv", sites["b"], "site_b", 2, 1),
              ("aten::cumsum", sites["c"], "<module>", 1, 1)]
    doc = json.loads((tmp_path / "r.json").read_text())
    got = [(r["op"], r["line"], r["function"], r["count"], r["processes"])
           for r in doc["fell_back_to_host"]]
    assert sorted(got) == sorted(expect)
    assert all(r["device"] == "simaccel" and r["file"] == str(script)
               for r in doc["fell_back_to_host"])
    assert all(r["what"] != _log.FELL_BACK for r in doc["records"])

    table = proc.stderr[proc.stderr.index("TorchDevice report"):]
    assert "fell back to host: 2 operators at 3 call sites, 7 calls" in table
    for op, line, function, count, processes in expect:
        site = f"prog.py:{line}" + ("" if function == "<module>"
                                    else f" ({function})")
        assert re.search(rf"^{re.escape(site)}\s+{re.escape(op)}\s+simaccel"
                         rf"\s+{count}\s+{processes}$", table, re.M), table


USER_FILTERS = '''\
import json
import sys
import warnings
import torch

HOOKS = ("_showwarnmsg", "_filters_mutated", "_filters_mutated_lock_held")
before = (list(warnings.filters),
          [getattr(warnings, name, None) for name in HOOKS])
import TorchDevice
TorchDevice.configure(report=True)
installed = TorchDevice._fallback.is_installed()
warnings.simplefilter("ignore")            # the program's, after TorchDevice
x = torch.linspace(-0.9, 0.9, 7, device="cuda")
x.cumsum(0)
with warnings.catch_warnings():
    warnings.simplefilter("error")
    try:
        torch.erfinv(x)
        raised = False
    except UserWarning:
        raised = True
x.cumsum(0)
def counts():
    found = {}
    for r in TorchDevice.report():
        if r["what"] == "fell back":
            found[r["api"]] = found.get(r["api"], 0) + r["count"]
    return found


before_disable = counts()
TorchDevice.disable()
after = (list(warnings.filters),
         [getattr(warnings, name, None) for name in HOOKS])
restored = (after[0] == [("ignore", None, Warning, None, 0)] + before[0]
            and after[1:] == before[1:])
x.cumsum(0)
print(json.dumps({"installed": installed, "raised": raised,
                  "counts": before_disable, "restored": restored,
                  "counts_after": counts()}))
'''


@needs_simaccel
def test_programs_filters_hide_but_do_not_lose_fallbacks(tmp_path):
    script = tmp_path / "filters.py"
    script.write_text(USER_FILTERS)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        cwd=str(tmp_path), timeout=600,
        env=child_env(SIMACCEL_ENABLE_FALLBACK="1",
                      SIMACCEL_UNSUPPORTED_OPS=UNSUPPORTED))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"installed": True, "raised": True,
                   "counts": {"aten::cumsum": 2, "aten::erfinv": 1},
                   "restored": True,
                   "counts_after": {"aten::cumsum": 2, "aten::erfinv": 1}}
    assert WARNING_LINE.findall(proc.stderr) == []


# ---- where nothing falls back -------------------------------------------------

CPU_PROGRAM = '''\
import json
import warnings
import torch

warnings.simplefilter("always")
HOOKS = ("_showwarnmsg", "_filters_mutated", "_filters_mutated_lock_held",
         "showwarning")
before = [getattr(warnings, name, None) for name in HOOKS]
import TorchDevice
x = torch.ones(3, device="cuda").cumsum(0)
for _ in range(2):
    warnings.warn(TEXT)
after = [getattr(warnings, name, None) for name in HOOKS]
matcher = TorchDevice._fallback._MATCHER
print(json.dumps({"profile": TorchDevice.hardware_profile(),
                  "installed": TorchDevice._fallback.is_installed(),
                  "unchanged": before == after and not any(
                      f[1] is matcher for f in warnings.filters),
                  "device": str(x.device)}))
'''


def test_profile_without_fallbacks_installs_and_records_nothing(tmp_path):
    script = tmp_path / "cpu.py"
    script.write_text(f"TEXT = {MPS_TEXT.format(op='aten::x')!r}\n"
                      + CPU_PROGRAM)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        cwd=str(tmp_path), timeout=600,
        env=child_env(TORCHDEVICE_REPORT="r.json", SIMACCEL_AUTOLOAD="",
                      TORCHDEVICE_CAPABILITIES=""))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if out["profile"] not in ("cpu", "cuda"):
        pytest.skip(f"this machine's profile is {out['profile']}")
    assert out == {"profile": out["profile"], "installed": False,
                   "unchanged": True, "device": out["device"]}
    # The program's own "always" filter shows both, as without TorchDevice.
    assert WARNING_LINE.findall(proc.stderr) == ["aten::x", "aten::x"]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["fell_back_to_host"] == []
    assert "fell back to host" not in proc.stderr
