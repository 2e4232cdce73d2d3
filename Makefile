# Every target bootstraps .venv itself; a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := src tests examples benchmarks scripts
PYTEST_ARGS ?=

.PHONY: all venv codegen check format lint typecheck codegen-check node-deps browser-deps test test-fast test-min demo bench bench-quick dist compat mutate clean

all: check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# bench: FastStream and pydantic, benchmark-only (never runtime) but type-checked with the rest
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

codegen: $(STAMP)
	$(BIN)/streamtools codegen schemas examples/contracts

format: $(STAMP)
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

lint: $(STAMP)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)

typecheck: $(STAMP)
	$(BIN)/mypy

codegen-check: $(STAMP)
	$(BIN)/streamtools codegen schemas examples/contracts --check

# compat: schemas/ against the last release tag (scripts/compat.sh says how to acknowledge a break)
compat: $(STAMP)
	scripts/compat.sh

check: lint typecheck codegen-check compat

# The Node.js peer of tests/interop (amqplib, kafkajs; exact versions in its package-lock.json).
# No npm fails on CI; elsewhere the interop tests then skip, saying why.
NODE_DIR := tests/interop/node
node-deps: $(NODE_DIR)/node_modules/.package-lock.json

$(NODE_DIR)/node_modules/.package-lock.json: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(NODE_DIR) && npm ci --no-audit --no-fund; \
	elif [ -n "$$CI" ]; then \
		echo "npm is not on PATH: the Node.js interop test needs Node.js 20+ and npm" >&2; exit 1; \
	else \
		echo "warning: npm is not on PATH; the Node.js interop tests will skip" >&2; \
	fi

# Debian's chromium and chromedriver, for the AsyncAPI page's browser test (tests/test_docs_page.py):
# installed with apt-get when missing (as root), else the command to run and a failure.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "the browser test needs chromium and chromedriver; run: sudo apt-get install -y chromium chromium-driver" >&2; \
		exit 1; \
	fi

test: check node-deps browser-deps
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest -x -q -m "not slow" $(PYTEST_ARGS)

# The tests on the lowest versions pyproject.toml allows: every runtime dependency pinned to
# its floor (scripts/lowest_pins.py says how, and which dev tools cannot install beside the
# floors: their tests are left out), in a venv of its own, built afresh when pyproject.toml
# changes. The slow tests (broker restarts, process kills) run in `make test` only.
VENV_MIN := .venv-min
MIN_STAMP := $(VENV_MIN)/.installed

$(MIN_STAMP): pyproject.toml scripts/lowest_pins.py
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_MIN)/bin/python scripts/lowest_pins.py > $(VENV_MIN)/requirements.txt
	$(VENV_MIN)/bin/python -m pip install --quiet -e . -r $(VENV_MIN)/requirements.txt
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP) node-deps browser-deps
	$(VENV_MIN)/bin/pytest -q -m "not slow" $$($(VENV_MIN)/bin/python scripts/lowest_pins.py --ignored) $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

# both event loops (asyncio's and uvloop), each case on each; the Targets table of issue #14 last;
# a full run then writes README.md's Performance tables (benchmarks/readme.py)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --full --loop both
	$(BIN)/python -m benchmarks.readme

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick --loop both

# hand-made mutants of the core and the transports; every one must be caught (scripts/mutate.py)
mutate: $(STAMP)
	$(BIN)/python scripts/mutate.py

# sdist + wheel into dist/ (hatchling writes nothing else), then checked by scripts/check_dist.py
dist: $(STAMP)
	PYTHON=$(BIN)/python scripts/dist.sh

clean:
	rm -rf $(VENV) $(VENV_MIN) .mypy_cache .ruff_cache .pytest_cache dist build *.egg-info src/*.egg-info
