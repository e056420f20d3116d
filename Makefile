# The README's two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip's output goes to a log, printed only when the install fails.
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_LOG := $(VENV)/pip.log

.PHONY: test demo lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "pip install -e '.[dev,cli,local]' (pip's output: $(PIP_LOG))"
	@{ $(PIP) install --upgrade pip && $(PIP) install -e '.[dev,cli,local]'; } >$(PIP_LOG) 2>&1 \
		|| { cat $(PIP_LOG); exit 1; }
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check datalab_async tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict datalab_async

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/python examples/documents/make_samples.py examples/documents
	$(BIN)/datalab-async run demo examples/documents --local --out out

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache build *.egg-info
