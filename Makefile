# Calltrail. `make up` starts the stack, `make test` runs every test; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
# uv from PATH, else bootstrapped into .tools/ with the machine's python3.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: help install services migrate up down test demo bench chaos lint mutate

help:
	@echo "make up | down | test | demo | bench | chaos | lint | migrate | mutate"

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

install: $(UV)
	$(UV) sync --frozen --quiet

services:  ## start local PostgreSQL and RabbitMQ when installed but stopped
	deploy/ensure-services.sh

migrate: install services
	$(VENV)/bin/calltrail migrate

up: install
	deploy/stack.sh up

down:
	deploy/stack.sh down

test: install services  ## and Chromium, PgBouncer and promtool, which tests drive
	deploy/ensure-packages.sh
	$(VENV)/bin/pytest -n 4 --dist loadgroup

demo: install
	$(VENV)/bin/python deploy/demo.py

bench: install services
	$(VENV)/bin/python -m bench

chaos: install services  ## faults under load, one at a time (root: spool-full mounts a tmpfs)
	$(VENV)/bin/python -m chaos

DEPTRY_MODULES := calltrail-ingest=ingest,calltrail-admin=admin,calltrail-api=api,$\
calltrail-call-processor=call_processor,calltrail-metrics-sync=metrics_sync,$\
calltrail-dispatcher=dispatcher
lint: install  ## ruff, mypy (strict on the domain rules: see pyproject.toml), deptry (below)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@# Each workspace member declares what its own code imports: none missing (DEP001),
	@# none only there through another package (DEP003). A member's module named apart.
	@for member in libs/*/ services/*/; do \
	  (cd $$member && $(CURDIR)/$(VENV)/bin/deptry src --no-ansi \
	    --ignore DEP002,DEP004,DEP005 --package-module-name-map $(DEPTRY_MODULES)) || exit 1; \
	done

mutate: install services  ## mutation testing of the rules (minutes; not in make test): docs/mutation.md
	$(VENV)/bin/python deploy/mutate.py
