"""`python -m TorchDevice info` (docs/report.md)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import torch

import TorchDevice
from TorchDevice import _info
from conftest import MACHINE_VARIABLES


def info(*args: str) -> subprocess.CompletedProcess:
    # A bare environment, apart from what describes the machine (the
    # simulated accelerator's SIMACCEL_* and its capability record).
    env = {k: v for k, v in os.environ.items()
           if k.startswith("SIMACCEL") or k in MACHINE_VARIABLES}
    env.update({"PATH": "/usr/bin:/bin", "TORCHDEVICE_MODE": "cpu-stays-cpu",
                "PYTHONDONTWRITEBYTECODE": "1"})
    return subprocess.run([sys.executable, "-m", "TorchDevice", "info",
                           *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_info_json_reports_profile_policy_config_versions():
    proc = info("--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["versions"]["torch"] == torch.__version__
    assert data["versions"]["torchdevice"] == TorchDevice.__version__
    assert data["versions"]["python"] == ".".join(
        map(str, sys.version_info[:3]))
    assert data["hardware"]["detected_profile"] == \
        TorchDevice._patches.detect_profile()
    # The configuration from the environment is the policy in force.
    assert data["config"]["mode"] == "cpu-stays-cpu"
    assert data["policy"]["mode"] == "cpu-stays-cpu"
    assert data["environment"]["TORCHDEVICE_MODE"] == "cpu-stays-cpu"
    assert data["enabled"] is True
    queries = [q["query"] for q in data["torch_cuda"]]
    assert queries == list(_info.QUERIES)
    for q in data["torch_cuda"]:
        assert ("value" in q) != ("error" in q), q


def test_info_answers_are_what_the_program_gets():
    """Each answer equals what the same expression gives in this process
    (TorchDevice enabled, default configuration apart from the mode,
    which does not change accelerator requests)."""
    proc = info("--json")
    data = json.loads(proc.stdout)
    answers = {q["query"]: q for q in data["torch_cuda"]}
    for query in ('torch.device("cuda")', "torch.cuda.is_available()",
                  "torch.cuda.device_count()",
                  'torch.zeros(1, device="cuda").device'):
        here = _info.ask(query)
        assert answers[query] == here, query
    # A query that raises shows its exception instead of stopping info.
    bad = _info.ask("torch.cuda.no_such_function()")
    assert bad["error"].startswith("AttributeError")


def test_info_text():
    proc = info()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for heading in ("versions", "hardware", "policy in force",
                    "configuration", "what torch.cuda answers the program"):
        assert f"\n{heading}\n" in f"\n{out}"
    profile = TorchDevice._patches.detect_profile()
    assert f"  detected profile  {profile}\n" in out
    assert "  TORCHDEVICE_MODE " in out and "cpu-stays-cpu" in out
    for query in _info.QUERIES:
        assert f"  {query} " in out
    assert re.search(r"\n  zero-edit activation +registered", out)


def test_info_usage():
    proc = info("--frob")
    assert proc.returncode == 2 and "usage" in proc.stderr
