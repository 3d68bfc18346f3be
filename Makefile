# Every target installs what it needs into .venv first (scripts/venv.sh).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CONFIG  ?= examples/config.yaml

.PHONY: venv serve test stress lint bench bench-full clean

$(BIN)/dapi-config: pyproject.toml scripts/venv.sh
	PY=$(PY) VENV=$(VENV) sh scripts/venv.sh
	@touch $@

venv: $(BIN)/dapi-config

serve: venv
	$(BIN)/dapi-config --config $(CONFIG) serve $(SERVE_ARGS)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

stress: venv
	$(BIN)/python -m pytest -m stress $(PYTEST_ARGS)

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
