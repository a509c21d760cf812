#!/usr/bin/env bash
# Run the same probe commands with the code under SRC and write their outputs to OUT, to check that a
# refactoring or a speed-up moves no number: run it for two checkouts, then compare the CSV files
# (`benchmarks/check_numbers.sh --compare OUT1 OUT2`; the JSON sidecars differ by their timestamps).
#
# Usage: benchmarks/check_numbers.sh SRC OUT            every probe family on 10 BLiMP paradigms (minutes)
#        FULL=1 benchmarks/check_numbers.sh SRC OUT     gradients and transfer over all 67 (an hour or more)
#        benchmarks/check_numbers.sh --compare OUT1 OUT2
# SRC: a checkout's src/ folder (e.g. from `git worktree add /tmp/before COMMIT`); the shared data
# (gutenberg-gpt2-5m and BLiMP) is looked up in ../shared beside the checkout, or in $SHARED.
set -euo pipefail
if [ "${1:-}" = "--compare" ]; then
  # byte for byte, except columns of wall-clock seconds (the only thing allowed to move); new or dropped
  # columns are listed, so a change that adds a column says so
  exec python3 - "$2" "$3" <<'PY'
import sys
from pathlib import Path
import pandas as pd
a, b = Path(sys.argv[1]), Path(sys.argv[2])
fa = sorted(p.relative_to(a) for p in a.rglob("*.csv"))
fb = sorted(p.relative_to(b) for p in b.rglob("*.csv"))
bad = [f"only in {b}: {f}" for f in sorted(set(fb) - set(fa))] + [f"only in {a}: {f}" for f in sorted(set(fa) - set(fb))]
same = 0
for f in sorted(set(fa) & set(fb)):
    if (a / f).read_bytes() == (b / f).read_bytes():
        same += 1
        continue
    x, y = pd.read_csv(a / f), pd.read_csv(b / f)
    timing = {c for c in x.columns if c.endswith("seconds")}
    moved = [c for c in x.columns if c in y.columns and c not in timing and not x[c].equals(y[c])]
    if len(x) != len(y) or moved or set(x.columns) != set(y.columns):
        bad.append(f"differs: {f}: columns {moved or '-'}; added {sorted(set(y.columns) - set(x.columns)) or '-'}, "
                   f"dropped {sorted(set(x.columns) - set(y.columns)) or '-'}")
    else:
        same += 1
for line in bad:
    print(line)
print(f"{same} of {len(set(fa) | set(fb))} CSV files identical (timing columns aside)")
sys.exit(1 if bad else 0)
PY
fi
SRC=$(realpath "$1"); OUT=$2
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$HERE/../shared}
M=$SHARED/models/gutenberg-gpt2-5m
B=$SHARED/data/blimp
ts() { PYTHONPATH=$SRC python3 -c "import sys; from taskspace.cli import main; sys.argv[0] = 'taskspace'; main()" "$@"; }
# checkouts from before the split-half pass have no --split-half; newer ones must turn it off
HALF=(); if ts probe gradients --help | grep -q -- --split-half; then HALF=(--split-half off); fi
# one torch thread: with two, one run of the same code can differ from another in its last bits (1 of 6
# two-thread transfer runs on 2026-12-06: MKL and oneDNN do not promise run-to-run equality with threads), and
# fine-tuning carries that to ~1e-4 in a transfer space; 37 one-thread runs of ablation gave one result
TH=(); if ts score --help | grep -q -- --threads; then TH=(--threads 1); fi
if [ "${FULL:-0}" = 1 ]; then
  ts probe gradients --model "$M" --revision step2577 --suite "$B" --train-pairs 50 "${HALF[@]}" "${TH[@]}" --out "$OUT/g"
  ts probe transfer --model "$M" --revision step2577 --suite "$B" --train-pairs 20 --dev-pairs 10 \
     --eval-pairs 20 --steps 10 --bootstrap 0 "${HALF[@]}" "${TH[@]}" --out "$OUT/t"
  exit 0
fi
# two or three paradigms from each of four groups (agreement, islands, anaphora, argument structure)
T=determiner_noun_agreement_1,determiner_noun_agreement_2,determiner_noun_agreement_irregular_1
T=$T,adjunct_island,complex_NP_island,wh_island,anaphor_gender_agreement,anaphor_number_agreement
T=$T,causative,drop_argument
C=(--model "$M" --revision step2577 --suite "$B" --tasks "$T" --seed 0 "${TH[@]}")
ts score --model "$M" --revision step2577 --suite "$B" --tasks "$T" "${TH[@]}" --out "$OUT/score"
ts probe gradients "${C[@]}" --train-pairs 30 "${HALF[@]}" --out "$OUT/gradients"
ts probe transfer "${C[@]}" --train-pairs 20 --dev-pairs 10 --eval-pairs 20 --steps 10 --bootstrap 0 \
   "${HALF[@]}" --out "$OUT/transfer"
for p in activations latent; do
  ts probe $p "${C[@]}" --train-pairs 30 --eval-pairs 30 "${HALF[@]}" --out "$OUT/$p"
done
for p in erasure steering; do
  ts probe $p "${C[@]}" --train-pairs 30 --eval-pairs 30 --layer 2 "${HALF[@]}" --out "$OUT/$p"
done
if ts probe das --help >/dev/null 2>&1; then
  ts probe das "${C[@]}" --train-pairs 30 --dev-pairs 10 --eval-pairs 30 --layer 1 --rotation-steps 30 \
     "${HALF[@]}" --out "$OUT/das"
fi
