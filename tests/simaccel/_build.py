"""Builds the simulated accelerator's shared library against the installed torch.

    python tests/simaccel/_build.py [--verbose] [--install-autoload | --uninstall-autoload]

The library goes to build/simaccel/ (git-ignored; SIMACCEL_BUILD_DIR moves
it).  torch.utils.cpp_extension compiles it with ninja; without ninja the two
translation units are compiled directly with the same flags.  A stamp file
records the torch version and a hash of the sources, so that a stale build is
recognised instead of loaded.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCES = (HERE / "csrc" / "runtime.cpp", HERE / "csrc" / "kernels.cpp")
HEADERS = (HERE / "csrc" / "simaccel.h",)
LIBRARY_NAME = "simaccel_backend"
EXTRA_CFLAGS = ["-O1", "-Wall", "-Wextra", "-Wno-unused-parameter"]
AUTOLOAD_PTH = "simaccel_autoload.pth"
# The lock file torch.utils.cpp_extension keeps in a build directory while it
# builds there.
TORCH_BUILD_LOCK = "lock"


def build_dir() -> Path:
    return Path(os.environ.get("SIMACCEL_BUILD_DIR") or ROOT / "build" / "simaccel")


def library_path() -> Path:
    return build_dir() / f"{LIBRARY_NAME}.so"


def fingerprint() -> dict:
    """What the built library depends on: sources, flags and the torch build."""
    import torch

    digest = hashlib.sha256(" ".join(EXTRA_CFLAGS).encode())
    for path in (*SOURCES, *HEADERS):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return {"torch": torch.__version__, "torch_path": str(Path(torch.__file__).parent),
            "sources": digest.hexdigest()}


def stale_reason() -> str | None:
    """Why the library on disk cannot be loaded as it is, or None."""
    if not library_path().is_file():
        return f"the simulated accelerator is not built ({library_path()} is missing; run `make simaccel`)"
    try:
        stamp = json.loads((build_dir() / "stamp.json").read_text())
    except (OSError, ValueError):
        return "the simulated accelerator's build has no stamp; run `make simaccel`"
    if stamp != fingerprint():
        return ("the simulated accelerator's build is stale (its sources or torch changed); "
                "run `make simaccel`")
    return None


@contextlib.contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _compile_without_ninja(out_dir: Path, verbose: bool) -> None:
    """The same compilation cpp_extension performs, one process per source."""
    import torch
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler: `{cxx}` is not on PATH")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-isystem{p}" for p in cpp_extension.include_paths()]
    includes.append(f"-isystem{sysconfig.get_path('include')}")
    objects, jobs = [], []
    for source in SOURCES:
        obj = out_dir / (source.stem + ".o")
        objects.append(obj)
        cmd = [cxx, "-std=c++20", "-fPIC", *EXTRA_CFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *includes,
               "-c", str(source), "-o", str(obj)]
        if verbose:
            print(" ".join(cmd))
        jobs.append(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    errors = [job.communicate()[1] for job in jobs if job.wait() != 0]
    if errors:
        raise RuntimeError("compiling the simulated accelerator failed:\n" + "\n".join(errors))
    lib_dirs = cpp_extension.library_paths()
    link = [cxx, "-shared", *map(str, objects), *[f"-L{d}" for d in lib_dirs],
            *[f"-Wl,-rpath,{d}" for d in lib_dirs], "-lc10", "-ltorch_cpu", "-ltorch",
            "-o", str(library_path())]
    if verbose:
        print(" ".join(link))
    done = subprocess.run(link, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError("linking the simulated accelerator failed:\n" + done.stderr)


def build(verbose: bool = False, timeout: float = 900) -> Path:
    """Builds (or brings up to date) the library in a child process; returns
    its path.  Raises RuntimeError with the reason when it cannot be built.

    A child process, because cpp_extension loads what it builds into the
    process that builds it (simaccel.load() is the one place that loads it)."""
    if stale_reason() is None:
        return library_path()
    cmd = [sys.executable, str(Path(__file__).resolve())] + (["--verbose"] if verbose else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"building the simulated accelerator failed: {exc}") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError("\n".join(lines[-25:]) or f"build exited with {done.returncode}")
    return library_path()


def _build_here(verbose: bool = False) -> Path:
    out_dir = build_dir()
    with _locked(out_dir):
        if stale_reason() is None:
            return library_path()
        from torch.utils import cpp_extension

        started = time.monotonic()
        (out_dir / "stamp.json").unlink(missing_ok=True)
        # torch's own build lock: every build of this directory holds .lock
        # first, so one found now was left by a build that was killed, and
        # torch would wait for it forever without a word.
        (out_dir / TORCH_BUILD_LOCK).unlink(missing_ok=True)
        try:
            cpp_extension.verify_ninja_availability()
            have_ninja = True
        except RuntimeError:
            have_ninja = False
        if have_ninja:
            cpp_extension.load(name=LIBRARY_NAME, sources=[str(s) for s in SOURCES],
                               extra_cflags=EXTRA_CFLAGS,
                               build_directory=str(out_dir), is_python_module=False,
                               is_standalone=False, verbose=verbose, keep_intermediates=True)
        else:
            _compile_without_ninja(out_dir, verbose)
        (out_dir / "stamp.json").write_text(json.dumps(fingerprint()))
        if verbose:
            how = "ninja" if have_ninja else "the compiler directly"
            print(f"simaccel built with {how} in {time.monotonic() - started:.1f} s: "
                  f"{library_path()}")
        return library_path()


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def install_autoload() -> Path:
    """Puts the start-up hook into this interpreter's site-packages.

    The .pth line costs one environment lookup per interpreter start and does
    nothing else unless SIMACCEL_AUTOLOAD=1 (tests/simaccel/README.md).
    """
    pth = _site_packages() / AUTOLOAD_PTH
    pth.write_text(autoload_line() + "\n")
    return pth


def autoload_line() -> str:
    hook = HERE / "_site_hook.py"
    return ("import os; os.environ.get('SIMACCEL_AUTOLOAD', '') == '1' and "
            f"__import__('runpy').run_path({str(hook)!r})")


def uninstall_autoload() -> None:
    (_site_packages() / AUTOLOAD_PTH).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--install-autoload", action="store_true",
                       help="also install the SIMACCEL_AUTOLOAD start-up hook")
    group.add_argument("--uninstall-autoload", action="store_true")
    args = parser.parse_args(argv)
    if args.uninstall_autoload:
        uninstall_autoload()
        return 0
    try:
        path = _build_here(verbose=args.verbose)
    except Exception as exc:  # noqa: BLE001  (the reason is the output)
        print(f"simaccel: build failed: {exc}", file=sys.stderr)
        return 1
    print(f"simaccel: {path}")
    if args.install_autoload:
        print(f"simaccel: start-up hook {install_autoload()} (active with SIMACCEL_AUTOLOAD=1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
