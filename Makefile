# Two entry points for a fresh machine: `make run` and `make test`.
# `make run` installs the core only (what the demo needs); `make test` adds every extra and the test tools.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-core
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test setup clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(RUN_STAMP) $(TEST_STAMP)

setup: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/mpq plan -o plan.json

test: $(TEST_STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache plan.json
