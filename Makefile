# Two commands for a fresh machine:  `make run` (install + the whole system on a simulated session)
# and `make test` (install + lint + the test suite). Everything installs into .venv from pinned files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-dev browser lint bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

run: install
	$(PY) manage.py up

# Debian's Chromium for the browser tests (test tools cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

lint: install-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test: install-dev browser lint
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest

bench: install-dev
	$(PY) bench/run.py

clean:
	rm -rf var/history var/*.sqlite3* var/test-artifacts
