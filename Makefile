# Scoring platform: the commands a new user needs. `make help` lists them.
PY_VERSION ?= 3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.install-stamp

.DEFAULT_GOAL := help
.PHONY: help install demo test lint fmt protos bench clean

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36mmake %-8s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python$(PY_VERSION) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and exactly pinned: nothing may pull another (CUDA) build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.lock
	# Triton's server binary; --no-deps because the wheel declares numpy<2 (Feast needs numpy 2).
	$(PIP) install -q --no-deps nvidia-pytriton==0.7.0
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies
	@echo "installed into $(VENV)"

demo: install ## Run the whole system locally: data, features, training, Triton, gateway, requests
	$(VENV)/bin/scoring demo

test: install ## Run lint and the whole test suite (real Triton, Feast, Redis, PostgreSQL)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: install ## ruff format --check, ruff check, mypy
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

fmt: install ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install ## Gateway latency and throughput vs the naive pipeline and the floor (bench/RESULTS.md)
	$(PY) bench/gateway_bench.py

protos: install ## Regenerate the committed gRPC code from protos/
	$(PY) -m scoring.devtools.codegen

clean: ## Remove generated data, model versions and run state (keeps .venv)
	rm -rf features/data .triton .run model_repository/*/[0-9]*
