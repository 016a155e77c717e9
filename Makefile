# The front door. `make demo` and `make test` work from a fresh clone with only Python 3.11.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DATARAIL_HOME ?= $(CURDIR)/var

.PHONY: help venv demo test test-unit test-integration lint ui bench clean

help:
	@echo "make demo   - build the sandbox and run the whole pipeline through Airflow (embedded warehouse)"
	@echo "make test   - the whole test suite (server tests need PostgreSQL and MariaDB on 127.0.0.1)"
	@echo "make ui     - the Airflow UI on the demo data at http://127.0.0.1:8080"
	@echo "make lint   - ruff"
	@echo "make bench  - extraction benchmark: datarail vs the C floor, pandas and dlt; warehouse merge and base-library builds at 5M (bench/RESULTS.md)"
	@echo "make clean  - remove var/ (all runtime data)"

$(STAMP): setup.cfg
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/datarail demo

test: $(STAMP)
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m "unit or dags"

test-integration: $(STAMP)
	$(BIN)/pytest -m "integration or e2e"

lint: $(STAMP)
	$(BIN)/ruff check .

# Needs MariaDB (root@127.0.0.1:3306) and PostgreSQL (postgres@127.0.0.1:5432) and the mariadb/psql
# clients; takes ~10 min on 2 cores. Writes bench/results.json and bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.quality_validate
	$(BIN)/python -m bench.warehouse

ui: $(STAMP)
	$(BIN)/python -m datarail.ui

clean:
	rm -rf var
