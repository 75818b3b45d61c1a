# Everything a fresh machine needs: `make run` (demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := tests/oidc/node_modules/.installed-stamp

.PHONY: run test lint bench venv node mariadb seed clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

node: $(NODE_STAMP)

$(NODE_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

mariadb:
	bash scripts/ensure-mariadb.sh

seed: venv mariadb
	$(BIN)/gateway demo seed --state-dir .run

run: seed
	$(BIN)/gateway serve --config .run/gateway.yaml

lint: venv
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv node mariadb lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) tests/oidc/node_modules .run .pytest_cache .mypy_cache .ruff_cache

# Times auditor filters over a generated 10,000,000-record shared audit log (scratch database, dropped after).
.PHONY: bench-audit
BENCH_AUDIT_ROWS ?= 10000000
bench-audit: venv mariadb
	$(BIN)/python bench/audit_query.py --rows $(BENCH_AUDIT_ROWS)
