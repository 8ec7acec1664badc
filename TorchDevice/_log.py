"""The "TorchDevice" logger and the sink that _tdcore calls for each new
call site.  Nothing here runs unless recording is on, and then only once per
(site, API, what, from -> to): repeated hits are counted in C.  One exception:
the first float64 request made float32 in the process, which _tdcore records
report or not, and which is a warning.

The logger is an ordinary `logging` logger: configuring it the standard way
(`logging.getLogger("TorchDevice").setLevel(logging.INFO)` and a handler,
`logging.basicConfig(level=logging.INFO)`, dictConfig) turns TorchDevice's
log on, at any time.  TorchDevice notices through the one place every level
change goes through, `logging`'s cache of enabled levels
(Manager._clear_cache, called by Logger.setLevel, logging.disable and the
configuration functions), so that an intercepted call still pays nothing
while the logger is off (docs/configuration.md)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional

logger = logging.getLogger("TorchDevice")


class _CallSiteFields(logging.Filter):
    """Gives every record of the logger the fields the original TorchDevice's
    documented format used (``%(program_name)s``, ``%(caller_func_name)s``,
    ``%(caller_filename)s``, ``%(caller_lineno)s``, ``%(torch_function)s``),
    so that a handler configured for it formats instead of failing.  A call
    site's record brings its own (sink()); others get their record's."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if "program_name" not in fields:
            argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
            fields["program_name"] = os.path.basename(argv0) or "python"
        fields.setdefault("caller_func_name", record.funcName)
        fields.setdefault("caller_filename", record.pathname)
        fields.setdefault("caller_lineno", record.lineno)
        fields.setdefault("torch_function", "")
        return True


logger.addFilter(_CallSiteFields())

_handler: logging.Handler | None = None
# The level TorchDevice's own configuration put on the logger (None: the
# level is logging's business).
_own_level: Optional[int] = None
_watching = False

# What happened at a site: the words _tdcore and the masquerade record.
REDIRECTED = "redirected"    # the device changed
EMULATED = "emulated"        # a torch.cuda call answered from another device
UNSUPPORTED = "unsupported"  # no faithful equivalent
TOGGLED = "toggled"          # "cpu:-1" flipped the CPU override
DOWNCAST = "downcast"        # float64 became float32 (a device without it)
FELL_BACK = "fell back"      # the device ran an operator on the host


def apply_level(level: Optional[int]) -> None:
    """TORCHDEVICE_LOG_LEVEL / configure(log_level=...): sets the logger's
    level; None hands it back to logging (only undoing our own level, never
    one the application set)."""
    global _own_level
    if level is None:
        if _own_level is not None and logger.level == _own_level:
            logger.setLevel(logging.NOTSET)
        _own_level = None
        return
    _own_level = level
    logger.setLevel(level)


def wants_records() -> bool:
    """Whether the log shows new call sites (INFO), so they are recorded."""
    return logger.isEnabledFor(logging.INFO)


class _Prefixed(logging.Formatter):
    """"[TorchDevice] message", unless the message names TorchDevice
    itself: warnings start with "TorchDevice:" so that Python's last-resort
    handler, which prints the bare message, still says who speaks."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if text.startswith("TorchDevice: ") \
            else "[TorchDevice] " + text


def ensure_handler() -> None:
    """Gives the logger a stderr handler when TorchDevice's own setting
    asked for the log and nothing in the application would show it, so
    that TORCHDEVICE_LOG_LEVEL=INFO shows something."""
    global _handler
    if _handler is not None or _own_level is None or logger.hasHandlers():
        return
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(_Prefixed())
    logger.addHandler(_handler)


def watch_configuration(changed: Callable[[], None]) -> None:
    """Calls `changed()` after every change of logging's levels.  Every
    such change clears the loggers' caches of enabled levels through the
    manager; the manager's method is wrapped on that one object."""
    global _watching
    manager = logging.Logger.manager
    original = getattr(manager, "_clear_cache", None)
    if _watching or original is None:
        return

    def _clear_cache() -> None:
        original()
        try:
            changed()
        except Exception:   # logging's configuration must never fail here
            pass

    manager._clear_cache = _clear_cache  # type: ignore[method-assign]
    _watching = True


def describe(api: str, what: str, src: str, dst: str) -> str:
    """One phrase for a record, shared by the log and the report table."""
    if what == TOGGLED:
        return f"{api}({src}) toggled the CPU override"
    if what == REDIRECTED:
        return f"{api}: {src} -> {dst}"
    if what == FELL_BACK:
        return f"{api} fell back to the host ({src} -> {dst})"
    return f"{api}: {what} ({src} -> {dst})"


# Whether the log has warned of a float64 request made float32.
_told_downcast = False


def _first_downcast(what: str) -> bool:
    """Whether this is the first float64 (complex128) request made narrower
    in this process."""
    global _told_downcast
    if what != DOWNCAST or _told_downcast:
        return False
    _told_downcast = True
    return True


def sink(filename: str, line: int, function: str, api: str, what: str,
         src: str, dst: str) -> None:
    """First hit of a (site, api, what, from, to) record.  The first float64
    request made float32 is a warning: the program's numbers change, and
    _tdcore records it even where the report is off."""
    first = _first_downcast(what)
    level = (logging.WARNING if what == UNSUPPORTED or first
             else logging.INFO)
    if logger.isEnabledFor(level):
        where = f" in {function}" if function else ""
        if first:
            text = ("TorchDevice: %s computed in %s at %s:%d%s (%s): this "
                    "device has no %s (TORCHDEVICE_FLOAT64=downcast). Said "
                    "once: --report lists every such line, "
                    "TORCHDEVICE_FLOAT64=error stops at them.")
            args: tuple = (src, dst, filename, line, where, api, src)
        else:
            text = "%s:%d%s: %s"
            args = (filename, line, where, describe(api, what, src, dst))
        # The record names the program's call site, not this function:
        # %(pathname)s, %(filename)s, %(lineno)d and %(funcName)s in a
        # handler's format are the site's.
        record = logger.makeRecord(
            logger.name, level, filename, line, text, args, None,
            func=function or None,
            extra={"caller_func_name": function, "caller_filename": filename,
                   "caller_lineno": line, "torch_function": api})
        logger.handle(record)
