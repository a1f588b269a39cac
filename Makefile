# bayesmer: every target sets itself up on a fresh machine (no hand steps).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# A Python >= 3.12: $(PYTHON) if given, else python3.13/python3.12 on PATH, else pyenv's newest.
PYTHON ?= $(shell \
  for p in python3.13 python3.12 python3; do \
    if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
      echo $$p; exit 0; fi; \
  done; \
  root=$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv); \
  ls -d $$root/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -V | tail -n 1)

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install java test test-fast demo lint bench sbc clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "No Python >= 3.12 found: pass PYTHON=/path/to/python3.12" >&2; exit 1; fi
	@echo "Using $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@$(MAKE) --no-print-directory java
	@touch $(STAMP)

# PySpark (a test dependency) needs a Java runtime: Debian's, when java is missing and apt-get is there.
java:
	@if command -v java >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing a Java runtime for PySpark (openjdk-17-jre-headless)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	else echo "No java and no apt-get: install a Java 17+ runtime for the PySpark tests" >&2; exit 1; fi

install: $(STAMP) ## create .venv and install bayesmer with its dev tools

test: $(STAMP) ## run the whole test suite (unit, slow reference checks, tutorials)
	$(PY) -m pytest -ra --durations=15

test-fast: $(STAMP) ## run the quick tests only
	$(PY) -m pytest -ra -m "not slow"

demo: $(STAMP) ## fit the titanic tutorial end to end on the bundled data
	MPLBACKEND=Agg $(PY) tutorials/01_logistic_regression.py

lint: $(STAMP) ## ruff check and format check
	$(PY) -m ruff check bayesmer tests benchmarks tutorials
	$(PY) -m ruff format --check bayesmer tests benchmarks tutorials

bench: $(STAMP) ## bayesmer vs plain Bambi side by side, then start-up times (long: tens of minutes)
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/startup.py

# Extra options for benchmarks/sbc.py, e.g. SBC_ARGS="--resume" or SBC_ARGS="--models poisson_few".
SBC_ARGS ?=

sbc: $(STAMP) ## simulation-based calibration, 200 data sets per model (long: about an hour)
	MPLBACKEND=Agg $(PY) benchmarks/sbc.py --datasets 200 --seed 1 $(SBC_ARGS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
