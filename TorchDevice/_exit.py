"""A moment without the GIL at exit, for torch's own C++ threads.

Some of torch's worker threads drop Python objects a moment after the
program's wait on their work returned: gloo's threads a finished
collective (with its tensors), autograd's device threads the finished
backward pass (it holds the ``contextvars`` context ``backward()`` stashes
for them).  Dropping a Python object takes the GIL.  If the main thread has
begun to finalize the interpreter by then, taking the GIL ends that C++
thread with ``pthread_exit``, whose unwinding aborts the whole process
("terminate called without an active exception", exit status -6) after a
run that completed.  A program that ends right after its last collective
or its last ``backward()`` meets it.

So the main thread sleeps for a moment, without the GIL, in an ``atexit``
hook: those run while the interpreter is still whole, and the threads
finish then.  It is registered where a program runs on such threads
under TorchDevice off CUDA: gloo (given for NCCL, or chosen by the
program), and every profile whose device is neither the CPU nor CUDA (MPS,
the other accelerators), where backward runs on a device thread.  For the
second, on Linux the sleep happens only if autograd started a device
thread (docs/reliability.md, "At exit").
"""
from __future__ import annotations

import atexit
import os
import threading
import time

# How long the main thread leaves the GIL to torch's threads at exit.
GRACE_S = 0.05

_lock = threading.Lock()
_registered = False
_always = False


def _autograd_device_threads() -> bool:
    """Whether autograd started a device thread ("pt_autograd_N"); True
    where threads cannot be listed (not Linux)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm", encoding="ascii",
                      errors="replace") as f:
                if f.read().startswith("pt_autograd"):
                    return True
        except OSError:
            continue            # the thread ended meanwhile
    return False


def _at_exit() -> None:
    if _always or _autograd_device_threads():
        time.sleep(GRACE_S)


def guard(*, always: bool) -> None:
    """Registers the exit hook once; `always`: sleep whatever threads
    there are (gloo), else only for autograd's device threads."""
    global _registered, _always
    with _lock:
        _always = _always or always
        if not _registered:
            atexit.register(_at_exit)
            _registered = True
