"""Operators that fell back to the host, counted per operator and call site
(docs/report.md, "Fell back to host").

A device that lacks an operator may run it on the host with torch's warning
"The operator 'aten::x' is not currently supported on the <device> backend
and will fall back to run on the CPU" (MPS under PYTORCH_ENABLE_MPS_FALLBACK,
the simulated accelerator of the tests).  That warning is the only trace a
fallback leaves that Python can see, and it reaches Python through the
`warnings` module at the end of the torch call, with the caller's frame on
the stack, so the report's site rule finds the user's line.

While recording is on (and the device's capability record allows
fallbacks), two things are installed, and removed again when it goes off:

- a filter ("always", <the message pattern>, Warning) kept first in
  `warnings.filters`, so that every fallback warning reaches the display
  hook whatever filters the program has or adds later ("ignore" included);
  the function every filter change (filterwarnings, simplefilter,
  resetwarnings, catch_warnings) calls, `warnings._filters_mutated`
  (`_filters_mutated_lock_held` from Python 3.13), is wrapped to put it
  back in front;
- a wrapper around `warnings._showwarnmsg` (what the interpreter calls to
  show a warning; `showwarning` is the program's own hook, which
  catch_warnings and logging.captureWarnings replace) that counts each
  fallback with _tdcore.record and then does what the program's own
  filters say, ours left out: "ignore" shows nothing, "error" raises the
  warning as Python would, anything else shows the first warning of each
  operator in this process and no more.

Nothing here runs on a tensor operation: a program without fallbacks pays
one pattern match per warning it issues.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from typing import Any, Callable, Dict, Optional, Set

from . import _log, _tdcore

# Group 1: the operator ("aten::name" or "aten::name.overload"); group 2:
# the backend as the message names it ("MPS", "simaccel").
PATTERN = re.compile(r"The operator '([^']+)' is not currently supported on "
                     r"the (\w+) backend and will fall back to run on the CPU")

_lock = threading.Lock()
_active = False
_shown: Set[str] = set()
# warnings' functions we wrap, and what they were: _showwarnmsg, and the
# function every filter change calls (_filters_mutated up to Python 3.12,
# _filters_mutated_lock_held from 3.13).
_original: Dict[str, Callable[..., Any]] = {}
# Our wrappers that could not be taken out because something wrapped them
# in turn: they stay in that chain, passing everything through, and are
# not wrapped around anything again (which would make a loop).
_chained: Set[str] = set()


class _Matcher:
    """The message part of our filter.  It matches only while the hook is
    installed: a copy of the filter list held by an open catch_warnings
    block can outlive the hook, and must then change nothing."""

    pattern = PATTERN.pattern
    flags = PATTERN.flags

    def match(self, text: str, *args: Any) -> Optional["re.Match[str]"]:
        return PATTERN.match(text) if _active else None

    def __repr__(self) -> str:
        return f"TorchDevice.fallback_report({PATTERN.pattern!r})"


_MATCHER = _Matcher()
_FILTER = ("always", _MATCHER, Warning, None, 0)


def is_installed() -> bool:
    return _active


def sync(on: bool) -> None:
    """Installs the hook (on) or removes it, restoring `warnings`."""
    with _lock:
        if on and not _active:
            _install()
        elif not on and _active:
            _uninstall()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()     # another thread may have held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _install() -> None:
    global _active
    for name, wrapper in _wrappers().items():
        current = getattr(warnings, name, None)
        if current is None or current is wrapper or name in _chained:
            continue
        _original[name] = current
        setattr(warnings, name, wrapper)
    _active = True
    _put_first()
    _refresh()


def _uninstall() -> None:
    global _active
    _active = False
    for name, wrapper in _wrappers().items():
        current = getattr(warnings, name, None)
        if current is wrapper:
            setattr(warnings, name, _original[name])
        elif name in _original and current is not _original[name]:
            _chained.add(name)
    filters = warnings.filters
    if isinstance(filters, list):
        filters[:] = [f for f in filters if not _ours(f)]
    _refresh()


def _wrappers() -> Dict[str, Callable[..., Any]]:
    return {"_showwarnmsg": _show, "_filters_mutated": _mutated,
            "_filters_mutated_lock_held": _mutated_lock_held}


def _ours(entry: Any) -> bool:
    return isinstance(entry, tuple) and len(entry) == 5 \
        and entry[1] is _MATCHER


def _put_first() -> None:
    filters = warnings.filters
    if not isinstance(filters, list) or (filters and filters[0] is _FILTER):
        return
    filters[:] = [f for f in filters if not _ours(f)]
    filters.insert(0, _FILTER)


def _refresh() -> None:
    """Tells the interpreter the filters changed (its per-module caches of
    warnings already shown are keyed on that)."""
    mutated = _original.get("_filters_mutated")
    if mutated is not None:
        mutated()
        return
    held = _original.get("_filters_mutated_lock_held")
    acquire = getattr(warnings, "_acquire_lock", None)
    release = getattr(warnings, "_release_lock", None)
    if held is not None and acquire is not None and release is not None:
        acquire()
        try:
            held()
        finally:
            release()


def _mutated() -> None:
    if _active:
        _put_first()
    _original["_filters_mutated"]()


def _mutated_lock_held() -> None:
    if _active:
        _put_first()
    _original["_filters_mutated_lock_held"]()


def _show(msg: Any) -> None:
    """warnings._showwarnmsg while installed."""
    if _active:
        text = str(msg.message)
        found = PATTERN.match(text)
        if found is not None:
            _fell_back(msg, text, found, sys._getframe(1))
            return
    _original["_showwarnmsg"](msg)


def _fell_back(msg: Any, text: str, found: "re.Match[str]",
               frame: Any) -> None:
    op = found.group(1)
    # The site: the first frame of the user's code from here outwards.
    _tdcore.record(op, _log.FELL_BACK, found.group(2).lower(), "cpu")
    action = _programs_action(msg, text, _module_of(msg, frame))
    if action == "ignore":
        return
    if action == "error":
        raise msg.message
    with _lock:
        if op in _shown:
            return
        _shown.add(op)
    _original["_showwarnmsg"](msg)


def _module_of(msg: Any, frame: Any) -> str:
    """The module name the interpreter matched filters against: that of
    the frame that was running when torch issued the warning."""
    if frame is not None and frame.f_code.co_filename == msg.filename:
        name = frame.f_globals.get("__name__")
        if isinstance(name, str):
            return name
    filename = str(msg.filename)
    return filename[:-3] if filename.endswith(".py") else filename


def _matches(pattern: Any, text: str) -> bool:
    if pattern is None:
        return True
    if isinstance(pattern, str):      # the interpreter's built-in filters
        return pattern == text
    return bool(pattern.match(text))


def _programs_action(msg: Any, text: str, module: str) -> str:
    """What the program's own filters (ours left out) say about this
    warning, as the interpreter would decide it."""
    for entry in list(warnings.filters):
        if _ours(entry):
            continue
        try:
            action, message, category, mod, lineno = entry
            if (_matches(message, text) and issubclass(msg.category, category)
                    and _matches(mod, module)
                    and (lineno == 0 or lineno == msg.lineno)):
                return str(action)
        except (TypeError, ValueError):
            continue
    return str(getattr(warnings, "defaultaction", "default"))
