# Set-up and everyday targets. Every target creates the virtual environment it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m aprrd_cli.demo

bench: $(STAMP)
	$(BIN)/python -m aprrd_cli.bench

lint: $(STAMP)
	$(BIN)/ruff check aprrd_cli tests
	$(BIN)/ruff format --check aprrd_cli tests

format: $(STAMP)
	$(BIN)/ruff format aprrd_cli tests
	$(BIN)/ruff check --fix aprrd_cli tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
