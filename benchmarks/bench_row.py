"""One steering / erasure row against one plain scoring (issue 25's target: a row no slower than a plain
scoring): the eval pairs of BLiMP paradigms scored by the default scorer, then with a direction added at
one layer (the steering probe's hook, :func:`taskspace.probes.causal.intervene`) and projected out (the
erasure probe's), by the same scorer, and steering as rows were scored before they shared prefixes;
repeated and interleaved, medians printed with their ratio to the plain scoring.

    python benchmarks/bench_row.py                      # 67 paradigms × 20 eval pairs, layer 2, 1 thread
    python benchmarks/bench_row.py --pairs 100 --reps 5

Needs gutenberg-gpt2-5m and BLiMP in ../shared (or $TASKSPACE_SHARED). Wall seconds in one process; the
load average is printed (a shared machine slows every column alike only if the load is steady).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="eval pairs per paradigm (default 20)")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch

    from taskspace.models import load_model
    from taskspace.probes.causal import intervene, prefix_skip
    from taskspace.scoring import Scorer
    from taskspace.suites import load_suite

    torch.set_num_threads(args.threads)
    lm = load_model(str(SHARED / "models" / "gutenberg-gpt2-5m"), "step2577")
    suite = load_suite(str(SHARED / "data" / "blimp"))
    pairs = [p for ps in suite.by_task().values() for p in ps[: args.pairs]]
    scorer = Scorer(lm.model, lm.tokenizer)
    _ = scorer.shares_prefix                      # checked before any hook is in place, as the probes do
    whole = Scorer(lm.model, lm.tokenizer, share_prefix=False)    # how rows were scored before f3c5d08
    skip = prefix_skip(lm.tokenizer, "bos")
    v = np.random.default_rng(0).standard_normal(lm.model.config.hidden_size)
    u = v / np.linalg.norm(v)
    scorer.score_pairs(pairs[:100])               # warm-up

    def plain():
        return scorer.score_pairs(pairs)

    def steered():
        with intervene(lm.model, args.layer, add=0.5 * u, skip=skip):
            return scorer.score_pairs(pairs)

    def erased():
        with intervene(lm.model, args.layer, erase=u, skip=skip):
            return scorer.score_pairs(pairs)

    def steered_whole():
        with intervene(lm.model, args.layer, add=0.5 * u, skip=skip):
            return whole.score_pairs(pairs)

    cases = {"plain scoring": plain, "steering row": steered, "erasure row": erased,
             "steering row, no prefix sharing (before)": steered_whole}
    times: dict[str, list[float]] = {k: [] for k in cases}
    last: dict[str, object] = {}
    for rep in range(args.reps):
        for name in (list(cases) if rep % 2 == 0 else list(cases)[::-1]):
            t0 = time.perf_counter()
            last[name] = cases[name]()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain scoring"])
    print(f"{len(pairs)} pairs ({args.pairs} per paradigm), layer {args.layer}, {args.threads} thread(s), "
          f"prefix sharing {scorer.shares_prefix}, load {os.getloadavg()[0]:.1f}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:42s} {med:6.2f} s (median of {len(ts)})  {med / base:5.2f}× plain")
    a, b = last["steering row"], last["steering row, no prefix sharing (before)"]
    moved = max(float(np.abs(a[c].to_numpy() - b[c].to_numpy()).max()) for c in ("logp_good", "logp_bad", "margin"))
    print(f"  steering with and without prefix sharing: max |Δ| of a log-probability or margin {moved:.2e}")


if __name__ == "__main__":
    main()
