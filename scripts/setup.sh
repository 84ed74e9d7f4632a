#!/usr/bin/env bash
# Set up gptlab on a fresh machine: a virtual environment in .venv with torch, gptlab and its dev tools.
# TORCH_SPEC chooses the torch build (default: the 2.13.0 CPU wheel; e.g. TORCH_SPEC="torch" for a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first: left to the dependency resolver, a plain `torch` requirement pulls a multi-GB CUDA build
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
# the notebooks' kernel, "gptlab (.venv)", for any Jupyter on this machine (not only the venv's own)
.venv/bin/python -m ipykernel install --user --name gptlab --display-name "gptlab (.venv)" > /dev/null
# Offline copies of WikiText-2 and the GPT-2 BPE files beside the checkout are used when present (see README)
if [ ! -e data ] && [ -d ../shared/data/wikitext-2 ]; then
  ln -s ../shared/data data
  echo "setup: data -> ../shared/data"
fi
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
