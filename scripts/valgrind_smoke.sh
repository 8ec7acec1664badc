#!/usr/bin/env bash
# valgrind memcheck over a smoke run of every _tdcore entry point
# (docs/reliability.md, guarantee 3).  Fails when valgrind reports an
# invalid read, invalid write, invalid free, overlap or use of an
# uninitialised value with a frame in _tdcore; what it reports inside
# CPython or torch alone is counted and listed, not judged.
#
#   scripts/valgrind_smoke.sh            # about 2 minutes on 2 cores
#
# _tdcore is rebuilt with -O1 -g in a scratch copy of the tree (exact
# lines in reports, the in-place build untouched); PYTHONMALLOC=malloc lets
# memcheck see Python objects.  PYTHON, VALGRIND_KEEP=1 (keep the copy).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        PYTHON="$ROOT/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
command -v valgrind >/dev/null || {
    echo "valgrind_smoke.sh: valgrind not found (apt-get install valgrind)" >&2
    exit 2
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tdvg.XXXXXX")"
cleanup() {
    if [[ "${VALGRIND_KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else
        echo "valgrind_smoke.sh: kept $WORK" >&2; fi
}
trap cleanup EXIT

mkdir -p "$WORK/tree"
(cd "$ROOT" && tar -c --exclude=./.venv --exclude=./.git --exclude=./build \
    --exclude='*.so' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude='*.egg-info' --exclude=.hypothesis .) | tar -x -C "$WORK/tree"
(
    cd "$WORK/tree"
    TORCHDEVICE_EXTRA_CFLAGS="-O1 -g -fno-omit-frame-pointer" \
        "$PYTHON" setup.py -q build_ext --inplace -b "$WORK/build" \
        -t "$WORK/tmp" >/dev/null 2>&1
)

cat > "$WORK/smoke.py" <<'PY'
"""Every kind of intercepted call a few hundred times, error paths and
threads included."""
import threading

import torch
import TorchDevice
from TorchDevice import _patches, _tdcore

assert TorchDevice.__file__.startswith(__import__("os").environ["TD_TREE"])
N = 300
t = torch.ones(4)
m = torch.nn.Linear(2, 2)
bad = ["cuda:-1", "bogus", "cuda:01", " cuda", "cpu:-2", 1.5, -1, [], b"x"]


def calls():
    for _ in range(N):
        torch.zeros(2, device="cuda")
        torch.empty(3)
        torch.tensor([1.0, 2.0], device=0)
        torch.arange(3, device=b"cuda:1")
        torch.ones(2, device=torch.device("cuda", 1), dtype=torch.float32)
        torch.zeros_like(t, device="cuda")
        t.new_zeros(2, device="cuda")
        t.to("cuda")
        t.to(torch.device("cuda"), torch.float32)
        t.to(device="cuda:0", dtype=torch.float64, non_blocking=True)
        t.cuda()
        t.cuda(0, non_blocking=True)
        t.cpu()
        t.numpy()
        t.pin_memory()
        t.is_pinned()
        m.to("cuda")
        m.cuda()
        w = t.cuda()                    # moves copy (csrc/core/moves.c)
        w.cuda(); w.cpu(); w.to("cpu"); w.to(w.device)
        m.cpu(); m.half().float(); m.to(torch.device("cuda"), torch.float64)
        _tdcore.keep_place(w, t); _tdcore.on_accelerator(w)
        _tdcore.device_intent(torch.device(torch.device("cuda")))
        torch.device("cuda")
        torch.device("cuda", 3)
        torch.device(1)
        torch.device("cpu:-1")
        torch.device("cpu", -1)
        torch.Generator(device="cuda")
        torch.UntypedStorage(4, device="cuda")
        for b in bad:
            for f in (lambda: torch.zeros(1, device=b), lambda: t.to(b),
                      lambda: torch.device(b)):
                try:
                    f()
                except (RuntimeError, TypeError):
                    pass
        try:
            torch.zeros(-1, device="cpu:-1")
        except RuntimeError:
            pass


calls()
_tdcore.set_report(True)
calls()
TorchDevice.report()
_tdcore.set_report(False)
with TorchDevice.cpu_override():
    calls()

c = torch.cuda
if c.is_available():      # the masquerade and events
    for _ in range(N):
        c.device_count(); c.current_device(); c.get_device_name(0)
        c.get_device_properties(0); c.memory_allocated()
        c.max_memory_allocated(); c.get_arch_list(); c.set_device(0)
        c.get_allocator_backend(); torch.backends.cuda.is_built()
        torch.Stream(device="mps"); torch.Event(device="mps")
    if hasattr(c, "Event"):
        a, b = c.Event(enable_timing=True), c.Event(enable_timing=True)
        for _ in range(N):
            a.record(); b.record(); b.synchronize(); a.elapsed_time(b)

threads = [threading.Thread(target=calls) for _ in range(2)]
for th in threads:
    th.start()
for th in threads:
    th.join()

for _ in range(10):
    TorchDevice.disable()
    TorchDevice.enable()

# SimulatedMPS: the float64 paths (meta stands in for the MPS device).
TorchDevice.disable()
_patches.apply(mps_device=torch.device("meta"))
for policy in ("downcast", "error"):
    _tdcore.configure("mps", "accelerate", policy)
    for _ in range(N):
        try:
            torch.zeros(2, dtype=torch.float64, device="cuda")
            t.to("cuda", torch.float64)
        except TypeError:
            pass
TorchDevice.disable()
TorchDevice.enable()
print("smoke done")
PY

echo "valgrind_smoke.sh: running the smoke script under memcheck"
cd "$WORK"
status=0
TD_TREE="$WORK/tree" PYTHONPATH="$WORK/tree" PYTHONMALLOC=malloc \
    valgrind --tool=memcheck --leak-check=no --num-callers=40 \
    --log-file="$WORK/memcheck.log" "$PYTHON" smoke.py || status=$?
if [[ $status -ne 0 ]]; then
    tail -40 "$WORK/memcheck.log" >&2
    echo "valgrind_smoke.sh: the smoke script failed (exit $status)" >&2
    exit 1
fi

"$PYTHON" - "$WORK/memcheck.log" "$ROOT/csrc" <<'PY'
import os
import re
import sys

log, csrc = sys.argv[1], sys.argv[2]
ours = [f for _d, _s, fs in os.walk(csrc) for f in fs
        if f.endswith((".c", ".h"))]
frame = re.compile(r"_tdcore|\((%s):\d+\)" % "|".join(map(re.escape, ours)))
kinds = re.compile(r"Invalid (read|write|free)|uninitialised|overlap|"
                   r"Mismatched free|Syscall param")
blocks, current = [], None
for line in open(log, errors="replace"):
    body = re.sub(r"^==\d+== ", "", line.rstrip("\n"))
    if not body.startswith(" ") and body:
        current = [body]
        blocks.append(current)
    elif current is not None and body:
        current.append(body)
errors = [b for b in blocks if kinds.search(b[0])]
frames_of = [[x for x in b[1:] if re.match(r"\s+(at|by) 0x", x)]
             for b in errors]
# An error is ours when the innermost frame that is not a libc or valgrind
# string/memory routine is in _tdcore: torch reports its own uninitialised
# stack variables (THPVariable_to) also when _tdcore is the caller.
helper = re.compile(r"vgpreload|/libc\.so|/libc-|\bmem(cpy|move|set|cmp)"
                    r"|\bstr(len|cmp|ncmp|chr)")


def ours(frames):
    for x in frames:
        if helper.search(x):
            continue
        return bool(frame.search(x))
    return False


in_ours = [b for b, f in zip(errors, frames_of) if ours(f)]
passing = sum(1 for f in frames_of if any(frame.search(x) for x in f))
print(f"valgrind_smoke.sh: {len(errors)} memcheck error contexts, "
      f"{passing} of them called through _tdcore, "
      f"{len(in_ours)} raised in _tdcore")
for b in in_ours:
    print("\n".join(b), file=sys.stderr)
    print(file=sys.stderr)
sys.exit(1 if in_ours else 0)
PY
echo "valgrind_smoke.sh: clean (no memcheck error in _tdcore)"
