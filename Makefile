# Two commands for a fresh machine:  `make run` (install + the whole system on a simulated session)
# and `make test` (install + lint + the test suite). Everything installs into .venv from pinned files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-dev browser static lint bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The C frame decoder of the Upstox feed (optional: without a compiler the feed decodes in Python).
$(VENV)/.fastfeed: $(VENV)/.runtime feeds/upstox/_fastfeed.c feeds/upstox/build_fastfeed.py
	$(PY) -m feeds.upstox.build_fastfeed || echo "continuing without the C frame decoder"
	touch $@

install: $(VENV)/.runtime $(VENV)/.fastfeed
install-dev: $(VENV)/.dev $(VENV)/.fastfeed

# Front-end libraries from the npm registry, pinned by package-lock.json, vendored for Django's static files.
VENDOR_JS := static/vendor/lightweight-charts.standalone.production.js
$(VENDOR_JS): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	mkdir -p static/vendor
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js $@

static: $(VENDOR_JS)

run: install static
	$(PY) manage.py up

# Debian's Chromium for the browser tests (test tools cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

lint: install-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test: install-dev browser static lint
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest
	@# The order/fill services again on PostgreSQL, where the row-locking concurrency tests run.
	@if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres $(VENV)/bin/pytest -q \
			tests/strategies/test_services.py tests/strategies/test_services_concurrency.py; \
	else echo "PostgreSQL does not answer on 127.0.0.1:5432: its pass is skipped"; fi

bench: install-dev
	$(PY) bench/run.py

clean:
	rm -rf var/history var/*.sqlite3* var/test-artifacts
