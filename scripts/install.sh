#!/usr/bin/env bash
# Install taskspace (editable) with its test extras. Installs the CPU build of torch first when torch is
# missing, because a bare `pip install torch` pulls several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  # 2.13.0 is the CPU wheel on our machines; elsewhere pick your build (any recent torch works).
  "$PY" -m pip install "torch==2.13.0" || "$PY" -m pip install torch
fi
"$PY" -m pip install -q -e ".[test,hub]"
