"""Validation of the trained-subspace probes (issue 24): ``das`` and ``mdas``.

On one model (a checkpoint and, unless ``--no-control``, its step0), over BLiMP (or the toy world), runs
``das`` and ``mdas`` in one pass and prints, per checkpoint:

- the chosen layer and the dev layer curve (trained vs random recovery per layer);
- the mean DAS diagonal (own cause: fraction of the margin recovered on held-out pairs) beside the random
  subspace pool, the mean-difference direction (rank 1, the activations probe's d̂_a) and the full patch,
  with a 95% bootstrap interval over tasks; how many tasks beat every random subspace (rank p ≤ 0.05) and
  how many recover more with DAS than with the mean difference;
- the DAS space against the groups (within − between, Mantel ρ with a one-sided permutation p) and its
  Spearman ρ (off-diagonal) with the activations space at the same layer;
- MDAS per group: cause and isolate beside per-task DAS's and the random pool's;
- seconds per task (training over all swept layers; scoring of a row).

Example (the figures in ``benchmarks/README.md``, section "DAS", were produced with it)::

    python benchmarks/bench_das.py --suite blimp --tasks 12 --train-pairs 50 --dev-pairs 20 --eval-pairs 30 --threads 1
    taskspace pretrain --corpus toy --size tiny --out /tmp/toy-tiny --seed 0 --threads 1      # 1,200 steps
    python benchmarks/bench_das.py --suite toy --model /tmp/toy-tiny --revision step1200 --tasks 0 --threads 1

``--tasks 0`` takes every task of the suite; the control is the model's ``step0``.

Timings are wall seconds in one process; the machine may be shared (the load average is printed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_causal import BLIMP, GUTENBERG, block, fmt, offdiag, pick_tasks, spearman  # noqa: E402


def interval(x, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean over tasks with a 95% bootstrap interval over tasks."""
    x = np.asarray([v for v in x if np.isfinite(v)], float)
    if not len(x):
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    reps = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    return float(x.mean()), float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))


def ci(t) -> str:
    return f"{fmt(t[0])} [{fmt(t[1])}, {fmt(t[2])}]"


def one_checkpoint(args, revision: str, tasks) -> None:
    import taskspace
    from taskspace.probes import probe
    from taskspace.probes.settings import ProbeSettings

    if args.suite == "toy":
        lm, suite = taskspace.load_model(args.model, revision=revision), taskspace.load_suite("toy")
    else:
        lm, suite = (taskspace.load_model(args.model or str(GUTENBERG), revision=revision),
                     taskspace.load_suite(str(BLIMP)))
    settings = ProbeSettings(tasks=tasks, train_pairs=args.train_pairs, dev_pairs=args.dev_pairs,
                             eval_pairs=args.eval_pairs, bootstrap=200, seed=args.seed)
    t0 = time.perf_counter()
    res = probe(lm, suite, ("das", "mdas"), settings, progress=False, rank=args.rank,
                rotation_steps=args.steps, layer=args.layer)
    wall = time.perf_counter() - t0
    act = probe(lm, suite, "activations", settings, progress=False)
    tab = res.tables["stats/das_tasks.csv"][0]
    ok = tab[tab["status"] == "ok"]
    layer = int(res.extra["layer"])
    print(f"\n== {lm.name} @ {revision}: {len(ok)}/{len(tab)} tasks aligned enough; layer {layer}; "
          f"{wall:.0f} s for das+mdas (load {os.getloadavg()[0]:.1f})")
    print(res.tables["stats/das_layers.csv"][0].to_string(index=False))
    for col in ("cause", "random", "mean_difference", "full_patch", "iia", "mean_difference_iia"):
        print(f"  {col:20s} {ci(interval(ok[col]))}")
    print(f"  tasks with random_p <= 0.05: {int((ok['random_p'] <= 0.05).sum())}/{len(ok)};  "
          f"DAS > mean difference: {int((ok['cause'] > ok['mean_difference']).sum())}/{len(ok)};  "
          f"DAS − mean difference {ci(interval(ok['cause'] - ok['mean_difference']))}")
    das = res.spaces["das"]
    b = block(das.matrix, das.groups)
    actl = act.spaces.get(f"activations_by_layer/layer{layer}", act.spaces["activations"])
    print(f"  das space: within − between {fmt(b['gap'])}, Mantel ρ {fmt(b['rho'])} (p {fmt(b['p'])}); "
          f"ρ with activations (layer {layer}) {fmt(spearman(offdiag(das.matrix), offdiag(actl.matrix)))}")
    groups = res.tables["stats/mdas_groups.csv"][0]
    print(groups[["group", "n_tasks", "cause", "isolate", "das_cause", "das_isolate", "random_cause",
                  "random_isolate", "train_seconds"]].to_string(index=False))
    print("  MDAS, mean over groups: " + ", ".join(f"{c} {fmt(groups[c].mean())}" for c in (
        "cause", "isolate", "das_cause", "das_isolate", "random_cause", "random_isolate")) +
        f"; MDAS cause > DAS cause in {int((groups['cause'] > groups['das_cause']).sum())}/{len(groups)} groups, "
        f"isolate > DAS isolate in {int((groups['isolate'] > groups['das_isolate']).sum())}/{len(groups)}")
    print(f"  eval margin change m(source) − m(base), mean over tasks: {fmt(ok['eval_margin_change'].mean())} nats "
          f"(median |·| {fmt(ok['eval_margin_change'].abs().median())}): the recoveries are fractions of it")
    print(f"  seconds per task: training {fmt(ok['train_seconds'].mean(), 1)} (all layers swept), "
          f"row scoring {fmt(ok['row_seconds'].mean(), 2)}")
    print(ok[["task", "aligned_train", "aligned_eval", "eval_margin_change", "cause", "random", "random_p",
              "mean_difference", "full_patch", "train_steps"]].to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("blimp", "toy"), default="blimp")
    ap.add_argument("--model", default=None)
    ap.add_argument("--revision", default="step2577")
    ap.add_argument("--no-control", action="store_true")
    ap.add_argument("--tasks", type=int, default=12, help="tasks, two per group round-robin (0: all)")
    ap.add_argument("--train-pairs", type=int, default=50)
    ap.add_argument("--dev-pairs", type=int, default=20)
    ap.add_argument("--eval-pairs", type=int, default=30)
    ap.add_argument("--rank", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    import taskspace

    torch.set_num_threads(args.threads)
    suite = taskspace.load_suite("toy" if args.suite == "toy" else str(BLIMP))
    tasks = pick_tasks(suite, args.tasks)
    print(f"tasks ({len(tasks)}): {', '.join(tasks)}")
    for rev in [args.revision] + ([] if args.no_control else ["step0"]):
        one_checkpoint(args, rev, tasks)


if __name__ == "__main__":
    main()
