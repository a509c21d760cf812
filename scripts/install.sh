#!/usr/bin/env bash
# Install taskspace (editable) with its test and hub extras, after torch 2.13.0 when torch is missing.
# That torch comes from whatever index pip is set up with: from PyPI the default build (on Linux x86_64
# CUDA-enabled, several GB of NVIDIA packages, GPU or not); on this project's machines a local wheel
# index serves a CPU build. For CPU-only elsewhere, install torch from PyTorch's CPU wheel index first:
# this script then leaves it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  # 2.13.0 is what our machines' index serves (a CPU build); any torch >= 2.1 works.
  "$PY" -m pip install "torch==2.13.0" || "$PY" -m pip install torch
fi
"$PY" -m pip install -q -e ".[test,hub]"
