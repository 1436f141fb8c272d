# `make demo`: create .venv, install, run the offline demo. `make test`: same venv, check the import
# layering (lint-imports, contracts in pyproject.toml), run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.t2ibias-installed
# The torch/torchvision pair that works on the project's CPU machines (x86_64, Python 3.11).
# On a GPU box, install your own CUDA build of torch first and run `pip install -e .`.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]" $(TORCH)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/t2ibias sweep --model tiny-random-sd --prompts demo

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sweep.py

clean:
	rm -rf $(VENV) runs
