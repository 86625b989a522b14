# suanli — the two commands: `make demo` and `make test`. Each sets up .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Snakemake's environment lives outside /tmp: each task gets a private /tmp, and the agent's
# tasks must still find this environment's python when the checkout itself is under /tmp.
SNAKEMAKE_VENV ?= /var/tmp/suanli/venv-snakemake
SNAKEMAKE_STAMP := $(SNAKEMAKE_VENV)/.installed
# Toil 5.12 (py-tes 0.4.2) for the Toil-on-TES test, outside /tmp for the same reason
TOIL_VENV ?= /var/tmp/suanli/venv-toil
TOIL_STAMP := $(TOIL_VENV)/.installed

.PHONY: demo test bench lint typecheck contracts clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

CONSOLE_ASSETS := src/suanli/console/static/vendor/.installed
$(CONSOLE_ASSETS): scripts/console-assets.sh
	@scripts/console-assets.sh

demo: $(STAMP) $(CONSOLE_ASSETS) ## The platform on this machine: server, site, agent, real tasks (Ctrl-C stops)
	$(BIN)/python scripts/demo.py

$(SNAKEMAKE_STAMP): scripts/snakemake-env.sh
	@scripts/snakemake-env.sh $(SNAKEMAKE_VENV)

$(TOIL_STAMP): scripts/toil-env.sh
	@scripts/toil-env.sh $(TOIL_VENV)

test: $(STAMP) $(SNAKEMAKE_STAMP) $(TOIL_STAMP) $(CONSOLE_ASSETS) ## The whole suite (SQLite and a real PostgreSQL), plus the import contracts
	$(BIN)/lint-imports
	SUANLI_SNAKEMAKE_VENV=$(SNAKEMAKE_VENV) SUANLI_TOIL_VENV=$(TOIL_VENV) scripts/run-tests.sh -n auto

bench: $(STAMP) ## Benchmarks: figures to stdout and benchmarks/results/*.json
	$(BIN)/python benchmarks/bench_metering.py
	$(BIN)/python benchmarks/bench_scheduler.py
	$(BIN)/python benchmarks/bench_forecast.py
	$(BIN)/python benchmarks/bench_platform.py
	$(BIN)/python benchmarks/bench_latency.py
	$(BIN)/python benchmarks/bench_admission.py
	$(BIN)/python benchmarks/bench_submit.py
	$(BIN)/python benchmarks/bench_tes.py
	$(BIN)/python benchmarks/bench_staging.py
	$(BIN)/python benchmarks/bench_backends.py
	$(BIN)/python benchmarks/bench_sim.py --jobs 1000000
	$(BIN)/python benchmarks/bench_foresight.py
	$(BIN)/python benchmarks/bench_shifting.py

lint: $(STAMP) ## ruff + mypy (--strict on the pure packages, see pyproject)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(SNAKEMAKE_VENV) $(TOIL_VENV) /var/tmp/suanli/venv-s3 build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
