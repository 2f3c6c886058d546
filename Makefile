# nndiag: two commands set everything up on a fresh machine.
#   make demo   create .venv, install nndiag, run the main job on a bundled recipe (no download)
#   make test   install the same way plus the test tools and the Lightning / Hugging Face extras (their tests run), run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
DEMO_RECIPE ?= recipes/quickstart.yaml

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(TEST_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,lightning,hf]"
	touch $(TEST_STAMP)

install: $(STAMP)

demo: install
	$(BIN)/nndiag babysit $(DEMO_RECIPE)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf runs .pytest_cache
