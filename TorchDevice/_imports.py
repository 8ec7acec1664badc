"""Running a function right after torch imports one of its optional parts.

Some of what TorchDevice adds belongs to parts of torch that are costly to
import and that most programs never load (``torch._dynamo``,
``torch.distributed.tensor``).  ``after(name, fn)`` runs ``fn`` at once
where ``name`` is already imported, and otherwise right after its import,
through a finder placed first on ``sys.meta_path`` that wraps the module's
own loader.  The finder stays only while something waits.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

_log = logging.getLogger("TorchDevice")
_lock = threading.RLock()
# module name -> [(fn, what its failure means)]
_waiting: Dict[str, List[Tuple[Callable[[], None], str]]] = {}
_finder: Optional["_Finder"] = None


def _run(fn: Callable[[], None], failed: str) -> None:
    """Runs fn; an error is logged, never raised: it must not break the
    program's own import of the module."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any error, logged
        _log.warning("TorchDevice: %s (%s: %s)", failed, type(exc).__name__,
                     exc)


class _Loader(importlib.abc.Loader):
    """Runs the module's own loader, then what waits for the module."""

    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self._inner = inner
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)   # type: ignore[attr-defined]
        with _lock:
            callbacks = _waiting.pop(self._name, [])
            _drop_finder_if_idle()
        for fn, failed in callbacks:
            _run(fn, failed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        with _lock:
            if fullname not in _waiting:
                return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader,
                                                       "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def _drop_finder_if_idle() -> None:
    global _finder
    if _finder is not None and not _waiting:
        try:
            sys.meta_path.remove(_finder)
        except ValueError:
            pass
        _finder = None


def after(name: str, fn: Callable[[], None], failed: str) -> None:
    """Runs fn now if module `name` is imported, else once right after it
    is (once per call of after()); an error in fn is logged as `failed`
    says what it means."""
    global _finder
    with _lock:
        if name not in sys.modules:
            callbacks = _waiting.setdefault(name, [])
            if all(f is not fn for f, _ in callbacks):
                callbacks.append((fn, failed))
            if _finder is None:
                _finder = _Finder()
                sys.meta_path.insert(0, _finder)
            return
    _run(fn, failed)


def cancel(name: str, fn: Callable[[], None]) -> None:
    """Forgets fn waiting for `name` (nothing if it does not wait)."""
    with _lock:
        callbacks = [c for c in _waiting.get(name, []) if c[0] is not fn]
        _waiting[name] = callbacks
        if not callbacks:
            _waiting.pop(name, None)
        _drop_finder_if_idle()


def waiting(name: str) -> bool:
    """Whether something waits for the import of `name` (tests)."""
    with _lock:
        return bool(_waiting.get(name))
