# nndiag: two commands set everything up on a fresh machine.
#   make demo   create .venv, install nndiag, run the main job on a bundled recipe (no download)
#   make test   install the same way plus the test tools and the Lightning / Hugging Face extras (their tests run), lint (ruff), run the test suite
#   make format apply ruff's fixes and formatting (make test checks both)
#   make docs   install the docs extra (MkDocs + Material) and build the site into site/ (strict: a broken link fails)
#   make figures  re-run the commands behind docs/img/*.png (the "How to read a diagnosis" page) and copy their plots
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
DOCS_STAMP := $(VENV)/.installed-docs-stamp
DEMO_RECIPE ?= recipes/quickstart.yaml

.PHONY: install demo lint format test docs figures bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(TEST_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,lightning,hf]"
	touch $(TEST_STAMP)

$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(DOCS_STAMP)

install: $(STAMP)

demo: install
	$(BIN)/nndiag babysit $(DEMO_RECIPE)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(TEST_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

docs: $(DOCS_STAMP)
	$(BIN)/python -m tools.docgen --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

figures: install
	$(BIN)/python docs/make_figures.py

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf runs .pytest_cache site
