# jobsys — every target sets itself up (virtualenv, install, database, migrations).
# `make help` lists them.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
JOBSYS := $(BIN)/jobsys
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run worker db-upgrade lint fmt typecheck test test-fast bench clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install jobsys with its dev tools
	@echo "jobsys installed in $(VENV)"

run: $(STAMP) ## Start the database, migrate, and run the demo system (Ctrl-C to stop)
	$(JOBSYS) db upgrade
	$(JOBSYS) demo run

worker: $(STAMP) ## Run a worker on every configured lane
	$(JOBSYS) db upgrade
	$(JOBSYS) worker

db-upgrade: $(STAMP) ## Apply the database migrations (starts the embedded server if needed)
	$(JOBSYS) db upgrade

lint: $(STAMP) ## ruff lint and format check, import contracts (lint-imports)
	$(BIN)/ruff check jobsys tests migrations bench
	$(BIN)/ruff format --check jobsys tests migrations bench
	$(BIN)/lint-imports

fmt: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format jobsys tests migrations bench
	$(BIN)/ruff check --fix jobsys tests migrations bench

typecheck: $(STAMP) ## mypy over the jobsys package
	$(BIN)/mypy

test: lint typecheck ## Lint, type-check and run the whole test suite against a real PostgreSQL
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Only the tests, no lint or type check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## Benchmarks side by side with plain Procrastinate; writes bench/results/*.json
	$(BIN)/python -m bench

clean: ## Stop the embedded server and remove .venv and .jobsys
	-@test -x $(JOBSYS) && $(JOBSYS) db stop
	rm -rf $(VENV) .jobsys
