#!/usr/bin/env bash
# Runs every test that needs a real NVIDIA GPU, in under five minutes.
# Usage (on the lent GPU machine, from the repository root):
#     bash scripts/gpu_check.sh                    # tests marked cuda
#     GPU_CHECK_SUITE=1 bash scripts/gpu_check.sh  # then the whole suite
# It builds _tdcore in place with the machine's own Python and torch (no
# network needed: _tdcore has no build dependency but a C compiler), then
# runs the tests marked `cuda` (in under two minutes on an H200).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
echo "== build"
TORCHDEVICE_STRICT_BUILD=1 $PY setup.py -q build_ext --inplace
echo "== install"
# The zero-edit activation (TORCHDEVICE=1) is a torch.backends entry point,
# which exists only once the package is installed.  There is no network on
# the lent machine: install offline, editable.  Where pip cannot (a setuptools
# too old to build a wheel without the `wheel` package), write the
# distribution's metadata into a folder put on PYTHONPATH, which is all that
# importlib.metadata reads to find the entry point.
extra_path=""
if $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . \
        > /tmp/gpu_check_install.log 2>&1; then
    echo "installed (editable)"
else
    tail -3 /tmp/gpu_check_install.log
    extra_path=$(mktemp -d)
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
    meta="$extra_path/TorchDevice-$version.dist-info"
    mkdir "$meta"
    printf 'Metadata-Version: 2.1\nName: TorchDevice\nVersion: %s\n' \
        "$version" > "$meta/METADATA"
    printf '[torch.backends]\ntorchdevice = torchdevice_autoload:autoload\n' \
        > "$meta/entry_points.txt"
    echo "pip could not install offline; entry point registered in $meta"
fi
export PYTHONPATH="$PWD${extra_path:+:$extra_path}${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "
from importlib.metadata import entry_points
print('torch.backends entry points:',
      [e.value for e in entry_points(group='torch.backends')])"
echo "== torch.mps answered from CUDA (docs/masquerade.md)"
$PY -c "
import torch, TorchDevice
assert torch.cuda.memory_allocated is torch.cuda.memory.memory_allocated
x = torch.ones(1 << 20, device='mps'); torch.mps.synchronize()
print('mps.is_available', torch.backends.mps.is_available(), 'on', x.device,
      'allocated', torch.mps.current_allocated_memory(),
      'recommended_max', torch.mps.recommended_max_memory())"
echo "== tests that need CUDA"
start=$(date +%s)
rc=0
timeout 280 $PY -m pytest -q -m cuda -p no:cacheprovider tests "$@" || rc=$?
echo "== gpu_check finished in $(( $(date +%s) - start )) s with exit code $rc"
# GPU_CHECK_SUITE=1: then the whole suite on profile cuda, in parallel (about
# 2.5 minutes with 14 workers on an H200's 16 cores).  Most tests are written
# for the redirecting profiles and skip there; what fails is in the log, and
# the exit code stays the one of the tests above.
if [ "${GPU_CHECK_SUITE:-0}" = 1 ]; then
    echo "== the whole suite on profile cuda"
    suite_start=$(date +%s)
    suite_rc=0
    timeout 280 $PY -m pytest -q -n "${GPU_CHECK_JOBS:-14}" -p no:cacheprovider -rfE \
        tests || suite_rc=$?
    echo "== suite finished in $(( $(date +%s) - suite_start )) s with exit code $suite_rc"
fi
exit $rc
