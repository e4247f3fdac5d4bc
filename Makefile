# One command to set up and run the main job, one to set up and pass the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## The main job on the built-in default dataset (ml-100k).
demo: $(STAMP)
	$(BIN)/metarec demo

## The fast test suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m ruff check metarec tests benchmarks
	$(BIN)/python -m pytest -q

## Everything, including the slow tests (ml-1m, longer training).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
