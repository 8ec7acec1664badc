"""Which real programs run under each redirection mode: a measurement, not a
test.

Runs a fixed set of programs written for CUDA -- every script in examples/,
the small programs in benchmarks/programs/ (HuggingFace GPT-2, BERT, Llama
and T5 at two sizes with `generate`, `Trainer`, `pipeline`; a DataLoader
with worker processes; numpy interplay; checkpoint round trips) -- as a user
would, `python -m TorchDevice run script.py`, each in a fresh process, on
the simulated accelerator (tests/simaccel/README.md) with MPS's capability
record, once per mode ("accelerate", the default, and "cpu-stays-cpu").

For each program and mode it prints whether the program completed, or its
first error: the exception's class, its first line and the program's own
line that raised it (the innermost traceback frame in the program's file).
A program that completed is also checked for its numbers against a CPU run
without the accelerator:

- programs in benchmarks/programs/ print `RESULT name value` lines; their
  reference is the same source with every `cuda` replaced by `cpu`, run by
  plain Python without TorchDevice (a CPU program, as its author would have
  written it for the CPU);
- the HuggingFace examples and the MPS-written example have hand-written
  CPU variants in tests/cpu_reference/ (run without TorchDevice); both save
  their tensors with `--out`, which are compared;
- the other examples import TorchDevice themselves, so no native run
  exists: their printed numbers are compared with the same example under
  TorchDevice on the CPU (`--target cpu`, no accelerator);
- numbers that legitimately differ (timings, memory, float16 autocast on
  the device against bfloat16 on the CPU) are not compared.

A completed program whose numbers differ counts as failed.

    python benchmarks/policy_matrix.py [--jobs 2] [--json out.json]
        [--only NAME[,NAME...]] [--modes accelerate,cpu-stays-cpu]

Needs `make simaccel`; transformers (and accelerate, for `Trainer`) for the
HuggingFace rows, which are marked "not run" without them.  The whole run
takes about ten minutes on two cores.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PROGRAMS = ROOT / "benchmarks" / "programs"
CPU_REFERENCE = ROOT / "tests" / "cpu_reference"
MODES = ("accelerate", "cpu-stays-cpu")

# The simulated accelerator with MPS's capability record, in every process
# of the run (what `make test-accel` uses).
ACCEL_ENV = {"SIMACCEL_AUTOLOAD": "1", "SIMACCEL_MPS_RULES": "1",
             "TORCHDEVICE_CAPABILITIES": "mps"}
QUIET_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM":
             "false", "PYTHONDONTWRITEBYTECODE": "1",
             "TORCHDEVICE_REPORT": ""}
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# Device names in printed lines ("on simaccel:0") are not numbers.
DEVICE = re.compile(r"\b(?:simaccel|cuda|mps|cpu|meta|xpu)(?::\d+)?\b")


@dataclass
class Program:
    """One program of the set.

    references: per mode, the run its numbers are compared with --
    "cpu" (the program's CPU version run natively: benchmarks/programs
    with every `cuda` spelled `cpu`, the examples' hand-written variants in
    tests/cpu_reference/), "device" (the program run natively on the
    simulated accelerator, every `cuda` spelled `simaccel`, with its CUDA
    rules: float64 allowed), "torchdevice-cpu" (the example under
    TorchDevice on the CPU) or absent (not compared).  What is compared:
    `RESULT` lines, or the `--out` files (`out`), or the numbers of the
    stdout lines matching `lines` (after removing `strip`).
    """
    name: str
    script: Path
    args: Tuple[str, ...] = ()
    references: Dict[str, str] = field(default_factory=dict)
    out: bool = False
    lines: str = ""
    strip: str = ""
    env: Dict[str, str] = field(default_factory=dict)
    # RESULT values a CPU run cannot give (a GPU tensor's `.cpu()` is a
    # copy, a host tensor's is the tensor itself): CUDA's, stated here.
    on_cuda: Dict[str, str] = field(default_factory=dict)
    needs: Tuple[str, ...] = ()
    timeout: float = 300.0
    note: str = ""


# accelerate sends host requests to the device, so host and device random
# numbers come from one generator, as in a CPU run; cpu-stays-cpu draws
# host numbers on the host and device numbers on the device, as a native
# device run does.  Each mode is compared with the run whose random streams
# are the same by construction.
BOTH = {"accelerate": "cpu", "cpu-stays-cpu": "device"}
ACCEL_ONLY_TD = {"accelerate": "torchdevice-cpu"}


def programs() -> List[Program]:
    ex, pg = EXAMPLES, PROGRAMS
    return [
        Program("demo_basic_tensor", ex / "demo_basic_tensor.py",
                references={"accelerate": "torchdevice-cpu",
                            "cpu-stays-cpu": "torchdevice-cpu"},
                lines=r"^a \+ b|^back on"),
        Program("demo_cpu_override", ex / "demo_cpu_override.py",
                note="timings only"),
        Program("demo_device_info", ex / "demo_device_info.py",
                note="device answers only"),
        Program("demo_matrix_multiplication",
                ex / "demo_matrix_multiplication.py",
                references=ACCEL_ONLY_TD, lines=r"^max abs error"),
        Program("demo_memory_info", ex / "demo_memory_info.py",
                note="memory figures only"),
        Program("demo_neural_network", ex / "demo_neural_network.py",
                references=ACCEL_ONLY_TD, lines=r"^step|^mean loss"),
        Program("demo_streams_events", ex / "demo_streams_events.py",
                note="timings only"),
        Program("demo_unsupported_functions",
                ex / "demo_unsupported_functions.py",
                note="float16 autocast on the device, bfloat16 on the CPU"),
        Program("migration_demo", ex / "migration_demo.py",
                references={"accelerate": "torchdevice-cpu"},
                note="seeds only the device generator: the model's host "
                     "initialisation differs run to run where the host "
                     "has its own generator",
                lines=r"^final loss", strip=r"peak memory.*"),
        Program("mps_written_script", ex / "mps_written_script.py",
                args=("--steps", "30"), out=True,
                references={"accelerate": "cpu"},
                env={"TORCHDEVICE_ANNOUNCE": "mps"}),
        Program("hf_causal_lm", ex / "hf_causal_lm.py", out=True,
                references=BOTH, needs=("transformers",)),
        Program("hf_bert_classification", ex / "hf_bert_classification.py",
                out=True, references={"accelerate": "cpu"},
                needs=("transformers",),
                note="sets torch.backends.cuda flags: no native device run"),
        Program("hf_t5_seq2seq", ex / "hf_t5_seq2seq.py", out=True,
                references=BOTH, needs=("transformers",)),
        Program("train_cuda_research", ex / "train_cuda_research.py",
                args=("--epochs", "1", "--train-size", "64", "--val-size",
                      "32", "--save-every", "2", "--out-dir", "run"),
                note="float16 autocast on the device; no CPU variant"),
        Program("hf_models", pg / "hf_models.py", references=BOTH,
                needs=("transformers",), timeout=600),
        Program("hf_trainer", pg / "hf_trainer.py", references=BOTH,
                needs=("transformers", "accelerate")),
        Program("hf_pipeline", pg / "hf_pipeline.py", references=BOTH,
                needs=("transformers",)),
        Program("dataloader_workers", pg / "dataloader_workers.py",
                references=BOTH),
        Program("numpy_interop", pg / "numpy_interop.py", references=BOTH),
        Program("numpy_sharing", pg / "numpy_sharing.py", references=BOTH,
                on_cuda={"device_original": "[0.0, 1.0, 2.0]"}),
        Program("checkpoint_roundtrip", pg / "checkpoint_roundtrip.py",
                references=BOTH),
    ]


# ---- running ------------------------------------------------------------


def base_env(extra: Dict[str, str]) -> Dict[str, str]:
    """The caller's environment without TorchDevice's or the simulated
    accelerator's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TORCHDEVICE", "SIMACCEL"))}
    env.update(QUIET_ENV)
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def run(cmd: Sequence[str], env: Dict[str, str], cwd: Path,
        timeout: float) -> Dict[str, Any]:
    start = time.monotonic()
    try:
        proc = subprocess.run(list(cmd), env=env, cwd=str(cwd),
                              capture_output=True, text=True,
                              timeout=timeout)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = -9
        out = (exc.stdout or b"").decode() if isinstance(
            exc.stdout, bytes) else (exc.stdout or "")
        err = ((exc.stderr or b"").decode() if isinstance(
            exc.stderr, bytes) else (exc.stderr or "")) + \
            f"\nTimeout: no result after {timeout:.0f} s"
    return {"rc": rc, "stdout": out, "stderr": err,
            "seconds": round(time.monotonic() - start, 1)}


def missing(prog: Program) -> List[str]:
    probe = "import importlib.util as u, sys; sys.stdout.write(' '.join(" \
            f"m for m in {list(prog.needs)!r} if u.find_spec(m) is None))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                         text=True, env=base_env({})).stdout.split()
    return out


def out_args(prog: Program, workdir: Path) -> Tuple[str, ...]:
    return ("--out", str(workdir / "out.pt")) if prog.out else ()


def run_mode(prog: Program, mode: str, workdir: Path) -> Dict[str, Any]:
    env = base_env(dict(ACCEL_ENV, TORCHDEVICE_MODE=mode, **prog.env))
    cmd = [sys.executable, "-m", "TorchDevice", "run", str(prog.script),
           *prog.args, *out_args(prog, workdir)]
    return run(cmd, env, workdir, prog.timeout)


def spelled(source: str, device: str) -> str:
    """The program with every `cuda` spelled `device` (`cuda:N` is plain
    `cpu` on the host: torch's CPU loader knows no `cpu:0` location)."""
    if device == "cpu":
        source = re.sub(r"\bcuda:\d+\b", "cpu", source)
    return re.sub(r"\bcuda\b", device, source)


def run_reference(prog: Program, kind: str, workdir: Path
                  ) -> Dict[str, Any]:
    extra = out_args(prog, workdir)
    if kind == "cpu" and prog.script.parent == EXAMPLES:
        cmd = [sys.executable, str(CPU_REFERENCE / prog.script.name),
               *prog.args, *extra]
        return run(cmd, base_env({}), workdir, prog.timeout)
    if kind in ("cpu", "device"):
        variant = workdir / prog.script.name
        variant.write_text(spelled(prog.script.read_text(),
                                   "cpu" if kind == "cpu" else "simaccel"))
        env = base_env({} if kind == "cpu" else {"SIMACCEL_AUTOLOAD": "1"})
        cmd = [sys.executable, str(variant), *prog.args, *extra]
        return run(cmd, env, workdir, prog.timeout)
    assert kind == "torchdevice-cpu", kind
    cmd = [sys.executable, "-m", "TorchDevice", "run", "--target", "cpu",
           str(prog.script), *prog.args, *extra]
    return run(cmd, base_env(prog.env), workdir, prog.timeout)


REFERENCE_NAMES = {"cpu": "native CPU run",
                   "device": "native device run",
                   "torchdevice-cpu": "TorchDevice on the CPU"}


# ---- reading a failure ----------------------------------------------------

FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), '
                   r'in (?P<func>.+)$')


def first_error(stderr: str, script: Path, rc: int) -> Dict[str, str]:
    """The exception's class and first line, and the program's own line
    that raised it (innermost frame in the program's file, else the
    innermost frame outside installed packages)."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines)
              if line.startswith("Traceback (most recent call last)")]
    if not starts:
        last = next((line for line in reversed(lines) if line.strip()), "")
        return {"class": f"exit status {rc}", "message": last[:300],
                "site": ""}
    # The traceback printed last is the one that ended the program;
    # chained ones ("During handling ...") come before it.
    block = lines[starts[-1]:]
    frames: List[Tuple[str, str, str]] = []
    message_index = len(block) - 1
    for i, line in enumerate(block[1:], 1):
        m = FRAME.match(line)
        if m:
            frames.append((m["file"], m["line"], m["func"]))
            continue
        if line and not line.startswith((" ", "\t")):
            message_index = i
            break
    head = block[message_index]
    cls, _, message = head.partition(": ")
    notes = [line for line in block[message_index + 1:] if line.strip()]
    site = ""
    own = [f for f in frames if Path(f[0]).name == script.name]
    outside = [f for f in frames if "site-packages" not in f[0]
               and "<frozen" not in f[0]]
    pick = own[-1] if own else (outside[-1] if outside else
                                (frames[-1] if frames else None))
    if pick:
        site = f"{Path(pick[0]).name}:{pick[1]} in {pick[2]}"
    return {"class": cls.strip(), "message": message.strip()[:300],
            "site": site, "notes": "\n".join(notes)[:2000]}


# ---- comparing numbers ----------------------------------------------------


def result_lines(stdout: str) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            _, key, *value = line.split(" ", 2)
            found[key] = value[0] if value else ""
    return found


def close(a: str, b: str, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Same text but for numbers, and the numbers within tolerance."""
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
        fx, fy = float(x), float(y)
        if not (math.isclose(fx, fy, rel_tol=rtol, abs_tol=atol)
                or (math.isnan(fx) and math.isnan(fy))):
            return False
    return True


def compare_results(got: Dict[str, str], ref: Dict[str, str]) -> List[str]:
    diffs = []
    for key in sorted(set(got) | set(ref)):
        if key not in got or key not in ref:
            diffs.append(f"{key}: {got.get(key, '-')} vs "
                         f"{ref.get(key, '-')}")
        elif not close(got[key], ref[key]):
            diffs.append(f"{key}: {got[key]} vs {ref[key]}")
    if not ref:
        diffs.append("the reference printed no RESULT lines")
    return diffs


def compare_lines(got: str, ref: str, pattern: str, strip: str = ""
                  ) -> List[str]:
    rx = re.compile(pattern)
    cut = re.compile(strip) if strip else None

    def numbers(text: str) -> List[List[str]]:
        found = []
        for line in text.splitlines():
            if rx.search(line):
                line = cut.sub("", line) if cut else line
                found.append(NUMBER.findall(DEVICE.sub("", line)))
        return found
    a, b = numbers(got), numbers(ref)
    if len(a) != len(b) or not b:
        return [f"{len(a)} compared lines vs {len(b)} in the reference"]
    diffs = []
    for i, (x, y) in enumerate(zip(a, b)):
        if not close(" ".join(x), " ".join(y)):
            diffs.append(f"line {i}: {' '.join(x)} vs {' '.join(y)}")
    return diffs


def compare_out_files(got: Path, ref: Path) -> List[str]:
    """Every tensor of the two `--out` files: bit for bit, or close."""
    code = (
        "import sys, torch\n"
        "a = torch.load(sys.argv[1], map_location='cpu')\n"
        "b = torch.load(sys.argv[2], map_location='cpu')\n"
        "bad = []\n"
        "def walk(x, y, where):\n"
        "    if isinstance(x, dict):\n"
        "        if x.keys() != y.keys(): bad.append(where + ' keys'); return\n"
        "        for k in x: walk(x[k], y[k], f'{where}.{k}')\n"
        "    elif isinstance(x, (list, tuple)):\n"
        "        if len(x) != len(y): bad.append(where + ' length'); return\n"
        "        for i, (p, q) in enumerate(zip(x, y)):\n"
        "            walk(p, q, f'{where}[{i}]')\n"
        "    elif isinstance(x, torch.Tensor):\n"
        "        if x.dtype != y.dtype or x.shape != y.shape:\n"
        "            bad.append(f'{where} {x.dtype}{tuple(x.shape)} vs '\n"
        "                       f'{y.dtype}{tuple(y.shape)}')\n"
        "        elif not torch.equal(x, y) and not torch.allclose(\n"
        "                x.double(), y.double(), rtol=1e-5, atol=1e-6):\n"
        "            bad.append(f'{where} differs by '\n"
        "                       f'{(x.double() - y.double()).abs().max():.3g}')\n"
        "    elif x != y and not where.endswith('.device'):\n"
        "        bad.append(f'{where}: {x!r} vs {y!r}')\n"
        "walk(a, b, 'out')\n"
        "print('\\n'.join(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(got), str(ref)],
                          capture_output=True, text=True,
                          env=base_env({}))
    if proc.returncode:
        return [f"comparison failed: {proc.stderr.strip()[-300:]}"]
    return [line for line in proc.stdout.splitlines() if line.strip()]


# ---- one program ------------------------------------------------------------


@dataclass
class Outcome:
    status: str                      # completed / failed / differs / not run
    seconds: float = 0.0
    error: Dict[str, str] = field(default_factory=dict)
    differences: List[str] = field(default_factory=list)
    compared: str = ""


def measure(prog: Program, modes: Sequence[str], keep: bool
            ) -> Dict[str, Any]:
    lacking = missing(prog) if prog.needs else []
    if lacking:
        why = f"needs {', '.join(lacking)}"
        return {"program": prog.name, "note": why,
                "modes": {m: asdict(Outcome("not run", error={"class": why}))
                          for m in modes}}
    base = Path(tempfile.mkdtemp(prefix=f"matrix-{prog.name}-"))
    result: Dict[str, Any] = {"program": prog.name, "note": prog.note,
                              "modes": {}, "references": {}}
    try:
        refs: Dict[str, Dict[str, Any]] = {}
        for kind in sorted({prog.references[m] for m in modes
                            if m in prog.references}):
            ref_dir = base / f"ref-{kind}"
            ref_dir.mkdir()
            refs[kind] = run_reference(prog, kind, ref_dir)
            refs[kind]["dir"] = ref_dir
            info: Dict[str, Any] = {"rc": refs[kind]["rc"],
                                    "seconds": refs[kind]["seconds"]}
            if refs[kind]["rc"] != 0:
                info["error"] = first_error(refs[kind]["stderr"],
                                            prog.script, refs[kind]["rc"])
            result["references"][kind] = info
        for mode in modes:
            workdir = base / mode
            workdir.mkdir()
            got = run_mode(prog, mode, workdir)
            outcome = Outcome("completed", got["seconds"])
            kind = prog.references.get(mode)
            ref = refs.get(kind) if kind else None
            if got["rc"] != 0:
                outcome.status = "failed"
                outcome.error = first_error(got["stderr"], prog.script,
                                            got["rc"])
            elif ref is not None and ref["rc"] != 0:
                outcome.compared = f"not compared: the {REFERENCE_NAMES[kind]} failed"
            elif ref is not None:
                outcome.compared = REFERENCE_NAMES[kind]
                if prog.out:
                    outcome.differences = compare_out_files(
                        workdir / "out.pt", ref["dir"] / "out.pt")
                elif prog.lines:
                    outcome.differences = compare_lines(
                        got["stdout"], ref["stdout"], prog.lines, prog.strip)
                else:
                    expected = result_lines(ref["stdout"])
                    if kind == "cpu":
                        expected.update(prog.on_cuda)
                    outcome.differences = compare_results(
                        result_lines(got["stdout"]), expected)
                if outcome.differences:
                    outcome.status = "differs"
            result["modes"][mode] = asdict(outcome)
            if keep:
                (workdir / "stdout.txt").write_text(got["stdout"])
                (workdir / "stderr.txt").write_text(got["stderr"])
        for ref in refs.values():
            ref.pop("dir", None)
            if keep:
                pass
        return result
    finally:
        if keep:
            print(f"  kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


# ---- the table ---------------------------------------------------------------


def cell(outcome: Dict[str, Any]) -> str:
    status = outcome["status"]
    if status == "completed":
        if outcome["compared"].startswith("not compared"):
            return "completed (" + outcome["compared"] + ")"
        return "completed" + (", numbers = " + outcome["compared"]
                              if outcome["compared"] else "")
    if status == "differs":
        return ("**differs** from the " + outcome["compared"] + ": "
                + "; ".join(outcome["differences"][:2]))
    if status == "not run":
        return "not run (" + outcome["error"].get("class", "") + ")"
    err = outcome["error"]
    site = f" at `{err['site']}`" if err.get("site") else ""
    msg = err.get("message", "")
    msg = msg if len(msg) <= 90 else msg[:87] + "..."
    return f"**failed**: `{err.get('class', '')}`{site}: {msg}"


def table(results: List[Dict[str, Any]], modes: Sequence[str]) -> str:
    rows = ["| program | " + " | ".join(modes) + " |",
            "| --- | " + " | ".join("---" for _ in modes) + " |"]
    for r in results:
        rows.append(f"| {r['program']} | " + " | ".join(
            cell(r["modes"][m]).replace("|", "\\|") for m in modes) + " |")
    counts = []
    for m in modes:
        ran = [r for r in results if r["modes"][m]["status"] != "not run"]
        ok = sum(r["modes"][m]["status"] == "completed" for r in ran)
        counts.append(f"{ok}/{len(ran)}")
    rows.append("| **completed** | " + " | ".join(counts) + " |")
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2,
                   help="programs run at the same time")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--only", default="", help="comma-separated names")
    p.add_argument("--json", help="write the full results here")
    p.add_argument("--keep", action="store_true",
                   help="keep each run's directory and output")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    chosen = [prog for prog in programs()
              if not args.only or prog.name in args.only.split(",")]
    probe = run([sys.executable, "-c", "import torch; print("
                 "torch.accelerator.current_accelerator())"],
                base_env(ACCEL_ENV), ROOT, 120)
    if probe["rc"] != 0 or "simaccel" not in probe["stdout"]:
        print("the simulated accelerator is not available (make simaccel):\n"
              + probe["stderr"][-2000:], file=sys.stderr)
        return 2
    start = time.monotonic()
    order = {prog.name: i for i, prog in enumerate(chosen)}
    results: List[Dict[str, Any]] = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(measure, prog, modes, args.keep): prog
                   for prog in chosen}
        for fut in concurrent.futures.as_completed(futures):
            res = fut.result()
            results.append(res)
            brief = ", ".join(f"{m}: {res['modes'][m]['status']}"
                              for m in modes)
            print(f"{res['program']}: {brief}", file=sys.stderr, flush=True)
    results.sort(key=lambda r: order[r["program"]])
    print(table(results, modes))
    print(f"\n{len(chosen)} programs, {time.monotonic() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"modes": modes, "env": ACCEL_ENV, "results": results},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
