# Two entry points: `make demo` and `make test`. Both build .venv from scratch when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo demo-quick test lint clean setup

setup: $(STAMP)

# torch is pinned in constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[tflite,test,lab]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edge-harness demo --overwrite

demo-quick: $(STAMP)
	$(VENV)/bin/edge-harness demo --quick --out reports/demo-quick --overwrite

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check harness exporters targets tests benchmarks

clean:
	rm -rf $(VENV) reports/*/ .cache
