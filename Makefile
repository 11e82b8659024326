# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv if needed. torch==2.13.0 goes in first: a looser torch requirement
# installed before it would pull the multi-GB CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv demo test test-slow test-gpu lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,torch,hf,onnx,cost,golden]"
	touch $(STAMP)

demo: venv
	$(BIN)/refsim demo

test: venv
	$(BIN)/ruff check refsim golden hwmodel cukernels tests benchmarks
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: venv
	$(BIN)/python -m pytest -m "slow" -q

test-gpu: venv
	$(BIN)/python -m pytest -m "gpu" -q

lint: venv
	$(BIN)/ruff check refsim golden hwmodel cukernels tests benchmarks

bench: venv
	$(BIN)/python benchmarks/bench_int_gemm.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
