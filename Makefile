# TorchDevice: two commands on a fresh machine.
#   make demo   set up .venv, build _tdcore, run a CUDA-written demo here
#   make test   set up .venv, build _tdcore, run the test suite
#   make test-accel  the same suite with the simulated accelerator
#                  (tests/simaccel/README.md) as the machine's accelerator,
#                  used with MPS's capability record (docs/hardware.md)
#   make simaccel  build the simulated accelerator the tests use
# The local CPU wheel is pinned (torch==2.13.0); the package itself accepts
# any torch >= 2.5.
# The suites run in JOBS pytest worker processes (pytest-xdist): most tests
# start Python processes of their own, and one worker leaves half of a
# 2-core machine idle while they import torch.  JOBS=0 runs them in one.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
JOBS   ?= 2

.PHONY: setup demo test test-accel check bench simaccel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	TORCHDEVICE_STRICT_BUILD=1 $(BIN)/python -m pip install -q \
	    --disable-pip-version-check -e ".[test]"

demo: setup
	$(BIN)/python examples/demo_neural_network.py

test: setup
	$(BIN)/python -m pytest -q -n $(JOBS)

# Every process of the run loads the simulated accelerator before
# TorchDevice looks for hardware (SIMACCEL_AUTOLOAD), which makes it behave
# like MPS (SIMACCEL_MPS_RULES); TorchDevice uses it with MPS's capability
# record, in mode "accelerate", where device-less and "cpu" requests go to
# the device too: the mode that puts the most on it.  The default mode's
# runs on it are the tests that set it (tests/test_demos.py,
# tests/test_policy_matrix.py).  transformers 5.25 and later hand a model's
# device type to the `kernels` package at from_pretrained, which refuses
# any it does not list ("simaccel" among them): USE_HUB_KERNELS=0, their
# own switch, keeps hub kernels off for the simulated device.
ACCEL_ENV := SIMACCEL_AUTOLOAD=1 SIMACCEL_MPS_RULES=1 \
	TORCHDEVICE_CAPABILITIES=mps TORCHDEVICE_MODE=accelerate \
	USE_HUB_KERNELS=0
test-accel: simaccel
	$(ACCEL_ENV) $(BIN)/python -m pytest -q -n $(JOBS)

# The C hygiene checks CI runs after the tests (docs/reliability.md).
check: setup
	bash scripts/lint_c.sh
	bash scripts/sanitize.sh --core
	bash scripts/valgrind_smoke.sh

# The simulated accelerator (tests/simaccel/README.md): builds
# build/simaccel/ against the venv's torch and installs its start-up hook
# into the venv, inert unless SIMACCEL_AUTOLOAD=1.
simaccel: setup
	$(BIN)/python tests/simaccel/_build.py --install-autoload

bench: setup
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf build $(VENV) TorchDevice/*.so *.egg-info
