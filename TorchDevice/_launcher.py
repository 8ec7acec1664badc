"""`python -m TorchDevice run …`: runs a program unmodified with TorchDevice
enabled before its first line, as if Python had run it directly.

What "as if run directly" means here, and is tested (tests/test_launcher.py):
`sys.argv`, `sys.path[0]`, a fresh `__main__` module (`__file__`,
`__loader__`, `__spec__`, `if __name__ == "__main__"`), the exit code, and
the traceback of an uncaught exception, which shows the program's frames
only, exactly as Python prints them.
"""
from __future__ import annotations

import builtins
import os
import sys
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import TorchDevice

from . import _config

# Options of `run` and the environment variables they set (so that child
# processes, DataLoader workers and spawn pools included, inherit them).
OPTIONS: Dict[str, str] = {
    "--target": _config.ENV_TARGET,
    "--mode": _config.ENV_MODE,
    "--float64": _config.ENV_FLOAT64,
    "--log-level": _config.ENV_LOG_LEVEL,
    "--report": _config.ENV_REPORT,
    "--capabilities": _config.ENV_CAPABILITIES,
}

USAGE = """\
usage: python -m TorchDevice run [options] script.py [args ...]
       python -m TorchDevice run [options] -m module [args ...]

Runs the program with TorchDevice enabled before its first line.

options:
  --report[=PATH]      print a table of call sites at exit (and write the
                       JSON report to PATH; "{pid}" becomes the process id)
  --log-level LEVEL    log each new call site (INFO) or less (WARNING)
  --target PROFILE     force the profile: cuda, mps, accelerator or cpu
  --mode MODE          cpu-stays-cpu (default) or accelerate
  --float64 POLICY     downcast (default) or error
  --capabilities NAME  profile accelerator: use the device with this
                       capability record (mps, cuda, cpu, accelerator)
"""


class UsageError(Exception):
    """Bad command line: printed with the usage, exit status 2."""


def early_environment(record: Optional[Any] = None) -> Dict[str, str]:
    """Variables that torch (or the device's library) reads when it loads,
    so they must be in the environment before `import torch`: the fallback
    variable of the device's capability record (on Apple,
    PYTORCH_ENABLE_MPS_FALLBACK), so that operators the device lacks run on
    the host instead of raising.  `record`: the record of the detected
    device with TORCHDEVICE_CAPABILITIES applied, by default."""
    if record is None:
        from . import _capabilities, _patches
        override = os.environ.get(_config.ENV_CAPABILITIES, "").strip()
        record = _capabilities.record_for(
            _patches.detect_profile(),
            override if override in _capabilities.RECORDS else None)
    if record.fallback_variable:
        return {record.fallback_variable: "1"}
    return {}


def parse(argv: Sequence[str]
          ) -> Tuple[Dict[str, str], Optional[str], Optional[str], List[str]]:
    """(environment from options, script, module, program args)."""
    env: Dict[str, str] = {}
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg == "-m":
            if i + 1 >= len(args):
                raise UsageError("-m needs a module name")
            return env, None, args[i + 1], args[i + 2:]
        if arg.startswith("-m") and len(arg) > 2:
            return env, None, arg[2:], args[i + 1:]
        if arg in ("-h", "--help"):
            raise UsageError("")
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in OPTIONS:
                raise UsageError(f"unknown option {name}")
            if name == "--report" and not eq:
                value = "1"
            elif not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"{name} needs a value")
                i += 1
                value = args[i]
            env[OPTIONS[name]] = value
            i += 1
            continue
        break
    if i >= len(args):
        raise UsageError("nothing to run: give a script or -m module")
    return env, args[i], None, args[i + 1:]


def _reexec_if_needed(early: Dict[str, str]) -> None:
    """torch is loaded by the time this runs (`import TorchDevice` loads it);
    when a variable it reads at load time was missing, start over with it
    set, in this same process (exec), with the same interpreter options."""
    missing = {k: v for k, v in early.items() if k not in os.environ}
    os.environ.update(missing)
    if missing and "torch" in sys.modules:
        argv = list(getattr(sys, "orig_argv", [])) or [sys.executable,
                                                       *sys.argv]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *argv[1:]])


def _configure(env: Dict[str, str]) -> None:
    """Applies the options to this process as well as to its children."""
    os.environ.update(env)
    os.environ["TORCHDEVICE"] = "1"
    try:
        cfg = _config.from_environment()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # This process read the environment when TorchDevice was imported,
    # before the options were in it.
    TorchDevice.configure(target=cfg.target, mode=cfg.mode,
                          float64=cfg.float64, log_level=cfg.log_level,
                          report=cfg.report, capabilities=cfg.capabilities)
    TorchDevice.enable()


def _fresh_main(**attrs: object) -> types.ModuleType:
    """A new `__main__`, as the interpreter makes it, left in sys.modules
    so that pickle and multiprocessing find the program's classes."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    main.__dict__["__annotations__"] = {}
    main.__dict__.update(attrs)
    sys.modules["__main__"] = main
    return main


def _set_path0(entry: str) -> None:
    if getattr(sys.flags, "safe_path", False):
        return
    if sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _run_file(path: str, args: List[str]) -> None:
    from importlib.machinery import SourceFileLoader

    abspath = os.path.abspath(path)
    if os.path.isdir(abspath) or not abspath.endswith((".py", ".pyw")) \
            and _is_zip(abspath):
        _run_archive(path, abspath, args)
        return
    try:
        import io
        with io.open_code(abspath) as fh:
            source = fh.read()
    except OSError as exc:
        prog = (getattr(sys, "orig_argv", None) or [sys.executable])[0]
        sys.stderr.write(f"{prog}: can't open file {abspath!r}: "
                         f"[Errno {exc.errno}] {exc.strerror}\n")
        raise SystemExit(2) from None
    sys.argv = [path, *args]
    _set_path0(os.path.dirname(os.path.realpath(abspath)))
    main = _fresh_main(__file__=abspath, __cached__=None,
                       __loader__=SourceFileLoader("__main__", abspath))

    def body() -> None:
        # Compiled here so that a SyntaxError prints as Python prints it:
        # the message and the caret, no launcher frames.
        exec(compile(source, abspath, "exec", dont_inherit=True),
             main.__dict__)
    _execute(body)


def _is_zip(path: str) -> bool:
    import zipfile
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _run_archive(path: str, abspath: str, args: List[str]) -> None:
    """A directory or zip file with a __main__.py: runpy does what Python
    does (it puts the archive on sys.path)."""
    import runpy
    sys.argv = [path, *args]
    _set_path0(abspath)
    _execute(lambda: runpy.run_path(abspath, run_name="__main__"))


def _run_module(name: str, args: List[str]) -> None:
    import runpy
    sys.argv = ["-m", *args]
    _set_path0(os.getcwd())
    _fresh_main()
    # The interpreter's own `-m` implementation: same lookups, same errors,
    # same frames in tracebacks, sys.argv[0] set to the module's file.
    run = getattr(runpy, "_run_module_as_main")
    _execute(lambda: run(name, True))


def _execute(body: Callable[[], object]) -> None:
    """The last launcher frame: tracebacks are cut just below it."""
    body()


def _strip_launcher(tb: Optional[types.TracebackType]
                    ) -> Optional[types.TracebackType]:
    t = tb
    while t is not None:
        if t.tb_frame.f_code is _execute.__code__:
            # Below: the body that called into the program, then its code.
            inner = t.tb_next
            return inner.tb_next if inner is not None else None
        t = t.tb_next
    return tb


def _install_excepthook() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):  # type: ignore[no-untyped-def]
        stripped = _strip_launcher(tb)
        if value is not None and stripped is not tb:
            value.__traceback__ = stripped
        previous(kind, value, stripped)

    sys.excepthook = hook


def run(argv: Sequence[str]) -> int:
    """`run` subcommand.  Returns only on usage errors; otherwise the
    program's own exit (SystemExit, uncaught exception) ends the process."""
    try:
        env, script, module, args = parse(argv)
    except UsageError as exc:
        if not str(exc):   # -h / --help
            sys.stdout.write(USAGE)
            return 0
        sys.stderr.write(USAGE + f"error: {exc}\n")
        return 2
    # The options first: --capabilities decides the fallback variable.
    os.environ.update(env)
    _reexec_if_needed(early_environment())
    try:
        _configure(env)
    except (UsageError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    _install_excepthook()
    if module is not None:
        _run_module(module, args)
    else:
        assert script is not None
        _run_file(script, args)
    return 0
