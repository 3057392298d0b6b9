# One entry point for set-up. Every target (re)builds the virtual environment first, so the
# README's two commands work on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-slow test-integration lint typecheck format bench clean

venv: $(STAMP)

# torch first, pinned: the CPU wheel found locally by pip. Then the project (editable) + dev tools.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/python pipelines/demo.py $(DEMO_ARGS)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# needs dicom3tools (dciodvfy), dcmtk (storescu, echoscu) and orthanc: `apt-get install dicom3tools
# dcmtk orthanc` (.ci/run installs them when missing)
test-integration: venv
	$(BIN)/python -m pytest -q -m integration

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on tea_med/ (the configuration is [tool.mypy] in pyproject.toml)
typecheck: venv
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# every benchmark, one after the other -> benchmarks/RESULTS.md (about 15 minutes on 2 cores);
# BENCH_ARGS="--only explain_cost tea_speed" runs a subset
bench: venv
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
