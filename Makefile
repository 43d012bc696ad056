# The two commands: `make demo` serves the demo, `make test` runs every check.
# Both create the virtualenv first; the demo installs runyard alone into it,
# the checks the whole dev toolchain (the adapters' frameworks, Playwright, mypy...).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install install-demo demo cli test check clean node-deps

# One stamp per set of extras installed, so `make demo` never pulls the dev toolchain
# and `make test` after it adds only what the demo lacked.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-runyard: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-runyard

install-demo: $(VENV)/.installed-runyard

install: $(VENV)/.installed-dev

demo: install-demo
	@echo "Serving the demo on http://127.0.0.1:8000 (Ctrl-C stops it). In another terminal, in $(CURDIR):"
	@echo "  $(BIN)/runyard run ticker --input '{\"marker\": \"hello\", \"count\": 5, \"interval_ms\": 200}'"
	@echo "  (or 'source $(BIN)/activate' once, then plain 'runyard ...'; 'make cli' says the same)"
	$(BIN)/runyard demo

cli: install-demo
	@echo "The CLI is $(CURDIR)/$(BIN)/runyard; 'source $(BIN)/activate' puts it on your PATH."
	@$(BIN)/runyard --help

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

# The example chat on useChat (examples/nextjs_chat) likewise: installed inside its test, npm ci
# once ran past the test's 3-minute timeout on a loaded machine.
examples/nextjs_chat/node_modules/.package-lock.json: examples/nextjs_chat/package-lock.json
	cd examples/nextjs_chat && npm ci --no-audit --no-fund --loglevel=error

node-deps: tests/node/node_modules/.package-lock.json examples/langgraph_ui/node_modules/.package-lock.json \
	examples/nextjs_chat/node_modules/.package-lock.json

# Four processes (pytest-xdist): most tests wait on servers, not on the CPU (13 min instead of 18 on 2 cores).
# The test that waits for real minutes starts first (tests/conftest.py: FIRST).
test: check node-deps
	$(BIN)/pytest -n 4

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache runyard.db runyard.db-wal runyard.db-shm
	rm -rf examples/nextjs_chat/node_modules examples/nextjs_chat/dist examples/langgraph_ui/node_modules examples/langgraph_ui/dist
