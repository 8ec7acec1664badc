"""The "TorchDevice" logger and the sink that _tdcore calls for each new
call site.  Nothing here runs unless recording is on, and then only once per
(site, API, what, from -> to): repeated hits are counted in C."""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("TorchDevice")

_handler: logging.Handler | None = None

# What happened at a site: the words _tdcore and the masquerade record.
REDIRECTED = "redirected"    # the device changed
EMULATED = "emulated"        # a torch.cuda call answered from another device
UNSUPPORTED = "unsupported"  # no faithful equivalent
TOGGLED = "toggled"          # "cpu:-1" flipped the CPU override


def ensure_handler() -> None:
    """Gives the logger a stderr handler when the application configured
    none, so that TORCHDEVICE_LOG_LEVEL=INFO shows something."""
    global _handler
    if _handler is not None or logger.handlers:
        return
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("[TorchDevice] %(message)s"))
    logger.addHandler(_handler)


def describe(api: str, what: str, src: str, dst: str) -> str:
    """One phrase for a record, shared by the log and the report table."""
    if what == TOGGLED:
        return f"{api}({src}) toggled the CPU override"
    if what == REDIRECTED:
        return f"{api}: {src} -> {dst}"
    return f"{api}: {what} ({src} -> {dst})"


def sink(filename: str, line: int, function: str, api: str, what: str,
         src: str, dst: str) -> None:
    """First hit of a (site, api, what, from, to) record."""
    level = logging.WARNING if what == UNSUPPORTED else logging.INFO
    if logger.isEnabledFor(level):
        where = f" in {function}" if function else ""
        logger.log(level, "%s:%d%s: %s", filename, line, where,
                   describe(api, what, src, dst))
