# Everything a fresh machine needs: `make run` (demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := tests/oidc/node_modules/.installed-stamp

.PHONY: run test test-long test-faults test-fuzz soak lint bench bench-tools bench-profile venv node mariadb seed clean iamdeps bench-credentials chromium bench-console

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

iamdeps:
	bash scripts/ensure-iam-test-deps.sh

# Debian's headless Chromium and its driver for the console's browser tests (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

seed: venv mariadb
	$(BIN)/gateway demo seed --state-dir .run

run: seed
	@echo "web console: http://127.0.0.1:8080/console/ (dev mode: sign in with any name at the dev issuer's page)"
	$(BIN)/gateway serve --config .run/gateway.yaml

lint: venv
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# Everything but the tests marked `slow` (the soak and the longest fault scenarios): CI's suite.
test: venv node mariadb iamdeps chromium lint
	$(BIN)/pytest -q -m "not slow"

# Everything, the `slow` tests included.
test-long: venv node mariadb iamdeps chromium lint
	$(BIN)/pytest -q

# The fault suite alone (MariaDB restarts, cut/stalled links, IdP and audit store outages,
# SIGTERM, a 60 s soak): tests marked `faults`, the `slow` ones included; `make test` runs
# those not also marked `slow`.
test-faults: venv node mariadb
	$(BIN)/pytest -q -m faults

# Bad input at volume (hypothesis on the statement analyser and policy loader, schemathesis
# against a running gateway): tests marked `fuzz`, derandomized, all included in `make test` too.
# HYPOTHESIS_PROFILE=deep tries ten times as many examples, random, saved under .hypothesis/.
test-fuzz: venv node mariadb
	$(BIN)/pytest -q -m fuzz

# The issue's five-minute soak at 64 clients (RSS, open files, MariaDB connections, audit counts).
soak: venv node mariadb
	GATEWAY_SOAK_SECONDS=300 $(BIN)/pytest -q -m faults -k soak

bench-credentials: venv iamdeps
	$(BIN)/python scripts/bench_credentials.py

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
	$(MAKE) bench-stream
	@echo "(the 10,000,000-record audit filter benchmark takes about 8 minutes on its own: make bench-audit)"

# Profile the gateway alone under load (py-spy, --gil): CASE:CLIENTS, e.g. point:64.
bench-profile: bench-tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run --apps gateway --duration 10 --profile $(or $(PROFILE),point:64)

clean:
	rm -rf $(VENV) tests/oidc/node_modules .run .pytest_cache .mypy_cache .ruff_cache .faults-report.json .hypothesis tests/artifacts

# Streaming benchmark (issue 5): gateway peak RSS over 1,000,000 streamed rows and rows/s vs the mariadb client.
.PHONY: bench-stream
bench-stream: venv mariadb
	$(BIN)/python bench/stream.py --rows 1000000
# Times auditor filters over a generated 10,000,000-record shared audit log (scratch database, dropped after).
# Audit records/s with 1 and 3 replicas writing to one MariaDB store, per-replica chains against
# the single-chain store of main before issue 14 (commit 58633c6); figures in bench/results/audit_chains.json.
.PHONY: bench-chains
bench-chains: venv mariadb
	$(BIN)/python bench/audit_chains.py --json bench/results/audit_chains.json

# The audit path's parts timed alone (issue 13): SQLite store, a segment log, the JSON log events, fsync;
# then one client's awaited append through the thread and the process writer against the store alone.
.PHONY: bench-audit-path
bench-audit-path: venv
	$(BIN)/python bench/audit_path.py --requests 1
	$(BIN)/python bench/audit_path.py --requests 16
	$(BIN)/python bench/audit_handoff.py

.PHONY: bench-audit
BENCH_AUDIT_ROWS ?= 10000000
bench-audit: venv mariadb
	$(BIN)/python bench/audit_query.py --rows $(BENCH_AUDIT_ROWS)
# Edit-to-enforced and revocation-to-cancel latency, three replicas on one MariaDB state store (issue 14).
.PHONY: bench-state
bench-state: venv mariadb
	$(BIN)/python bench/state_latency.py
# Server-side render time of the console's audit browser over a generated 1,000,000-record log (issue 15).
BENCH_CONSOLE_ROWS ?= 1000000
bench-console: seed
	$(BIN)/python bench/console_render.py --rows $(BENCH_CONSOLE_ROWS)
