"""The migration report: every call site that needed TorchDevice's help.

_tdcore counts the hits (csrc/core/report.c); this module turns them into rows,
the table printed to stderr at exit and the JSON file described in
docs/report.md.  It imports nothing heavy: json and torch's version are read
only when a report is written.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any, Dict, List, Optional, TextIO, Union

from . import _log, _tdcore

SCHEMA = "torchdevice-report/1"

_lock = threading.Lock()
_registered = False
_setting: Union[bool, str] = False


def rows() -> List[Dict[str, Any]]:
    """The records as dicts, sorted by file, line, API."""
    out = []
    for (filename, line, function, api, what, src, dst), count in \
            _tdcore.records().items():
        out.append({"file": filename, "line": line, "function": function,
                    "api": api, "what": what, "from": src, "to": dst,
                    "count": count})
    out.sort(key=lambda r: (r["file"], r["line"], r["api"], r["what"],
                            r["from"], r["to"]))
    return out


def activate(setting: Union[bool, str]) -> bool:
    """Remembers the report setting; the first time one is on, registers the
    exit hook.  Returns whether recording must be on for it."""
    global _registered, _setting
    with _lock:
        _setting = setting
        if setting and not _registered:
            atexit.register(_at_exit)
            _registered = True
    return bool(setting)


def _short_path(filename: str, cwd: str) -> str:
    if filename.startswith(cwd + os.sep):
        return filename[len(cwd) + 1:]
    return filename


def format_table(records: List[Dict[str, Any]],
                 profile: Optional[str] = None) -> str:
    """The human table: site, API, what happened, count."""
    if profile is None:
        profile = _tdcore.settings()["profile"]
    if not records:
        return (f"TorchDevice report (profile {profile}): no call site "
                f"needed a change.\n")
    cwd = os.getcwd()
    head = ("site", "api", "what", "from -> to", "count")
    body = []
    for r in records:
        site = f"{_short_path(r['file'], cwd)}:{r['line']}"
        if r["function"] and r["function"] != "<module>":
            site += f" ({r['function']})"
        body.append((site, r["api"], r["what"], f"{r['from']} -> {r['to']}",
                     str(r["count"])))
    widths = [max(len(row[i]) for row in [head] + body)
              for i in range(len(head))]
    sites = len(records)
    calls = sum(r["count"] for r in records)
    lines = [f"TorchDevice report (profile {profile}): {sites} call "
             f"site{'s' if sites != 1 else ''}, {calls} "
             f"call{'s' if calls != 1 else ''}"]
    for row in [head] + body:
        cells = [row[i].ljust(widths[i]) for i in range(len(row) - 1)]
        cells.append(row[-1].rjust(widths[-1]))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def document(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON document (docs/report.md: schema torchdevice-report/1)."""
    import platform

    import torch

    from . import __version__
    settings = _tdcore.settings()
    return {
        "schema": SCHEMA,
        "torchdevice": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": sys.platform,
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "profile": settings["profile"],
        "mode": settings["mode"],
        "records": records,
    }


def json_path(setting: Union[bool, str]) -> Optional[str]:
    if isinstance(setting, str):
        return setting.replace("{pid}", str(os.getpid()))
    return None


def write_json(path: str, records: List[Dict[str, Any]]) -> None:
    """Writes the document atomically (a reader never sees half a file)."""
    import json
    doc = document(records)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _in_worker() -> bool:
    """A multiprocessing child (DataLoader worker, spawn pool) leaves the
    report to its parent: one table per program, one writer per file."""
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


def emit(setting: Union[bool, str], stream: Optional[TextIO] = None) -> None:
    """Prints the table and writes the JSON file that `setting` asks for."""
    if not setting:
        return
    records = rows()
    out = sys.stderr if stream is None else stream
    path = json_path(setting)
    if path is not None:
        try:
            write_json(path, records)
        except OSError as exc:
            _log.logger.error("could not write the report to %s: %s", path,
                              exc)
            path = None
    try:
        out.write(format_table(records))
        if path is not None:
            out.write(f"TorchDevice report written to {path}\n")
        out.flush()
    except (OSError, ValueError):
        pass   # stderr closed: nothing left to tell


def _at_exit() -> None:
    if _in_worker():
        return
    emit(_setting)
