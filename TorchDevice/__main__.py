"""The command line: `python -m TorchDevice …` and the `torchdevice` script.

    python -m TorchDevice run [options] script.py [args ...]
    python -m TorchDevice run [options] -m module [args ...]
    python -m TorchDevice [options] script.py [args ...]     (the same as run)
    python -m TorchDevice info [--json]
    python -m TorchDevice doctor [--only-cannot] [--json] PATH ...
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

USAGE = """\
usage: python -m TorchDevice {run,info,doctor} ...

  run [options] script.py [args ...]   run a program with TorchDevice enabled
  run [options] -m module [args ...]   (options: run --help)
  [options] script.py [args ...]       the same as run (also -m module)
  info [--json]                        hardware, policy, configuration and
                                       what torch.cuda answers
  doctor [--only-cannot] [--json] PATH ...
                                       scan code for CUDA-specific calls
"""


def _names_a_program(arg: str) -> bool:
    """Whether the first argument starts what `run` takes: a script (a
    file that exists, or a name ending in .py, so that a missing one gets
    Python's own message), `-m module`, or one of run's options."""
    if arg.startswith("-"):
        from ._launcher import OPTIONS
        return arg.startswith("-m") or any(
            arg == o or arg.startswith(o + "=") for o in OPTIONS)
    return arg.endswith(".py") or os.path.isfile(arg)


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        from . import _launcher
        return _launcher.run(rest)
    if command == "info":
        from . import _info
        return _info.main(rest)
    if command == "doctor":
        from . import _doctor
        return _doctor.main(rest)
    if _names_a_program(command):
        # `python -m TorchDevice train.py`, as `python -m cProfile train.py`
        # is written: what a user tries first runs instead of failing.
        from . import _launcher
        return _launcher.run(args)
    sys.stderr.write(USAGE + f"error: unknown command {command!r}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
