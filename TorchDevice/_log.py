"""The "TorchDevice" logger and the sink that _tdcore calls for each new
call site.  Nothing here runs unless recording is on."""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("TorchDevice")

_handler: logging.Handler | None = None


def ensure_handler() -> None:
    """Gives the logger a stderr handler when the application configured
    none, so that TORCHDEVICE_LOG_LEVEL=INFO shows something."""
    global _handler
    if _handler is not None or logger.handlers:
        return
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("[TorchDevice] %(message)s"))
    logger.addHandler(_handler)


def sink(filename: str, line: int, api: str, what: str, src: str,
         dst: str) -> None:
    """First hit of a (site, api, what, from, to) record."""
    if what == "toggled":
        logger.info("%s:%d: %s(%s) toggled the CPU override", filename, line,
                    api, src)
    elif what == "redirected":
        logger.info("%s:%d: %s: %s -> %s", filename, line, api, src, dst)
    else:
        logger.info("%s:%d: %s: %s (%s -> %s)", filename, line, api, what,
                    src, dst)
