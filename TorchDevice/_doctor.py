"""`python -m TorchDevice doctor path/…`: a static scan for CUDA-specific
code.

Each finding is one of two kinds:

* ``handled``: TorchDevice takes care of it at run time (a ``"cuda"`` or
  ``"mps"`` device string, ``.cuda()``, ``torch.cuda.*`` and ``torch.mps.*``,
  ``map_location``, cuDNN flags, the ``"nccl"`` backend and DDP's device
  arguments, an optional import guarded by ``try/except ImportError``, a
  call that cannot work but sits in a ``try`` whose ``except`` catches what
  it raises; a device's ``.type`` compared with ``"cuda"`` or ``"mps"``,
  which answers as on that hardware for a device the program asked for and
  False for a tensor's device, and a tensor's ``.is_cuda`` / ``.is_mps``,
  False without that hardware: the finding says which branch runs);
* ``cannot``: nothing at run time can make it work without an NVIDIA GPU
  (CUDA-only packages, CUDA graph capture, direct NCCL calls, custom CUDA
  kernels; the ``"nccl"`` backend where "cuda" lands on an accelerator
  gloo cannot reduce), and the program does not catch the failure.

The exit status is 1 when there is a finding of the second kind, so the scan
can gate CI; each verdict is checked against real runs
(tests/test_doctor.py).  A line ending in ``# torchdevice: ignore`` is not
reported.
The scan reads source with ``ast``: nothing is imported or run.
"""
from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

HANDLED = "handled"
CANNOT = "cannot"

# Packages whose code needs an NVIDIA GPU, and what to use instead.
CUDA_ONLY_PACKAGES: Dict[str, str] = {
    "apex": "NVIDIA Apex is CUDA-only (fused kernels, amp): use torch.amp "
            "and torch.optim's fused/foreach optimizers",
    "flash_attn": "FlashAttention's kernels are CUDA-only: use "
                  "torch.nn.functional.scaled_dot_product_attention",
    "bitsandbytes": "bitsandbytes releases without a CPU backend (before its "
                    "multi-backend releases) run their 8-bit/4-bit kernels "
                    "on CUDA only",
    "xformers": "xformers' attention kernels need CUDA: use "
                "torch.nn.functional.scaled_dot_product_attention",
    "triton": "Triton kernels are compiled for GPUs (not MPS or CPU)",
    "cupy": "CuPy arrays live on NVIDIA GPUs",
    "pycuda": "PyCUDA drives the CUDA runtime directly",
    "numba.cuda": "numba.cuda kernels need an NVIDIA GPU",
    "pynvml": "NVML queries NVIDIA drivers",
    "nvidia_smi": "NVML queries NVIDIA drivers",
    "GPUtil": "GPUtil queries nvidia-smi",
    "tensorrt": "TensorRT runs on NVIDIA GPUs only",
    "torch_tensorrt": "Torch-TensorRT runs on NVIDIA GPUs only",
    "transformer_engine": "Transformer Engine's kernels need NVIDIA GPUs",
    "cudf": "RAPIDS cuDF needs an NVIDIA GPU",
    "cuml": "RAPIDS cuML needs an NVIDIA GPU",
    "cugraph": "RAPIDS cuGraph needs an NVIDIA GPU",
    "nvidia.dali": "DALI's GPU pipelines need an NVIDIA GPU",
    "mamba_ssm": "mamba_ssm's selective-scan kernels are CUDA-only",
    "causal_conv1d": "causal_conv1d's kernels are CUDA-only",
    "flashinfer": "FlashInfer's kernels are CUDA-only",
}

_NCCL_WHY = ("the NCCL backend becomes gloo at run time where there is no "
             "NVIDIA GPU")
_DEVICE_WHY = "device string: redirected to the device that is present"
_GRAPHS_WHY = ("CUDA graph capture records the operators; replay runs them "
               "again on the device that is present")

# Dotted torch APIs, matched by longest prefix.
TORCH_APIS: Dict[str, Tuple[str, str]] = {
    "torch.cuda": (HANDLED, "torch.cuda is answered from the device that "
                            "is present (emulated)"),
    "torch.cuda.amp": (HANDLED, "autocast/GradScaler use the target's "
                                "supported dtype"),
    "torch.cuda.make_graphed_callables": (
        HANDLED, "returns the callables, run eagerly"),
    "torch.cuda.graphs.make_graphed_callables": (
        HANDLED, "returns the callables, run eagerly"),
    "torch.cuda.CUDAGraph": (HANDLED, _GRAPHS_WHY),
    "torch.cuda.graph": (HANDLED, _GRAPHS_WHY),
    "torch.cuda.graphs": (HANDLED, _GRAPHS_WHY),
    "torch.cuda.jiterator": (CANNOT, "jiterator compiles CUDA C++ at run "
                                     "time"),
    "torch.cuda.nccl": (CANNOT, "torch.cuda.nccl calls NCCL directly: use "
                                "torch.distributed"),
    "torch.cuda.nccl.version": (HANDLED, "answers NCCL's version where "
                                         "is_nccl_available() says yes: "
                                         "\"nccl\" runs on gloo"),
    "torch.cuda.cudart": (HANDLED, "the profiler's start/stop and host "
                                   "memory registration succeed and do "
                                   "nothing, as with no profiler attached"),
    "torch.backends.cudnn": (HANDLED, "cuDNN flags are accepted and "
                                      "harmless"),
    "torch.backends.cuda": (HANDLED, "CUDA backend flags are accepted and "
                                     "harmless"),
    "torch.mps": (HANDLED, "torch.mps is answered from the device that is "
                           "present"),
    "torch.backends.mps": (HANDLED, "torch.backends.mps is answered from the "
                                    "device that is present"),
    # Availability: the truth for the kind that is not announced.
    "torch.backends.mps.is_available": (HANDLED, "_ANNOUNCED_mps"),
    "torch.backends.mps.is_built": (HANDLED, "_ANNOUNCED_mps"),
    "torch.mps.is_available": (HANDLED, "_ANNOUNCED_mps"),
    "torch.cuda.is_available": (HANDLED, "_ANNOUNCED_cuda"),
    "torch.utils.cpp_extension.CUDAExtension": (
        CANNOT, "builds CUDA kernels (.cu): they need nvcc and an NVIDIA "
                "GPU"),
    "torch.distributed.Backend.NCCL": (HANDLED, "_NCCL"),
}

_DEVICE_STRING = re.compile(r"(cuda|mps)(:\d+)?")
# What a device type or a tensor's is_cuda/is_mps says where that hardware
# is absent (docs/policy.md): a device the program asked for as "cuda"
# reads "cuda", so a test of it answers as on CUDA; a tensor's device
# (`x.device`) names the device really used, so a test of that is False and
# the program takes its other branch.
_HARDWARE = {"cuda": ("CUDA", "an NVIDIA GPU"), "mps": ("MPS", "an Apple GPU")}


def _type_test_why(kind: str, of_tensor: bool) -> str:
    name, hardware = _HARDWARE[kind]
    if of_tensor:
        return (f"never {kind!r} without {hardware}: a tensor's device names "
                f"the device really used, so the program takes its "
                f"non-{name} branch here{_BRANCH_ON_ACCELERATOR}")
    return (f"a device the program asked for as {kind!r} reads {kind!r}, so "
            f"this answers as on {name}; a tensor's device (x.device) names "
            f"the device really used, never {kind!r} without {hardware}")


def _is_kind_why(kind: str) -> str:
    name, hardware = _HARDWARE[kind]
    return (f"False without {hardware}: the tensor is on the device really "
            f"used, so the program takes its non-{name} branch here"
            f"{_BRANCH_ON_ACCELERATOR}")


# What that branch can do where the requests land on another accelerator
# (docs/policy.md, "When a host tensor meets an accelerator tensor").
_BRANCH_ON_ACCELERATOR = (
    "; on an accelerator (MPS) that branch can leave the tensors it makes "
    "on the host, beside the program's on the device "
    "(TORCHDEVICE_MODE=accelerate sends tensors made without a device "
    "there too)")
# Keyword arguments that name CUDA devices for torch.distributed and
# DataParallel, dropped at run time (docs/compile-checkpoints-distributed.md).
_DEVICE_KEYWORDS = {"device_ids", "output_device", "device_id"}
_IGNORE = re.compile(r"#\s*torchdevice:\s*ignore\b")
_SKIP_DIRS = {"__pycache__", "site-packages", "node_modules", "build", "dist",
              "venv", "env"}
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception",
                  "BaseException"}
# What the constructs that cannot run raise here (RuntimeError from the
# masquerade, AssertionError/AttributeError from torch's CPU build, OSError
# from the extension builder): a try that catches one handles them.
_RUNTIME_ERRORS = {"RuntimeError", "AssertionError", "AttributeError",
                   "OSError", "NotImplementedError", "Exception",
                   "BaseException"}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    col: int
    kind: str        # HANDLED or CANNOT
    what: str        # the code construct, short
    why: str         # what TorchDevice does, or why it cannot

    def text(self) -> str:
        return (f"{self.file}:{self.line}:{self.col}: {self.kind}: "
                f"{self.what} -- {self.why}")


def _announced() -> str:
    """The kind announced on a machine with neither CUDA nor MPS, as `run`
    will configure it (docs/masquerade.md)."""
    return os.environ.get("TORCHDEVICE_ANNOUNCE", "cuda").strip().lower() \
        or "cuda"


def _availability_why(kind: str) -> str:
    if _announced() == kind:
        return (f"answers True: {kind} is the kind announced where neither "
                f"CUDA nor MPS is present")
    other = "cuda" if kind == "mps" else "mps"
    return (f"answers False where neither CUDA nor MPS is present ({other} "
            f"is announced): the program takes its non-{kind} branch; "
            f"TORCHDEVICE_ANNOUNCE={kind} announces {kind} instead")


def _nccl_verdict() -> Tuple[str, str]:
    """gloo stands in for NCCL where "cuda" lands on the host; it reduces
    host (and CUDA) tensors only, so where "cuda" lands on another
    accelerator (MPS, ...) the program's collectives cannot run
    (docs/compile-checkpoints-distributed.md).  The profile is the one
    `run` configures on this machine, TORCHDEVICE_TARGET included."""
    from . import policy
    settings = policy()
    if settings["profile"] in ("cpu", "cuda"):
        return HANDLED, _NCCL_WHY
    return CANNOT, (f"gloo stands in for NCCL and reduces host tensors "
                    f"only: collectives of tensors on {settings['device']} "
                    f"cannot run; TORCHDEVICE_TARGET=cpu runs the ranks on "
                    f"the host")


def _lookup_api(dotted: str) -> Optional[Tuple[str, str]]:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        hit = TORCH_APIS.get(".".join(parts[:n]))
        if hit is not None:
            if hit[1].startswith("_ANNOUNCED_"):
                return hit[0], _availability_why(hit[1][len("_ANNOUNCED_"):])
            if hit[1] == "_NCCL":
                return _nccl_verdict()
            return hit
    return None


def _bitsandbytes_version_with_host_backend() -> Optional[str]:
    """The version of the bitsandbytes installed here where it has its own
    CPU backend (bitsandbytes/backends/cpu), else None.  Such a release picks
    each kernel by the device a tensor is really on, and TorchDevice tells it
    the truth about CUDA (docs/masquerade.md), so it runs where "cuda" lands.
    Read from the installed files: importing it would import torch."""
    from importlib import metadata
    try:
        dist = metadata.distribution("bitsandbytes")
    except metadata.PackageNotFoundError:
        return None
    backend = dist.locate_file("bitsandbytes/backends/cpu/ops.py")
    return dist.version if os.path.exists(str(backend)) else None


def _package_verdict(pkg: str) -> Tuple[str, str]:
    if pkg == "bitsandbytes":
        version = _bitsandbytes_version_with_host_backend()
        if version is not None:
            return HANDLED, (f"bitsandbytes {version} has CPU and MPS "
                             f"backends and is told the truth about CUDA: "
                             f"each kernel runs where the tensor really is")
    return CANNOT, CUDA_ONLY_PACKAGES[pkg]


def _package_of(module: str) -> Optional[str]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in CUDA_ONLY_PACKAGES:
            return name
    return None


def _catches(handler: ast.ExceptHandler, names: set) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) \
        else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in names for t in types)


def _handles_import_error(handler: ast.ExceptHandler) -> bool:
    return _catches(handler, _IMPORT_ERRORS)


class _Scanner(ast.NodeVisitor):
    def __init__(self, filename: str, lines: List[str]) -> None:
        self.filename = filename
        self.lines = lines
        self.aliases: Dict[str, str] = {}
        self.findings: List[Finding] = []
        self.guarded = 0    # depth of try blocks that catch ImportError
        self.caught = 0     # depth of try blocks that catch runtime errors
        self.explained: set = set()   # ids of strings reported with a test
        # (line, kind, construct) of each test of a tensor's own device
        self.tensor_tests: List[Tuple[int, str, str]] = []

    # -- helpers ---------------------------------------------------------
    def add(self, node: ast.AST, kind: str, what: str, why: str,
            catchable: bool = True) -> None:
        line = getattr(node, "lineno", 0)
        if 0 < line <= len(self.lines) and _IGNORE.search(
                self.lines[line - 1]):
            return
        if kind == CANNOT and catchable and self.caught:
            kind, why = HANDLED, (f"raises at run time, and the surrounding "
                                  f"try/except handles it; {why}")
        col = getattr(node, "col_offset", 0) + 1   # editors count from 1
        self.findings.append(Finding(self.filename, line, col, kind, what,
                                     why))

    def dotted(self, node: ast.AST) -> Optional[str]:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    # -- imports ---------------------------------------------------------
    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(_handles_import_error(h) for h in node.handlers)
        caught = any(_catches(h, _RUNTIME_ERRORS) for h in node.handlers)
        self.guarded += guarded
        self.caught += caught
        for stmt in node.body:
            self.visit(stmt)
        self.guarded -= guarded
        self.caught -= caught
        for part in (node.handlers, node.orelse, node.finalbody):
            for stmt in part:
                self.visit(stmt)

    visit_TryStar = visit_Try

    def _package(self, node: ast.AST, module: str) -> None:
        pkg = _package_of(module)
        if pkg is None:
            return
        kind, why = _package_verdict(pkg)
        if kind == CANNOT and self.guarded:
            self.add(node, HANDLED, f"import {module}",
                     f"optional import (try/except ImportError): the "
                     f"fallback runs; {why}")
        else:
            self.add(node, kind, f"import {module}", why, catchable=False)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                top = a.name.split(".")[0]
                self.aliases[top] = top
            self._package(node, a.name)
            if a.name.startswith("torch."):
                self._api(node, a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        seen_pkg = _package_of(node.module) is not None
        if seen_pkg:
            self._package(node, node.module)
        for a in node.names:
            if a.name == "*":
                continue
            full = f"{node.module}.{a.name}"
            self.aliases[a.asname or a.name] = full
            if not seen_pkg:
                self._package(node, full)
            if full.startswith("torch.cuda.") or full in TORCH_APIS:
                self._api(node, full)

    # -- torch APIs ------------------------------------------------------
    def _api(self, node: ast.AST, dotted: str) -> bool:
        hit = _lookup_api(dotted)
        if hit is None:
            return False
        self.add(node, hit[0], dotted, hit[1])
        return True

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self.dotted(node)
        if dotted is not None and self._api(node, dotted):
            return   # the outermost chain speaks for its parts
        if dotted is None and node.attr in ("is_cuda", "is_mps"):
            kind = node.attr[len("is_"):]
            self.add(node, HANDLED, f".{node.attr}", _is_kind_why(kind))
            self.tensor_tests.append((node.lineno, kind, f".{node.attr}"))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        """`x.type == "cuda"` (and !=, in, not in, either way round): a
        device type tested against an accelerator kind."""
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                for side, other in ((left, right), (right, left)):
                    if isinstance(other, ast.Attribute) \
                            and other.attr == "type":
                        # `x.device.type`: most often a tensor's device.
                        of_tensor = isinstance(other.value, ast.Attribute) \
                            and other.value.attr == "device"
                        self._type_test(side, of_tensor)
            left = right
        self.generic_visit(node)

    def _type_test(self, node: ast.AST, of_tensor: bool) -> None:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) \
            else [node]
        for item in items:
            if isinstance(item, ast.Constant) and item.value in _HARDWARE:
                self.add(item, HANDLED, f".type compared with {item.value!r}",
                         _type_test_why(item.value, of_tensor))
                self.explained.add(id(item))
                if of_tensor:
                    self.tensor_tests.append(
                        (item.lineno, item.value,
                         f".device.type compared with {item.value!r}"))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("cuda", "mps") \
                and self.dotted(func) is None:
            self.add(node, HANDLED, f".{func.attr}()",
                     "moves to the device that is present")
        for kw in node.keywords:
            if kw.arg in _DEVICE_KEYWORDS:
                self.add(kw.value, HANDLED, f"{kw.arg}=",
                         "CUDA device ordinals for torch.distributed / "
                         "DataParallel: dropped at run time where there "
                         "is no NVIDIA GPU")
            if kw.arg == "map_location":
                self.add(kw.value, HANDLED, "map_location=",
                         "not needed under TorchDevice: CUDA checkpoints "
                         "load onto the device that is present")
            elif kw.arg == "cuda_sources":
                self.add(kw.value, CANNOT, "load_inline(cuda_sources=...)",
                         "custom CUDA kernels need nvcc and an NVIDIA GPU")
        self.generic_visit(node)

    # -- strings ---------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if not isinstance(value, str) or id(node) in self.explained:
            return
        if _DEVICE_STRING.fullmatch(value):
            self.add(node, HANDLED, repr(value), _DEVICE_WHY)
        elif value == "nccl":
            kind, why = _nccl_verdict()
            self.add(node, kind, "'nccl'", why)
        elif value == "CUDA_VISIBLE_DEVICES":
            self.add(node, HANDLED, "'CUDA_VISIBLE_DEVICES'",
                     "harmless without NVIDIA GPUs")
        elif value.endswith(".cu") and "\n" not in value:
            self.add(node, CANNOT, repr(value),
                     "CUDA source file: needs nvcc and an NVIDIA GPU")

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        first = node.values[0] if node.values else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str) \
                and first.value.startswith(("cuda:", "mps:")):
            self.add(node, HANDLED, f"f'{first.value}{{...}}'", _DEVICE_WHY)
            return
        self.generic_visit(node)


def _scan(source: str, filename: str) -> _Scanner:
    scanner = _Scanner(filename, source.splitlines())
    scanner.visit(ast.parse(source, filename=filename))
    return scanner


def scan_source(source: str, filename: str) -> List[Finding]:
    """Findings in one file's text; a SyntaxError propagates."""
    scanner = _scan(source, filename)
    unique = {(f.line, f.col, f.what): f for f in scanner.findings}
    return sorted(unique.values(), key=lambda f: (f.line, f.col))


def tensor_device_tests(source: str, filename: str
                        ) -> List[Tuple[int, str, str]]:
    """(line, "cuda" or "mps", construct) of each test of a tensor's own
    device in one file's text (`x.is_cuda`, `x.device.type == "cuda"`):
    False where the tensor is on another device, whatever it was asked
    for.  A SyntaxError propagates."""
    return sorted(set(_scan(source, filename).tensor_tests))


def python_files(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        if os.path.isfile(path):
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and d not in _SKIP_DIRS)
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(root, name)


@dataclass
class Result:
    files: int
    findings: List[Finding]
    skipped: List[Tuple[str, str]]    # (file, why)

    @property
    def cannot(self) -> List[Finding]:
        return [f for f in self.findings if f.kind == CANNOT]

    @property
    def handled(self) -> List[Finding]:
        return [f for f in self.findings if f.kind == HANDLED]


def scan(paths: Sequence[str]) -> Result:
    result = Result(0, [], [])
    for path in python_files(paths):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            result.findings += scan_source(data.decode("utf-8", "replace"),
                                           path)
            result.files += 1
        except SyntaxError as exc:
            result.skipped.append((path, f"syntax error, line {exc.lineno}"))
        except (OSError, ValueError) as exc:
            result.skipped.append((path, str(exc)))
    return result


USAGE = """\
usage: python -m TorchDevice doctor [--only-cannot] [--json] PATH [PATH ...]

Scans Python files for CUDA-specific code and says what TorchDevice handles
at run time and what it cannot.  Exit status: 0 when everything found is
handled, 1 when something cannot be, 2 on a usage error.
"""


def main(argv: Sequence[str]) -> int:
    opts = {a for a in argv if a.startswith("-")}
    paths = [a for a in argv if not a.startswith("-")]
    if opts & {"-h", "--help"}:
        sys.stdout.write(USAGE)
        return 0
    bad = opts - {"--json", "--only-cannot"}
    if bad or not paths:
        sys.stderr.write(USAGE)
        if bad:
            sys.stderr.write(f"error: unknown option {sorted(bad)[0]}\n")
        return 2
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        sys.stderr.write(f"doctor: no such file or directory: {missing[0]}\n")
        return 2
    result = scan(paths)
    shown = result.cannot if "--only-cannot" in opts else result.findings
    if "--json" in opts:
        import json
        sys.stdout.write(json.dumps({
            "files": result.files,
            "handled": len(result.handled),
            "cannot": len(result.cannot),
            "findings": [asdict(f) for f in shown],
            "skipped": [{"file": f, "why": w} for f, w in result.skipped],
        }, indent=2) + "\n")
    else:
        out = sys.stdout
        for f in shown:
            out.write(f.text() + "\n")
        for path, why in result.skipped:
            out.write(f"{path}: skipped ({why})\n")
        out.write(f"TorchDevice doctor: {result.files} file"
                  f"{'s' if result.files != 1 else ''} scanned, "
                  f"{len(result.handled)} handled at run time, "
                  f"{len(result.cannot)} cannot be handled\n")
    return 1 if result.cannot else 0
