# Two commands on a fresh machine: `make run` (the demo) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit bench lock clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## The daemon on an embedded PostgreSQL with demo data; messages are printed, not sent.
run: $(BIN)/.installed
	$(BIN)/flavor-scheduler --demo

## Everything CI checks: ruff, mypy (strict on scheduler/), the whole test suite.
test: lint typecheck
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

bench: $(BIN)/.installed
	$(BIN)/python bench/cleanup.py
	$(BIN)/python bench/reminders.py

## Re-pin the runtime dependencies used by the Docker image.
lock: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file=requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .demo-pgdata .runtime .pytest_cache .mypy_cache .ruff_cache
