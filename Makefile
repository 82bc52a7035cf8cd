# ERP Hub — Secure Blob Streaming. `make run` serves the app; `make test` runs the whole suite.
SHELL := /bin/bash
# Local configuration (see .env.example), exported to manage.py and gunicorn.
ifneq (,$(wildcard .env))
include .env
export
endif
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2
# prometheus_client multiprocess mode (docs/architecture.md §9): the workers' metric files, emptied at every start.
PROMETHEUS_MULTIPROC_DIR ?= $(or $(ERPHUB_VAR_DIR),var)/prometheus
# The gunicorn master's own /metrics listener (erphub/metrics_listener.py), answered even while every worker
# thread is busy streaming; on HOST. Empty: none (/metrics on PORT still answers).
METRICS_PORT ?= $(shell echo $$(($(PORT) + 100)))

.PHONY: run test install install-dev lint migrate bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

# Azurite, Microsoft's Azure Storage emulator (npm, with the machine's Node.js), for the blob suite's Azure
# half (blobs/tests/azure.py); in the venv's folder so that `make clean` removes it too. Once per version.
AZURITE_VERSION := 3.37.0
# The registry here sometimes answers without a release a dependency asks for (ETARGET: sql-escaper 1.10.0 in
# one CI run, @azure/msal-common 16.18.0 four attempts running in the next, then the fifth passed): up to ten
# attempts, 30 s apart, each revalidating npm's cached index (--prefer-online).
$(VENV)/azurite/.installed-$(AZURITE_VERSION): | $(BIN)/python
	for attempt in 1 2 3 4 5 6 7 8 9 10; do \
		npm install --prefix $(VENV)/azurite --no-audit --no-fund --loglevel=error --prefer-online \
			azurite@$(AZURITE_VERSION) && break; \
		[ $$attempt = 10 ] && exit 1; \
		echo "npm install of azurite failed (attempt $$attempt of 10); again in 30 s" >&2; sleep 30; \
	done
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev $(VENV)/azurite/.installed-$(AZURITE_VERSION)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# Installs, migrates, creates the local master key (0600) and the first admin if missing, then serves with
# gunicorn's event-driven worker (erphub/event_worker.py: a greenlet per connection, header and idle timeouts,
# connection caps; SERVER_* in .env.example). Safe to re-run. Quiet unless something needs saying: a busy
# port is one line before anything else; the generated admin password is the last line before the server's
# log (lost: `manage.py changepassword admin`).
run: install
	@$(BIN)/python -m erphub.ports $(HOST) PORT=$(PORT) METRICS_PORT=$(METRICS_PORT)
	@$(BIN)/python manage.py local_master_key --create
	@# Its output (the steps, the audit events of the roles it sets up) is shown only when it fails.
	@log=$$(mktemp) && trap 'rm -f "$$log"' EXIT && $(BIN)/python manage.py migrate --noinput >"$$log" 2>&1 \
		|| { cat "$$log" >&2; echo "make run: migrate failed (its output is above)." >&2; exit 1; }
	@$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@# Files left by an earlier run would be summed into this one's counters.
	@rm -rf "$(PROMETHEUS_MULTIPROC_DIR)" && mkdir -p -m 0700 "$(PROMETHEUS_MULTIPROC_DIR)"
	@echo "Serving on http://$(HOST):$(PORT)/ (admin at /admin/, metrics at /metrics)"
	@$(if $(METRICS_PORT),echo "Metrics listener on http://$(HOST):$(METRICS_PORT)/metrics",true)
	@$(BIN)/python manage.py bootstrap_admin
	@exec env PROMETHEUS_MULTIPROC_DIR="$(PROMETHEUS_MULTIPROC_DIR)" METRICS_PORT="$(METRICS_PORT)" \
		$(BIN)/gunicorn erphub.wsgi:application \
		-c python:erphub.gunicorn_conf --workers $(WORKERS) \
		--bind $(HOST):$(PORT) --timeout 120 --graceful-timeout 30 \
		--no-sendfile --no-control-socket

test: install-dev
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# The staff pages in Chromium at 1280 px (erphub/tests/screenshots.py, its PAGES list), as PNG files in
# SCREENSHOT_DIR; fails if a page errors. Needs Debian's chromium and chromium-driver.
SCREENSHOT_DIR ?= $(or $(ERPHUB_VAR_DIR),var)/screenshots
screenshots: install-dev
	rm -rf "$(SCREENSHOT_DIR)" && mkdir -p "$(SCREENSHOT_DIR)"
	SCREENSHOT_DIR="$(abspath $(SCREENSHOT_DIR))" $(BIN)/pytest erphub/tests/screenshots.py -q -p no:cacheprovider
	@echo "Screenshots in $(SCREENSHOT_DIR)/"

bench: install-dev
	$(BIN)/pip install --quiet -r requirements-bench.txt
	$(BIN)/python bench/bench_download.py

clean:
	rm -rf $(VENV)
