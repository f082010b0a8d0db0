# The project's commands; README.md explains each. Every target runs from the repo root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LEDGER := $(VENV)/bin/ledger
PYTEST_ARGS ?=

.PHONY: compose-schema setup asyncapi-tools up down demo test lint bench chaos clean-stack

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The official AsyncAPI parser, for tests/integration/test_asyncapi.py (tools/asyncapi/). No
# package of it needs an install script; the one that has one only reports usage (@scarf/scarf).
asyncapi-tools: tools/asyncapi/node_modules/.installed

tools/asyncapi/node_modules/.installed: tools/asyncapi/package.json tools/asyncapi/package-lock.json
	npm ci --prefix tools/asyncapi --no-audit --no-fund --ignore-scripts
	touch $@

# The compose-spec JSON schema, for tests/unit/test_compose.py where no docker CLI validates the
# compose file (tools/compose-schema/): one package of JSON, no install script.
compose-schema: tools/compose-schema/node_modules/.installed

tools/compose-schema/node_modules/.installed: tools/compose-schema/package.json tools/compose-schema/package-lock.json
	npm ci --prefix tools/compose-schema --no-audit --no-fund --ignore-scripts
	touch $@

setup: $(VENV)/.installed asyncapi-tools compose-schema
	bash stack/stack.sh install

up: setup
	bash stack/stack.sh up

down:
	bash stack/stack.sh down

demo: up
	$(LEDGER) migrate
	$(PY) -m demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy ledger projections dispatcher services console stack tests bench examples demo
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The fault campaign alone: `make chaos` (the CI set), `make chaos N=500`, `make chaos SEED=n`;
# `make chaos BROKERS=3 N=20`: schedules on a three-broker cluster (leader kills, two down).
chaos: up
	CHAOS_N=$(or $(N),30) $(if $(SEED),CHAOS_SEED=$(SEED),) $(if $(BROKERS),CHAOS_BROKERS=$(BROKERS),) \
	  $(VENV)/bin/pytest -m chaos $(if $(filter 3,$(BROKERS)),tests/faults/test_campaign_three_brokers.py,tests/faults) $(PYTEST_ARGS)

bench: up
	$(PY) -m bench $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

clean-stack:
	bash stack/stack.sh clean
