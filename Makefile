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

# The example page on useStream (examples/langgraph_ui), which a browser test drives, from its own lock.
examples/langgraph_ui/node_modules/.package-lock.json: examples/langgraph_ui/package-lock.json
	cd examples/langgraph_ui && npm ci --no-audit --no-fund --loglevel=error

node-deps: tests/node/node_modules/.package-lock.json examples/langgraph_ui/node_modules/.package-lock.json

test: check node-deps
	$(BIN)/pytest

clean:
	rm -rf $(VENV) tests/node/node_modules examples/langgraph_ui/node_modules examples/langgraph_ui/dist .pytest_cache .mypy_cache .ruff_cache runyard.db runyard.db-wal runyard.db-shm
