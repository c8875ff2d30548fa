# `make run` and `make test` are the whole set-up on a fresh clone: each creates
# the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench chaos lint clean

$(BIN)/.installed: pyproject.toml
	@echo "installing streamkit and its test tools into $(VENV)/ (once; about a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(BIN)/.installed
	# memory:// lives in the process: give each run fresh state files too.
	STREAMKIT_BROKER=memory:// STREAMKIT_DATA_DIR=$$(mktemp -d) $(BIN)/streamkit worker examples.click_count:app --stop-when-idle 2

# Most tests wait on brokers and worker processes, not the CPU: two pytest processes
# (sharing the one broker) halve the wall time on 2 cores. PYTEST_WORKERS=0 for one.
PYTEST_WORKERS ?= 2

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

$(BIN)/.installed-bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@

# make bench BENCH_ARGS=--quick for the short run; see benchmarks/README.md.
bench: $(BIN)/.installed-bench
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# make chaos CHAOS_ARGS="--duration 600 --exactly-once"; see chaos/README.md.
chaos: $(BIN)/.installed
	$(BIN)/python -m chaos $(CHAOS_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check streamkit tests examples benchmarks chaos
	$(BIN)/ruff format --check streamkit tests examples benchmarks chaos

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .streamkit
