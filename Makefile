# Two entry points: `make demo` and `make test`. Both build .venv from scratch when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo demo-quick test lint clean setup

setup: $(STAMP)

# torch is pinned in constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
# The installers' output (resolver lines, build-backend warnings) goes to $(INSTALL_LOG), shown only
# when a step fails.
INSTALL_LOG := $(VENV)/install.log
QUIET_PIP := $(PIP) install -q --disable-pip-version-check --no-input
$(STAMP): pyproject.toml constraints.txt
	@echo "setting up $(VENV) (torch, onnxruntime, litert-torch; a few minutes the first time; log: $(INSTALL_LOG))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@: > $(INSTALL_LOG)
	@$(QUIET_PIP) --upgrade pip >> $(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }
	@$(QUIET_PIP) -c constraints.txt torch==2.13.0 >> $(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }
	@$(QUIET_PIP) -c constraints.txt -e '.[tflite,text,test,lab]' >> $(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }
	@touch $(STAMP)
	@echo "$(VENV) ready"

demo: $(STAMP)
	@$(VENV)/bin/edge-harness demo --overwrite

demo-quick: $(STAMP)
	@$(VENV)/bin/edge-harness demo --quick --out reports/demo-quick --overwrite

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check harness exporters targets tests benchmarks

clean:
	rm -rf $(VENV) reports/*/ .cache
