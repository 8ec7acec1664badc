"""Errors keep state whole (docs/reliability.md, guarantee 6).

An exception raised inside a wrapped torch call reaches the user unchanged:
the same exception object where user code raised it, otherwise the type
and message native torch gives for the redirected call, and a traceback
with the same frames as native torch's, ending in the user's line.  The
CPU override, the memory peaks and the report are left consistent: a call
that raises changes none of them (except that the report counts the
attempt at its call site).
"""
from __future__ import annotations

import traceback
from typing import Any, Callable, List, Tuple

import pytest
import torch
from torch.overrides import TorchFunctionMode

import TorchDevice
from TorchDevice import _patches, _tdcore
from conftest import HAS_CUDA

pytestmark = pytest.mark.skipif(HAS_CUDA, reason="profile cpu expectations")


class UserError(Exception):
    pass


class BadSequence:
    """A sequence whose length raises: torch.tensor() calls back into it."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __len__(self) -> int:
        raise self.exc

    def __getitem__(self, i: int) -> Any:
        return 0.0


def call_site(fn: Callable[[], Any]) -> Any:
    return fn()        # the "user's line" of every case below


USER_LINE = call_site.__code__.co_firstlineno + 1


def failure(fn: Callable[[], Any]) -> Tuple[BaseException, List[tuple]]:
    try:
        call_site(fn)
    except BaseException as exc:   # noqa: BLE001 - compared below
        frames = [(f.filename, f.lineno, f.name)
                  for f in traceback.extract_tb(exc.__traceback__)]
        return exc, frames[1:]       # from call_site on
    raise AssertionError("no exception")


def natively(fn: Callable[[], Any]) -> Tuple[BaseException, List[tuple]]:
    TorchDevice.disable()
    try:
        return failure(fn)
    finally:
        TorchDevice.enable()


def same_lines_but_lambdas(frames: List[tuple]) -> List[tuple]:
    return [(f, None if name == "<lambda>" else line, name)
            for f, line, name in frames]


T = torch.ones(2)
# (call under TorchDevice, the call native torch makes after redirection)
CASES = {
    "factory": (lambda: torch.zeros(-1, device="cuda"),
                lambda: torch.zeros(-1, device="cpu")),
    "factory bad dtype": (lambda: torch.ones(2, device="cuda", dtype="f"),
                          lambda: torch.ones(2, device="cpu", dtype="f")),
    "factory ragged": (lambda: torch.tensor([[1], [1, 2]], device="cuda:1"),
                       lambda: torch.tensor([[1], [1, 2]], device="cpu")),
    "toggle factory": (lambda: torch.zeros(-1, device="cpu:-1"),
                       lambda: torch.zeros(-1, device="cpu")),
    # The redirected call hands torch a torch.device, and torch's message
    # names the argument types it got.
    "Tensor.to": (lambda: T.to("cuda", dtype=5),
                  lambda: T.to(torch.device("cpu"), dtype=5)),
    "Tensor.to toggle": (lambda: T.to("cpu:-1", dtype=5),
                         lambda: T.to(torch.device("cpu"), dtype=5)),
    "Tensor.cuda": (lambda: T.cuda(memory_format=torch.channels_last),
                    lambda: T.to("cpu", memory_format=torch.channels_last)),
    "Tensor.cuda toggle": (
        lambda: T.cuda("cpu:-1", memory_format=torch.channels_last),
        lambda: T.to("cpu", memory_format=torch.channels_last)),
    "Module.to": (lambda: torch.nn.Linear(1, 1).to("cuda", torch.int64),
                  lambda: torch.nn.Linear(1, 1).to("cpu", torch.int64)),
    "torch.device": (lambda: torch.device("cuda", "x"),
                     lambda: torch.device("cuda", "x")),
    "Generator": (lambda: torch.Generator(device="cuda", seed=1),
                  lambda: torch.Generator(device="cpu", seed=1)),
    "new_zeros": (lambda: T.new_zeros(-2, device="cuda"),
                  lambda: T.new_zeros(-2, device="cpu")),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("override", [False, True])
def test_torch_errors_pass_through_unchanged(name, override,
                                             restore_config):
    ours, theirs = CASES[name]
    _tdcore.set_cpu_override(override)
    before = TorchDevice.policy()
    exc, frames = failure(ours)
    assert TorchDevice.policy() == before        # the override included
    native_exc, native_frames = natively(theirs)
    assert type(exc) is type(native_exc)
    assert str(exc) == str(native_exc)
    # Same frames; the two lambdas of a case sit on different lines.
    assert same_lines_but_lambdas(frames) == same_lines_but_lambdas(
        native_frames)
    assert frames[0][1] == USER_LINE          # call_site(fn)
    # The innermost Python frame is the user's line (or torch's own Python
    # code where native torch has it too): TorchDevice adds none.
    assert not any("TorchDevice" in f[0] for f in frames)


@pytest.mark.parametrize("raised", [UserError("boom"),
                                    KeyboardInterrupt(), MemoryError()])
@pytest.mark.parametrize("device", ["cuda", "cpu:-1", None, 0])
def test_exceptions_from_user_code_are_the_same_object(raised, device,
                                                       restore_config):
    _tdcore.set_cpu_override(False)
    exc, frames = failure(lambda: torch.tensor(BadSequence(raised),
                                               device=device))
    assert exc is raised
    assert frames[0][1] == USER_LINE
    assert frames[-1][2] == "__len__"
    assert _tdcore.get_cpu_override() is False


def test_exception_from_a_torch_function_mode(restore_config):
    raised = UserError("from the mode")

    class Raising(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            raise raised

    for request in ("cuda", "cpu:-1", "cpu"):
        with Raising():
            exc, frames = failure(lambda: torch.zeros(2, device=request))
        assert exc is raised
        assert frames[-1][2] == "__torch_function__"
        assert _tdcore.get_cpu_override() is False


def test_scoped_override_survives_errors(restore_config):
    _tdcore.set_cpu_override(False)
    with pytest.raises(RuntimeError):
        with TorchDevice.cpu_override():
            torch.zeros(-1, device="cpu:-1")
    assert _tdcore.get_cpu_override() is False
    with TorchDevice.cpu_override():
        with pytest.raises(RuntimeError):
            torch.zeros(-1, device="cpu:-1")
        assert _tdcore.get_cpu_override() is True


def test_report_stays_consistent(restore_config):
    previous = _tdcore.get_report()
    _tdcore.set_report(True)
    TorchDevice.clear_report()
    try:
        for _ in range(3):
            with pytest.raises(RuntimeError):
                torch.zeros(-1, device="cuda")        # line A
            torch.zeros(1, device="cuda")             # line B
        with pytest.raises(RuntimeError):
            torch.device("nonsense")                  # not a redirect
        rows = [r for r in TorchDevice.report()
                if r["file"] == __file__ and r["api"] == "torch.zeros"]
        # One row per site; each attempt counted once, failures included.
        assert sorted(r["count"] for r in rows) == [3, 3]
        assert len({r["line"] for r in rows}) == 2
        assert all(isinstance(r["count"], int) for r in TorchDevice.report())
        assert not [r for r in TorchDevice.report()
                    if "nonsense" in r["from"]]
    finally:
        _tdcore.set_report(previous)
        TorchDevice.clear_report()


def test_memory_peaks_stay_consistent(restore_config):
    c = torch.cuda
    if not hasattr(c, "max_memory_allocated") or not c.is_available():
        pytest.skip("torch.cuda memory statistics are not emulated here")
    c.reset_peak_memory_stats()
    huge = 1 << 46                                    # 64 Ti elements
    with pytest.raises(RuntimeError):
        torch.zeros(huge, device="cuda")
    allocated, peak = c.memory_allocated(), c.max_memory_allocated()
    assert 0 <= allocated <= peak < huge
    stats = c.memory_stats()
    assert stats["allocated_bytes.all.peak"] >= \
        stats["allocated_bytes.all.current"] >= 0
    c.reset_peak_memory_stats()
    assert 0 <= c.memory_allocated() <= c.max_memory_allocated() < huge


def test_invalid_configuration_changes_nothing(restore_config):
    before = (TorchDevice.config(), TorchDevice.policy())
    for bad in ({"mode": "fast"}, {"target": "tpu"}, {"float64": "maybe"},
                {"nonsense": 1}):
        with pytest.raises((ValueError, TypeError)):
            TorchDevice.configure(**bad)
        assert (TorchDevice.config(), TorchDevice.policy()) == before


def test_failed_enable_leaves_torch_native(monkeypatch, restore_config):
    """A patch that fails to build mid-way: enable() raises, every
    attribute already replaced is put back, and a later enable() works."""
    real_table = _patches.patch_table

    def broken(orig: Any) -> Any:
        raise UserError("cannot build")

    def table() -> list:
        rows = real_table()
        probe = _patches.Patch(torch.Tensor, "td_reliability_probe", broken)
        return rows[: len(rows) // 2] + [probe] + rows[len(rows) // 2:]

    zeros_like = torch.zeros_like
    TorchDevice.disable()
    native_zeros, native_to = torch.zeros, torch.Tensor.to
    monkeypatch.setattr(_patches, "patch_table", table)
    with pytest.raises(UserError):
        TorchDevice.enable()
    assert not TorchDevice.is_enabled()
    assert torch.zeros is native_zeros and torch.Tensor.to is native_to
    assert not _tdcore.hooks_installed()
    assert torch.device("cuda").type == "cuda"          # native again
    assert not hasattr(torch.Tensor, "td_reliability_probe")
    monkeypatch.setattr(_patches, "patch_table", real_table)
    TorchDevice.enable()
    assert torch.zeros_like is zeros_like
    assert torch.zeros(1, device="cuda").device == torch.device("cpu")
