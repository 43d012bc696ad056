# The two commands: `make demo` serves the demo, `make test` runs every check.
# Both create the virtualenv and install runyard into it first.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo test check clean node-deps

$(BIN)/runyard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/runyard

demo: install
	$(BIN)/runyard demo

check: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy --strict src/runyard examples

# The JavaScript clients (@langchain/langgraph-sdk, ai) the protocol tests drive, from the committed lock.
tests/node/node_modules/.package-lock.json: tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

node-deps: tests/node/node_modules/.package-lock.json

# Four processes (pytest-xdist): most tests wait on servers, not on the CPU (13 min instead of 18 on 2 cores).
test: check node-deps
	$(BIN)/pytest -n 4

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache runyard.db runyard.db-wal runyard.db-shm
