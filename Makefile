# `make dev` runs the whole stack; `make test` runs the suite. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test faults lint typecheck bench lock clean screenshots

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dodo-worker needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

dev: install
	$(BIN)/dodo-worker dev

test: install
	$(BIN)/pytest -q

# The fault suite (tests/faults, docs/faults.md): real processes killed, Redis and PostgreSQL stopped.
faults: install
	$(BIN)/pytest -q -m faults tests/faults

# The console's screenshots in docs/console.md, taken by its browser tests (needs Chromium).
screenshots: install
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/browser

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/receiver.py

# Re-pin every dependency (needs network); commit requirements.lock afterwards. uv is pinned
# too, so the same pyproject.toml resolves the same way on every machine.
UV_VERSION ?= 0.13.9
lock:
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --universal --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
