# Two commands matter: `make run` (set up + whole study) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch keeps the venv small; override for CUDA, e.g. TORCH_SPEC="torch==2.14.1".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup data run test clean-venv

# constraints.txt pins every other package to the versions the committed dvc.lock was built with: a
# newer transformers alone rewrites "transformers_version" in models/base and so changes dvc.lock.
# --no-compile: byte-compiling every installed package took half the install (149 → 72 s on 2 cores);
# Python compiles what is imported, once, on first use.
# Then compile every installed module once, in parallel (27 s): where PYTHONDONTWRITEBYTECODE is set no
# process writes .pyc files, and each one compiled its imports from source (torch, transformers, peft and
# mlflow: 12.5 s to import, 5.4 s compiled; the test suite 535 → 388 s). A package may ship a file for a
# newer Python (torch's py312_intrinsics.py): it stays uncompiled, hence the `|| true`.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile "$(TORCH_SPEC)"
	$(BIN)/pip install -q --no-compile -c constraints.txt -e ".[dev]"
	$(BIN)/python -m compileall -q -j0 $(VENV)/lib > /dev/null || true
	touch $@

setup: $(STAMP)

data: setup
	$(BIN)/mmunlearn data fetch

# MMUNLEARN_PRELOAD: stage commands fork from a server that has torch & co. imported (~8 s less per stage)
run: data
	MMUNLEARN_PRELOAD=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

clean-venv:
	rm -rf $(VENV)
