"""A program ends cleanly right after its last backward() on an accelerator
(docs/reliability.md, "At exit")."""
from __future__ import annotations

import sys

import pytest
import torch

from TorchDevice import _exit
from conftest import LAST_WORD, PROFILE, run_python

ON_DEVICE_THREADS = PROFILE in ("mps", "accelerator")
needs_device_threads = pytest.mark.skipif(
    not ON_DEVICE_THREADS,
    reason="backward runs on autograd's device threads on MPS and the "
           "other accelerators only")

# autograd's device thread drops the finished backward pass (and the
# context backward() stashed for it, which needs the GIL) a moment after
# backward() returned; so does this program's own thread (conftest.LAST_WORD).
LAST_BACKWARD = '''
import os, sys, threading
import torch
import TorchDevice
model = torch.nn.Linear(4, 4).cuda()
with torch.autocast("cuda"):
    loss = model(torch.randn(2, 4, device="cuda")).sum()
loss.backward()
''' + LAST_WORD


@needs_device_threads
def test_device_threads_get_the_gil_before_the_interpreter_finalizes(
        tmp_path):
    """Such a program ended with SIGABRT ("terminate called without an
    active exception") in about one run in three here, after completing."""
    marker = tmp_path / "marker"
    proc = run_python(LAST_BACKWARD, str(marker), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.read_text() == "freed"


@needs_device_threads
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="threads are listed through /proc")
def test_the_device_threads_are_found():
    model = torch.nn.Linear(2, 2).cuda()
    model(torch.ones(1, 2, device="cuda")).sum().backward()
    assert _exit._autograd_device_threads()


@pytest.mark.skipif(ON_DEVICE_THREADS, reason="profile with device threads")
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="threads are listed through /proc")
def test_no_pause_where_backward_stays_on_the_calling_thread():
    """On the CPU and CUDA profiles nothing is registered: exit costs
    nothing.  The check finds no device thread on the CPU; on CUDA, torch's
    own device thread runs backward, as without TorchDevice.  (A fresh
    interpreter: other tests may start device threads in this one.)"""
    proc = run_python("""
import torch
import TorchDevice
from TorchDevice import _exit
model = torch.nn.Linear(2, 2).cuda()
model(torch.ones(1, 2, device="cuda")).sum().backward()
print(TorchDevice.is_enabled(), _exit._registered,
      _exit._autograd_device_threads())
""", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "False", str(PROFILE == "cuda")]
