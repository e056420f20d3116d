# The README's two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
TEST_EXTRAS := .[dev,cli,local]
DEMO_EXTRAS := .[cli,local]
# pip's output goes to a log, printed only when the install fails.
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_LOG := $(VENV)/pip.log

.PHONY: test demo lint typecheck pytest bench clean

# Tests install every extra (dev tools, the browser driver, Temporal); the demo only what it runs.
$(STAMP): pyproject.toml
	$(call install,$(TEST_EXTRAS))
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	$(call install,$(DEMO_EXTRAS))
	touch $(DEMO_STAMP)

define install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "pip install -e '$(1)' (pip's output: $(PIP_LOG))"
	@{ $(PIP) install --upgrade pip && $(PIP) install -e '$(1)'; } >$(PIP_LOG) 2>&1 \
		|| { cat $(PIP_LOG); exit 1; }
endef

lint: $(STAMP)
	$(BIN)/ruff check datalab_async tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict datalab_async

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

demo: $(DEMO_STAMP)
	$(BIN)/python examples/documents/make_samples.py examples/documents
	$(BIN)/datalab-async run demo examples/documents --local --out out

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache build *.egg-info
