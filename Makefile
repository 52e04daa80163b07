# Two commands on a fresh machine: `make demo` and `make test`. Each sets up what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROWSER_STAMP := tests/browser/node_modules/.installed

.PHONY: install demo run test check lint typecheck bench clean

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	bash scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Chromium (Debian's) and playwright-core for the console's browser tests.
$(BROWSER_STAMP): tests/browser/package-lock.json scripts/install-browser.sh
	bash scripts/install-browser.sh
	touch $(BROWSER_STAMP)

## Run the orchestrator on embedded defaults, enqueue a sample portfolio, print where to look (Ctrl-C stops).
demo: $(STAMP)
	$(BIN)/orchestrator demo

run: $(STAMP)
	$(BIN)/orchestrator run

## The test suite (real Redis, SQLite or PostgreSQL, a real SMTP server, a real browser for the console).
test: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Everything CI checks: lint, types, tests.
check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache .mypy_cache .ruff_cache tests/browser/node_modules test-artifacts
