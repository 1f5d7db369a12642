# fedmesh — `make demo` runs a federated training run on the local stack, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test test-fast lint typecheck fmt proto clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install fedmesh with its dev tools

demo: $(STAMP)  ## start Redis and the four services, run 8 nodes for 5 rounds of FedAvg
	$(BIN)/fedmesh demo

test: $(STAMP)  ## every suite, slow ones included
	$(BIN)/pytest

test-fast: $(STAMP)  ## everything but the slow suites
	$(BIN)/pytest -m 'not slow'

lint: $(STAMP)  ## ruff and buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd protos && buf lint

typecheck: $(STAMP)  ## mypy --strict
	$(BIN)/mypy -p fedmesh
	$(BIN)/mypy tests bench protos/generate.py

fmt: $(STAMP)  ## format and fix imports
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP)  ## regenerate libs/fedmesh/proto from protos/
	$(BIN)/python protos/generate.py

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache fedmesh-demo
