"""Makes sure the main thread runs TorchDevice's SIGTERM handler.

Python runs a signal handler in the main thread at its next check.  A
blocking call the main thread entered just after the signal arrived (a pool
worker waiting for its next task, `multiprocessing.Pool.terminate()` being
the normal end of `with Pool() as pool:`) never returns to check: without a
handler SIGTERM would have ended the process, with one it waits forever
and its parent waits in `join()` with it.

So while the report's handler is installed, the C-level signal handler also
writes the signal's number to a pipe (`signal.set_wakeup_fd`), and a
thread here that waits on the pipe sends the main thread the signal again
until the handler has started: the new signal interrupts the blocking call,
which checks for handlers before it is retried (PEP 475).  Where the
program uses the wakeup descriptor itself (asyncio does), it keeps it and
this module stays out of the way.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable, Optional, Tuple

# How often, and how many times, the main thread is woken again.
_WAIT_S = 0.05
_TRIES = 200

# (read end, write end, the signal, "is our handler still installed?")
_watch: Optional[Tuple[int, int, int, Callable[[], bool]]] = None
# The handler has started.  A plain flag, not a threading.Event: a fork
# while the thread waits on an Event would leave its lock held in the child.
_started = False


def start(signum: int, ours: Callable[[], bool]) -> bool:
    """From the main thread: watch for `signum` while `ours()` says the
    handler to wake for is installed.  False where the wakeup descriptor
    belongs to someone else."""
    global _watch, _started
    if _watch is not None:
        return True
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except ValueError:      # not the main thread
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        return False
    _started = False
    _watch = (read, write, signum, ours)
    threading.Thread(target=_wake, args=(read, signum, ours,
                                         threading.main_thread().ident),
                     name="TorchDevice-signal-wake", daemon=True).start()
    return True


def stop() -> None:
    """From the main thread: the handler is gone; so is the watch."""
    global _watch
    if _watch is None:
        return
    write = _watch[1]
    _watch = None
    try:
        current = signal.set_wakeup_fd(-1)
        if current != write:            # set by the program since: keep it
            signal.set_wakeup_fd(current)
    except ValueError:
        pass
    os.close(write)                     # the thread reads end of file


def handler_started() -> None:
    """Called by the handler when it runs: no more waking."""
    global _started
    _started = True


def _wake(read: int, signum: int, ours: Callable[[], bool],
          main: Optional[int]) -> None:
    try:
        while True:
            data = os.read(read, 64)
            if not data:
                return
            if signum not in data or main is None:
                continue
            for _ in range(_TRIES):
                time.sleep(_WAIT_S)
                if _started or not ours():
                    break
                signal.pthread_kill(main, signum)
    except OSError:
        return
    finally:
        try:
            os.close(read)
        except OSError:
            pass


def _before_fork() -> None:
    """The child must not write to the parent's pipe: the parent's thread
    would wake the parent.  Off for the fork (main thread only)."""
    if _watch is not None and threading.current_thread() \
            is threading.main_thread():
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass


def _after_fork_in_parent() -> None:
    if _watch is not None and threading.current_thread() \
            is threading.main_thread():
        try:
            signal.set_wakeup_fd(_watch[1], warn_on_full_buffer=False)
        except ValueError:
            pass


def _after_fork_in_child() -> None:
    """The thread did not survive the fork; the pipe is the parent's.  A new
    watch, for the same handler."""
    global _watch
    if _watch is None:
        return
    read, write, signum, ours = _watch
    _watch = None
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        current = signal.set_wakeup_fd(-1)
    except ValueError:                  # forked from another thread
        return
    if current in (-1, write):
        start(signum, ours)
    else:                               # the program's: left as it was
        signal.set_wakeup_fd(current)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork,
                        after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
