"""enable()/disable() racing hooks that run in other threads
(docs/reliability.md, "one immutable installation").

tests/stress/enable_disable_race.py runs two threads calling into every
kind of hook (torch.device, a factory, Tensor.to, a masquerade query,
torch.cuda.Event, torch.Generator, torch.Stream) from call sites that are
always new, with INFO logging on, while a third loops disable(); enable()
(and now and then configure() of another mode) with a switch interval of a
microsecond.  A hook that reads state the
uninstall frees crashes the process (it did, within seconds, before the
installation became one reference-counted object).  It runs in a child
process so that a crash is a failed test, not a dead test run.

TORCHDEVICE_STRESS_SECONDS sets how long (default 30).
"""
from __future__ import annotations

import os
import signal

import pytest

from conftest import ROOT, run_python

SCRIPT = ROOT / "tests" / "stress" / "enable_disable_race.py"
SECONDS = float(os.environ.get("TORCHDEVICE_STRESS_SECONDS", "30"))


@pytest.mark.slow
def test_enable_disable_while_hooks_run():
    proc = run_python("", str(SECONDS), script=SCRIPT,
                      env={"PYTHONFAULTHANDLER": "1"},
                      timeout=SECONDS + 240)
    died = (f" (killed by {signal.Signals(-proc.returncode).name})"
            if proc.returncode < 0 else "")
    assert proc.returncode == 0, (
        f"exit {proc.returncode}{died}\n{proc.stdout[-2000:]}\n"
        f"{proc.stderr[-4000:]}")
    calls, toggles = (int(part.split("=")[1])
                      for part in proc.stdout.split()[-2:])
    assert calls > 100 and toggles > 10, proc.stdout
