# Everything a fresh machine needs: `make run` (demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := tests/oidc/node_modules/.installed-stamp

.PHONY: run test lint bench bench-tools bench-profile venv node mariadb seed clean

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

# The benchmark (docs/benchmarks.md): wrk from Debian, the bench extra (py-spy,
# cryptography) and mariadbd binaries; it starts a private mariadbd of its own.
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-tools: $(BENCH_STAMP) mariadb
	@command -v wrk >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

bench: bench-tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run
	@for extra in bench-stream bench-audit; do \
		if $(MAKE) -n $$extra >/dev/null 2>&1; then $(MAKE) $$extra || exit 1; fi; \
	done

# Profile the gateway alone under load (py-spy, --gil): CASE:CLIENTS, e.g. point:64.
bench-profile: bench-tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run --apps gateway --duration 10 --profile $(or $(PROFILE),point:64)

clean:
	rm -rf $(VENV) tests/oidc/node_modules .run .pytest_cache .mypy_cache .ruff_cache
