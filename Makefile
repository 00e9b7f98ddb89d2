# The two set-up commands: `make demo` trains on built-in synthetic data, `make test` runs the suite.
# Both create .venv and install crackcascade with pinned torch from constraints.txt when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# mkdocs-material prints an advertisement on every build otherwise.
export NO_MKDOCS_2_WARNING := 1
STAMP := $(VENV)/.crackcascade-installed

.PHONY: demo test install lint strip-notebooks clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crackcascade fit --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy crackcascade
	$(BIN)/mkdocs build --strict

# Notebooks are committed without outputs (a test checks); run this after executing one.
strip-notebooks: $(STAMP)
	$(BIN)/python notebooks/strip_outputs.py

clean:
	rm -rf $(VENV) logs lightning_logs data/synthetic site .pytest_cache .ruff_cache .mypy_cache
