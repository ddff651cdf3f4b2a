# Every target creates the virtual environment (.venv) first if it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist); 0 runs the suite in this process.
TEST_WORKERS ?= 2

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## demo: the main job on the bundled data, offline
demo: $(STAMP)
	bash examples/demo.sh

## test: the whole suite (heavy tests included)
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=15 $(PYTEST_ARGS)

## test-fast: everything but the tests marked heavy
test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not heavy" $(PYTEST_ARGS)

## bench: throughput vs timm and keras-hub (own environment .venv-bench; ~20-25 min)
bench:
	bash benchmarks/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check vitcli tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo
