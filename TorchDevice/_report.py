"""The migration report: every call site that needed TorchDevice's help.

_tdcore counts the hits (csrc/core/report.c); this module turns them into rows,
the table printed to stderr at exit and the JSON file described in
docs/report.md.

One program, one report.  The first process that turns the report on is its
*root*: it makes a directory and names it, with its process id, in the
environment (TORCHDEVICE_REPORT_ROOT), so that every process it starts, at
any depth, inherits it: multiprocessing children (spawn, fork, forkserver,
pools, DataLoader workers), `mp.spawn`, torchrun's ranks, any Python program
it runs with TorchDevice enabled.  Those *contributors* record even if the
report setting did not reach them and, when they end (normally, through
multiprocessing's exit, or by SIGTERM), leave their records there as one
JSON file each.  The root merges them with its own when it ends: one table,
each site counted over all processes, with how many processes hit it.

A process ended by SIGTERM still writes its part (the root: the whole
report), then dies of the signal as it would have.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any, Dict, List, Optional, TextIO, Tuple, Union

from . import _log, _sigwake, _tdcore

SCHEMA = "torchdevice-report/1"
# "<root pid>:<directory>": where the processes of one program leave their
# records for the root (internal; set by the root, inherited by children).
ENV_ROOT = "TORCHDEVICE_REPORT_ROOT"

# Classes of the site rule (docs/report.md), as csrc/core/report.c has them.
USER, LIBRARY, STDLIB, INTERNAL = 0, 1, 2, 3

_lock = threading.RLock()
_registered = False
_setting: Union[bool, str] = False
_role: Optional[str] = None          # None, "root" or "child"
# The process _role was taken for.  A forked child starts with its parent's
# _role, _share and records, and keeps them until its at-fork hook has run;
# a signal handled before that must not act on them (_finish).
_owner: Optional[int] = None
_share: Optional[str] = None         # the root's directory
_done = False                        # this process has handed its part
_sigterm_installed = False
_finishing = False                   # _finish() is writing this part
_pending_signal: Optional[int] = None
_rules_set = False
# How long a root ended by SIGTERM waits for its multiprocessing children
# (also signalled, when the whole process group is) to hand their parts.
SIGTERM_GRACE_S = 2.0

_Key = Tuple[str, int, str, str, str, str, str]


# ---- the site rule ----------------------------------------------------------


def site_rules() -> List[Tuple[str, int]]:
    """(path prefix, class) pairs, longest prefix first: which frames are
    the user's (docs/report.md, "Which line is the site")."""
    import site
    import sysconfig

    import torch

    rules: Dict[str, int] = {}

    def add(path: Optional[str], cls: int) -> None:
        if not path:
            return
        for p in {os.path.abspath(path), os.path.realpath(path)}:
            rules[p.rstrip(os.sep) + os.sep] = cls

    for key in ("stdlib", "platstdlib"):
        add(sysconfig.get_path(key), STDLIB)
    libraries = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
                 sysconfig.get_path("scripts")]      # console-script shims
    libraries += list(getattr(site, "getsitepackages", lambda: [])())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user_site, str):
        libraries.append(user_site)
    libraries += [p for p in sys.path if isinstance(p, str)
                  and os.path.basename(p.rstrip(os.sep))
                  in ("site-packages", "dist-packages")]
    for path in libraries:
        add(path, LIBRARY)
    add(os.path.dirname(os.path.abspath(torch.__file__)), INTERNAL)
    add(os.path.dirname(os.path.abspath(__file__)), INTERNAL)
    rules["<frozen "] = STDLIB               # frozen stdlib modules
    rules["<eval_with_key>"] = INTERNAL      # code torch.fx generates
    return sorted(rules.items(), key=lambda kv: (-len(kv[0]), kv[0]))


def ensure_site_rules() -> None:
    """Hands the rule to _tdcore once: the first time recording is on, or
    at configuration for a device without float64 (its first downcast is
    said, report or not)."""
    global _rules_set
    if not _rules_set:
        _tdcore.set_site_rules(site_rules())
        _rules_set = True


# ---- rows -------------------------------------------------------------------


def rows() -> List[Dict[str, Any]]:
    """This process's records as dicts, sorted by file, line, API."""
    out = []
    for (filename, line, function, api, what, src, dst), count in \
            _tdcore.records().items():
        out.append({"file": filename, "line": line, "function": function,
                    "api": api, "what": what, "from": src, "to": dst,
                    "count": count})
    out.sort(key=_order)
    return out


def _order(r: Dict[str, Any]) -> Tuple[Any, ...]:
    return (r["file"], r["line"], r["api"], r["what"], r["from"], r["to"])


def _key(r: Dict[str, Any]) -> _Key:
    return (r["file"], r["line"], r["function"], r["api"], r["what"],
            r["from"], r["to"])


def merge(parts: List[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """The records of several processes as one list: counts summed per
    site, `processes` the number of parts that hit it."""
    merged: Dict[_Key, Dict[str, Any]] = {}
    for part in parts:
        for r in part:
            k = _key(r)
            row = merged.get(k)
            if row is None:
                row = merged[k] = {**r, "count": 0, "processes": 0}
            row["count"] += int(r["count"])
            row["processes"] += 1
    return sorted(merged.values(), key=_order)


# ---- roles: root and contributors ------------------------------------------


def _inherited() -> Optional[Tuple[int, str]]:
    raw = os.environ.get(ENV_ROOT, "")
    pid, sep, path = raw.partition(":")
    if not sep or not pid.isdigit() or not path:
        return None
    return int(pid), path


def _take_role(want_root: bool) -> None:
    """Root or contributor, from the environment; called with _lock held."""
    global _role, _share, _owner
    _owner = os.getpid()
    inherited = _inherited()
    if inherited is not None:
        pid, path = inherited
        if pid == os.getpid() and want_root:
            # The same process after exec (the launcher's restart).
            os.makedirs(path, exist_ok=True)
            _role, _share = "root", path
            return
        if pid != os.getpid() and os.path.isdir(path):
            _role, _share = "child", path
            return
    if want_root:
        import tempfile
        _share = tempfile.mkdtemp(prefix="torchdevice-report-")
        os.environ[ENV_ROOT] = f"{os.getpid()}:{_share}"
        _role = "root"


def _stop_root() -> None:
    """The report was turned off in the root: nobody collects any more."""
    global _role, _share
    if _role == "root":
        import shutil
        if os.environ.get(ENV_ROOT, "").startswith(f"{os.getpid()}:"):
            del os.environ[ENV_ROOT]
        if _share:
            shutil.rmtree(_share, ignore_errors=True)
        _role, _share = None, None
        _restore_sigterm()


def activate(setting: Union[bool, str]) -> bool:
    """Remembers the report setting, takes this process's role and, the
    first time, registers the exit hooks.  Returns whether recording must
    be on for it (a contributor records whatever its own setting)."""
    global _registered, _setting
    with _lock:
        _setting = setting
        if _role is None:
            _take_role(bool(setting))
        elif _role == "root" and not setting:
            _stop_root()
        if _role is not None:
            if not _registered:
                atexit.register(_at_exit)
                _register_multiprocessing_exit()
                _registered = True
            _install_sigterm()
        return bool(setting) or _role == "child"


def role() -> Optional[str]:
    return _role


def needs_recording() -> bool:
    """The report is on here, or this process contributes to its root's."""
    return bool(_setting) or _role == "child"


def _register_multiprocessing_exit() -> None:
    """A multiprocessing child ends with os._exit after its own exit
    function (util._exit_function): atexit does not run there, its
    finalizers do.  They are cleared when the child starts, so the
    finalizer is registered again in each child."""
    try:
        from multiprocessing import util
    except ImportError:     # pragma: no cover - multiprocessing is stdlib
        return
    util.register_after_fork(_after_fork_anchor, _mp_child_started)
    util.Finalize(None, _finish, exitpriority=-100)   # in this process too


class _Anchor:
    """register_after_fork keeps its object weakly: this one lives as long
    as the module."""


_after_fork_anchor = _Anchor()


def _mp_child_started(_: object) -> None:
    from multiprocessing import util
    util.Finalize(None, _finish, exitpriority=-100)


def _after_fork_in_child() -> None:
    """A forked child starts with a copy of its parent's records: they are
    the parent's, not the child's."""
    global _role, _done, _lock, _owner
    _lock = threading.RLock()    # another thread may have held it
    if _role is None:
        return
    _tdcore.clear_records()
    _role, _done = "child", False
    if not os.path.isdir(_share or ""):
        _role = None
    _owner = os.getpid()         # last: the state above is now this child's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- SIGTERM ----------------------------------------------------------------


def _install_sigterm() -> None:
    """Only where nobody else handles SIGTERM (and only from the main
    thread, where Python allows it)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() \
            is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):   # not the main interpreter
        return
    _sigterm_installed = True
    _sigwake.start(signal.SIGTERM, _handler_is_ours)


def _handler_is_ours() -> bool:
    return signal.getsignal(signal.SIGTERM) is _on_sigterm


def _restore_sigterm() -> None:
    global _sigterm_installed
    if _sigterm_installed and threading.current_thread() \
            is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigwake.stop()
        _sigterm_installed = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """Writes this process's part, then dies of the signal as it would
    have without the handler (exit status 128+15 in a shell).  A signal
    that arrives while the part is being written (a pool worker told to
    stop as it was leaving anyway) waits for the writing to end."""
    global _pending_signal
    _sigwake.handler_started()
    if _finishing:
        _pending_signal = signum
        return
    try:
        _finish(from_signal=True)
    finally:
        _die(signum)


def _die(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# ---- at the end -------------------------------------------------------------


def _wait_for_children(from_signal: bool) -> None:
    """The root merges what its children left: let multiprocessing end them
    first, as it does at exit (pools terminated, children joined), or, after
    SIGTERM, give them a moment to write their parts."""
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is None:
        return
    try:
        if not from_signal:
            mp_util._exit_function()
            return
        import time

        import multiprocessing
        deadline = time.monotonic() + SIGTERM_GRACE_S
        for child in multiprocessing.active_children():
            child.join(max(0.0, deadline - time.monotonic()))
    except Exception:   # the report must not turn an exit into a crash
        pass


def _finish(from_signal: bool = False) -> None:
    """This process's part, once: a contributor leaves its records for the
    root; the root prints and writes the merged report."""
    global _done, _finishing
    if _owner != os.getpid():
        # Forked a moment ago, at-fork hook not yet run (a pool worker that
        # SIGTERM reaches as it starts): the role and records are still the
        # parent's.  This process has done nothing of its own to hand, and
        # acting as its parent would write the report and remove the
        # directory the other processes hand their parts to.
        return
    with _lock:
        if _done or _role is None:
            return
        _done = _finishing = True
        role_now = _role
    try:
        if role_now == "child":
            _contribute()
        else:
            _wait_for_children(from_signal)
            parts = [rows()] + _collected()
            emit(_setting, records=merge([p for p in parts if p]),
                 processes=sum(1 for p in parts if p))
            if _share:
                import shutil
                shutil.rmtree(_share, ignore_errors=True)
    finally:
        _finishing = False
        if _pending_signal is not None and not from_signal:
            _die(_pending_signal)


def _at_exit() -> None:
    _finish()


def _contribute() -> None:
    records = rows()
    if not records:
        return
    share = _share or ""
    if not os.path.isdir(share):
        # The root has already written its report: say it here rather than
        # lose it.
        try:
            sys.stderr.write(f"TorchDevice: process {os.getpid()} ended after "
                             f"the report was written; its own part:\n")
        except (OSError, ValueError):
            return
        emit(True, records=records, processes=1)
        return
    import json
    import tempfile
    doc = {"pid": os.getpid(), "argv": list(sys.argv), "records": records}
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".tmp",
                                   dir=share)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, tmp[:-len(".tmp")] + ".json")
    except OSError as exc:
        _log.logger.error("could not hand this process's report to its "
                          "parent: %s", exc)


def _collected() -> List[List[Dict[str, Any]]]:
    """The parts the contributors left."""
    import json
    parts = []
    try:
        names = sorted(os.listdir(_share or ""))
    except OSError:
        return parts
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(_share or "", name),
                      encoding="utf-8") as fh:
                parts.append(list(json.load(fh)["records"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return parts


# ---- output -----------------------------------------------------------------


def _short_path(filename: str, cwd: str) -> str:
    if filename.startswith(cwd + os.sep):
        return filename[len(cwd) + 1:]
    return filename


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _split(records: List[Dict[str, Any]]
           ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(call-site records, host fallbacks)."""
    calls = [r for r in records if r["what"] != _log.FELL_BACK]
    fell = [r for r in records if r["what"] == _log.FELL_BACK]
    return calls, fell


def _site(r: Dict[str, Any], cwd: str) -> str:
    site = f"{_short_path(r['file'], cwd)}:{r['line']}"
    if r["function"] and r["function"] != "<module>":
        site += f" ({r['function']})"
    return site


def _columns(head: Tuple[str, ...], body: List[Tuple[str, ...]],
             left: int) -> List[str]:
    """Aligned lines: the first `left` columns to the left, the rest (the
    numbers) to the right."""
    widths = [max(len(row[i]) for row in [head] + body)
              for i in range(len(head))]
    lines = []
    for row in [head] + body:
        cells = [row[i].ljust(widths[i]) for i in range(left)]
        cells += [row[i].rjust(widths[i]) for i in range(left, len(row))]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_table(records: List[Dict[str, Any]],
                 profile: Optional[str] = None, processes: int = 1) -> str:
    """The human table: site, API, what happened, count (and, for several
    processes, how many hit each site); then the operators that fell back
    to the host, if any."""
    if profile is None:
        profile = _tdcore.settings()["profile"]
    calls, fell = _split(records)
    cwd = os.getcwd()
    several = processes > 1
    if not calls:
        lines = [f"TorchDevice report (profile {profile}): no call site "
                 f"needed a change."]
    else:
        head: Tuple[str, ...] = ("site", "api", "what", "from -> to", "count")
        if several:
            head += ("processes",)
        body = []
        for r in calls:
            row: Tuple[str, ...] = (_site(r, cwd), r["api"], r["what"],
                                    f"{r['from']} -> {r['to']}",
                                    str(r["count"]))
            if several:
                row += (str(r.get("processes", 1)),)
            body.append(row)
        title = (f"TorchDevice report (profile {profile}): "
                 f"{_plural(len(calls), 'call site')}, "
                 f"{_plural(sum(r['count'] for r in calls), 'call')}")
        if several:
            title += f" in {processes} processes"
        lines = [title] + _columns(head, body, 4)
    if fell:
        lines += _fallback_lines(fell, cwd, several)
    return "\n".join(lines) + "\n"


def _fallback_lines(fell: List[Dict[str, Any]], cwd: str,
                    several: bool) -> List[str]:
    ops = {r["api"] for r in fell}
    title = (f"fell back to host: {_plural(len(ops), 'operator')} at "
             f"{_plural(len(fell), 'call site')}, "
             f"{_plural(sum(r['count'] for r in fell), 'call')}")
    head: Tuple[str, ...] = ("site", "op", "device", "count")
    if several:
        head += ("processes",)
    body = []
    for r in fell:
        row: Tuple[str, ...] = (_site(r, cwd), r["api"], r["from"],
                                str(r["count"]))
        if several:
            row += (str(r.get("processes", 1)),)
        body.append(row)
    return [title] + _columns(head, body, 3)


def document(records: List[Dict[str, Any]],
             processes: int = 1) -> Dict[str, Any]:
    """The JSON document (docs/report.md: schema torchdevice-report/1)."""
    import platform

    import torch

    from . import __version__
    settings = _tdcore.settings()
    calls, fell = _split(records)
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
        "processes": processes,
        "records": [{**r, "processes": r.get("processes", 1)}
                    for r in calls],
        "fell_back_to_host": [
            {"op": r["api"], "device": r["from"], "count": r["count"],
             "processes": r.get("processes", 1), "file": r["file"],
             "line": r["line"], "function": r["function"]}
            for r in fell],
    }


def json_path(setting: Union[bool, str]) -> Optional[str]:
    if isinstance(setting, str):
        return setting.replace("{pid}", str(os.getpid()))
    return None


def write_json(path: str, records: List[Dict[str, Any]],
               processes: int = 1) -> None:
    """Writes the document atomically (a reader never sees half a file)."""
    import json
    doc = document(records, processes)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def emit(setting: Union[bool, str], stream: Optional[TextIO] = None,
         records: Optional[List[Dict[str, Any]]] = None,
         processes: Optional[int] = None) -> None:
    """Prints the table and writes the JSON file that `setting` asks for
    (this process's records unless others are given)."""
    if not setting:
        return
    if records is None:
        records = rows()
    if processes is None:
        processes = 1 if records else 0
    out = sys.stderr if stream is None else stream
    path = json_path(setting)
    if path is not None:
        try:
            write_json(path, records, processes)
        except OSError as exc:
            _log.logger.error("could not write the report to %s: %s", path,
                              exc)
            path = None
    try:
        out.write(format_table(records, processes=processes))
        if path is not None:
            out.write(f"TorchDevice report written to {path}\n")
        out.flush()
    except (OSError, ValueError):
        pass   # stderr closed: nothing left to tell
