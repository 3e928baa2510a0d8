# jobsys — every target sets itself up (virtualenv, install, database, migrations).
# `make help` lists them.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
JOBSYS := $(BIN)/jobsys
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
PYTEST_ARGS ?=
WEB_HOST ?= 127.0.0.1
WEB_PORT ?= 8080

.DEFAULT_GOAL := help
.PHONY: help install run web worker db-upgrade lint fmt typecheck test test-fast chaos chaos-soak bench clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# setuptools' editable install warns (BuildBackendWarning, a boxed UserWarning) on every
	@# install; it is about folders named like the package, not something to act on here.
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install jobsys with its dev tools
	@echo "jobsys installed in $(VENV)"

run: $(STAMP) ## The demo: database, migrations, workers, web :8080 (Ctrl-C)
	$(JOBSYS) db upgrade
	$(JOBSYS) demo run --web $(WEB_HOST):$(WEB_PORT)

web: $(STAMP) ## Web console on 127.0.0.1:8080 (/admin/background_jobs)
	$(JOBSYS) db upgrade
	$(JOBSYS) web --host $(WEB_HOST) --port $(WEB_PORT)

worker: $(STAMP) ## Run a worker on every configured lane
	$(JOBSYS) db upgrade
	$(JOBSYS) worker

db-upgrade: $(STAMP) ## Apply the migrations (starts the embedded server if needed)
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

test: lint typecheck ## Lint, type-check, the whole test suite (real PostgreSQL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Only the tests, no lint or type check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fault harness's own scenarios (tests/chaos: leases under partition and outage)
# and the process tests of the suite that cover the other faults of an operator's bad
# night. CI runs `make chaos CHAOS_SUITE=`: the suite already ran those twice.
CHAOS_SUITE ?= \
	tests/acceptance/test_reaper_processes.py \
	tests/acceptance/test_runtime.py::test_sigterm_lets_a_long_job_finish_once_and_exits_0 \
	tests/acceptance/test_runtime.py::test_grace_expired_job_is_requeued_not_lost \
	tests/acceptance/test_runtime.py::test_listener_killed_is_reestablished_and_jobs_start_promptly \
	tests/acceptance/test_postgres_restart.py \
	tests/acceptance/test_schedule_processes.py \
	tests/integration/test_failures_nothing_lost.py \
	tests/integration/test_retry_bulk.py::test_two_jobsys_processes_behind_a_barrier \
	tests/integration/test_retry_bulk.py::test_two_operators_racing_100_times_retry_once \
	tests/integration/test_retry_bulk.py::test_two_bulk_retries_at_once_both_exit_0 \
	tests/integration/test_failures_redaction.py \
	tests/integration/test_live_subscriber.py

chaos: $(STAMP) ## Fault harness, fast: real workers, own server, a TCP proxy
	$(BIN)/python -m pytest -s -m "not soak" tests/chaos $(CHAOS_SUITE) $(PYTEST_ARGS)

chaos-soak: $(STAMP) ## Fault harness, slow: bloat soak (CHAOS_SOAK_SECONDS=120)
	$(BIN)/python -m pytest -s -m soak --timeout 1800 tests/chaos $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## Benchmarks beside Procrastinate, PgQueuer: bench/results/
	$(BIN)/python -m bench

clean: ## Stop the embedded server and remove .venv and .jobsys
	-@test -x $(JOBSYS) && $(JOBSYS) db stop
	rm -rf $(VENV) .jobsys
