#!/usr/bin/env bash
# Run the same probe commands with the code under SRC and write their outputs to OUT, to check that a
# refactoring moves no number: run it for two checkouts, then compare OUT/**/*.csv file by file
# (e.g. `diff -r OUT1 OUT2 --include='*.csv'`; the JSON sidecars differ by their timestamps).
# Usage: benchmarks/check_numbers.sh SRC OUT   (SRC: a checkout's src/ folder; needs ../shared beside it)
set -euo pipefail
SRC=$(realpath "$1"); OUT=$2
HERE=$(cd "$(dirname "$0")/.." && pwd)
M=$HERE/../shared/models/gutenberg-gpt2-5m
B=$HERE/../shared/data/blimp
ts() { PYTHONPATH=$SRC python3 -c "import sys; from taskspace.cli import main; sys.argv[0] = 'taskspace'; main()" "$@"; }
# checkouts from before the split-half pass (issue 18) have no --split-half; newer ones must turn it off
HALF=(); if ts probe gradients --help | grep -q -- --split-half; then HALF=(--split-half off); fi
ts probe gradients --model "$M" --revision step2577 --suite "$B" --train-pairs 50 "${HALF[@]}" --out "$OUT/g"
ts probe transfer --model "$M" --revision step2577 --suite "$B" --train-pairs 20 --dev-pairs 10 \
   --eval-pairs 20 --steps 10 --bootstrap 0 "${HALF[@]}" --out "$OUT/t"
