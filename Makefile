# Two commands for a newcomer (see README):  make run   |   make test
# Everything installs into .venv; torch 2.13.0 (CPU build, from the local wheel cache where present) comes first
# so that no other requirement pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Two workers (CI has 2 cores): most e2e time is spent waiting on servers and pods; one module stays on one
# worker (its module fixtures are built once).
PYTEST_WORKERS ?= -n 2 --dist loadfile
DEMO_ARGS ?=

.PHONY: run demo test test-fast lint typecheck tools bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

## Train manifests/samples/sol-run.yaml on the bundled data (progress bar, then a result summary).
run: install
	$(BIN)/python -m trainer run manifests/samples/sol-run.yaml

## A local cluster in one command (the test emulator + kubelet, SeaweedFS, the operator) training the sample;
## prints the export KUBECONFIG=... line; Ctrl-C stops it. DEMO_ARGS: --keep, --quick, --sample FILE (needs kubectl).
demo: install
	$(BIN)/python -m tests.support.demo $(DEMO_ARGS)

tools:
	bash .ci/install-tools.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check trainer operator tests bench scripts

typecheck: install
	$(BIN)/mypy

## Lint, type-check and run every test except GPU-only ones (slow ones included).
test: install tools lint typecheck
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python -m pytest -m "not gpu" $(PYTEST_WORKERS) $(PYTEST_ARGS)

## The fast default selection only (no slow, no GPU).
test-fast: install
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/bench_speed.py
	$(BIN)/python bench/bench_checkpoint.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache runs
