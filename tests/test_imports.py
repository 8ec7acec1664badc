"""What runs after torch imports one of its optional parts
(TorchDevice/_imports.py): once, right after the import; an error in it is
logged and never breaks the program's import."""
from __future__ import annotations

import logging
import sys

import pytest

from TorchDevice import _imports


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("td_after_")]:
        del sys.modules[name]


def test_runs_once_right_after_the_import(module_dir):
    (module_dir / "td_after_one.py").write_text("VALUE = 1\n")
    seen = []
    _imports.after("td_after_one",
                   lambda: seen.append(sys.modules["td_after_one"].VALUE),
                   "failed")
    assert seen == [] and _imports.waiting("td_after_one")
    import td_after_one  # noqa: F401
    assert seen == [1] and not _imports.waiting("td_after_one")
    _imports.after("td_after_one", lambda: seen.append(2), "failed")
    assert seen == [1, 2]          # already imported: at once


def test_an_error_is_logged_and_the_import_goes_on(module_dir, caplog):
    (module_dir / "td_after_two.py").write_text("VALUE = 2\n")

    def broken() -> None:
        raise ValueError("no such thing")

    _imports.after("td_after_two", broken, "could not do the thing")
    with caplog.at_level(logging.WARNING, logger="TorchDevice"):
        import td_after_two
    assert td_after_two.VALUE == 2
    assert ("TorchDevice: could not do the thing (ValueError: no such "
            "thing)") in caplog.text


def test_cancelled_does_not_run(module_dir):
    (module_dir / "td_after_three.py").write_text("VALUE = 3\n")
    seen = []

    def fn() -> None:
        seen.append(3)

    _imports.after("td_after_three", fn, "failed")
    _imports.cancel("td_after_three", fn)
    assert not _imports.waiting("td_after_three")
    import td_after_three  # noqa: F401
    assert seen == []
