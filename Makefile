# Every target installs what it needs into .venv first (scripts/venv.sh).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CONFIG  ?= examples/config.yaml
# Parallel test workers: twice the cores, as many tests wait (fsync, subprocesses, servers'
# shutdown ticks) rather than compute. --dist loadgroup keeps the tests that must not run
# beside each other (the xdist group "machine": kill and power-cut campaigns, benchmarks) on
# one worker, one after the other.
JOBS    ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))
PARALLEL = -n $(JOBS) --dist loadgroup
# The inner loop: unit and contract tests on SQLite, in-process; no PostgreSQL, no browser,
# no CLI or serve subprocesses, no campaigns (markers set in tests/conftest.py).
FAST    := not slow and not stress and not postgres and not browser and not processes and not remote

.PHONY: venv serve test test-fast stress lint bench bench-full clean

# Two stamps: what `serve` needs (the package alone) and what the tests need (every extra and
# the dev tools, a superset). A venv made for the tests serves too.
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev

$(DEV): pyproject.toml scripts/venv.sh
	PY=$(PY) VENV=$(VENV) sh scripts/venv.sh dev
	@touch $@ $(RUNTIME)

$(RUNTIME): pyproject.toml scripts/venv.sh
	PY=$(PY) VENV=$(VENV) sh scripts/venv.sh runtime
	@touch $@

venv: $(DEV)

serve: $(RUNTIME)
	$(BIN)/dapi-config --config $(CONFIG) serve $(SERVE_ARGS)

test: venv
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

test-fast: venv
	DAPI_CONFIG_QUICK_PROPERTIES=1 $(BIN)/python -m pytest $(PARALLEL) -m "$(FAST)" $(PYTEST_ARGS)

# The long campaigns: the full kill and power-cut counts, and two minutes of the operation
# campaign per backend (each prints its seed; DAPI_CONFIG_CAMPAIGN_SEED replays one).
stress: venv
	$(BIN)/python -m pytest -m stress $(PYTEST_ARGS)
	DAPI_CONFIG_CAMPAIGN_SECONDS=$${DAPI_CONFIG_CAMPAIGN_SECONDS:-120} \
		$(BIN)/python -m pytest -s tests/faults/test_operation_campaign.py $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: venv
	$(BIN)/python -m benchmarks --quick

bench-full: venv
	$(BIN)/python -m benchmarks --full

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
