# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv if needed. torch==2.13.0 goes in first: a looser torch requirement
# installed before it would pull the multi-GB CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv demo test test-slow test-gpu lint bench docs-plots docs-check docs-check-slow notebooks clean

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
	$(BIN)/ruff check refsim golden hwmodel cukernels tests benchmarks tools examples notebooks
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: venv
	$(BIN)/python -m pytest -m "slow" -q

test-gpu: venv
	$(BIN)/python -m pytest -m "gpu" -q

lint: venv
	$(BIN)/ruff check refsim golden hwmodel cukernels tests benchmarks tools examples notebooks

# Each script prints its ratios against a baseline measured in the same run.
bench: venv
	$(BIN)/python benchmarks/bench_int_gemm.py
	$(BIN)/python benchmarks/bench_sdr.py
	$(BIN)/python benchmarks/bench_golden.py
	$(BIN)/python benchmarks/bench_hwmodel.py
	$(BIN)/python benchmarks/bench_rptq.py
	$(BIN)/python benchmarks/bench_kernels.py

# The cost-model plots in docs/img (docs/costmodel.md).
docs-plots: venv
	$(BIN)/refsim cost opt-66b --hw H200 --config W4A4 --batch 64 --seq 8192 --plot docs/img --scheduler inline

# Every figure annotated `<!-- docs-check: ... -->` in README.md and docs/*.md, re-computed (tools/docs_check.py).
# The default suite runs the same check (tests/test_docs_check.py); -slow adds the entries marked slow.
docs-check: venv
	$(BIN)/python tools/docs_check.py

docs-check-slow: venv
	$(BIN)/python tools/docs_check.py --slow

# Execute every notebook from its jupytext source (notebooks/NN_*.py); the executed copies, with
# outputs and plots, go to build/notebooks/ (not committed).
notebooks: venv
	$(BIN)/python notebooks/run_notebooks.py --out build/notebooks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
