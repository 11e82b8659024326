# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv if needed. torch==2.13.0 goes in first: a looser torch requirement
# installed before it would pull the multi-GB CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv demo test test-slow test-gpu lint bench docs-plots clean gpu-campaign

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,torch,hf,onnx,cost,golden,realmodel]"
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

# Each script prints its ratios against a baseline measured in the same run.
bench: venv
	$(BIN)/python benchmarks/bench_int_gemm.py
	$(BIN)/python benchmarks/bench_sdr.py
	$(BIN)/python benchmarks/bench_golden.py
	$(BIN)/python benchmarks/bench_hwmodel.py
	$(BIN)/python benchmarks/bench_rptq.py
	$(BIN)/python benchmarks/bench_kernels.py

# The prepared device run (issue 15): GPU tests, harness campaign, kernel benchmark, figures into
# docs/benchmarks.md, in one call of at most 8 minutes. Uses the venv when there is one, else python3
# with PYTHONPATH=. (the GPU machine has cupy-cuda13x, torch, numba, hypothesis and pytest, no .venv).
GPU_PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))
gpu-campaign:
	PYTHONPATH=. timeout 470 $(GPU_PY) -m cukernels.campaign --budget 420

# The cost-model plots in docs/img (docs/costmodel.md).
docs-plots: venv
	$(BIN)/refsim cost opt-66b --hw H200 --config W4A4 --batch 64 --seq 8192 --plot docs/img

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
