"""How much of a task space is signal, on a real model (issue 18): gutenberg-gpt2-5m at step0, step1000 and
step2577 over all 67 BLiMP paradigms, with the gradient probe (and overlap, same pass) and the activation
probe and the latent probe run twice: once on every task's pairs (train_pairs 100) and once on two disjoint halves of them
(``ProbeSettings(halves=True)``: 2 × 50 train pairs), in one pass each.

Printed per probe and checkpoint: split-half reliability (Spearman–Brown), the noise ceiling of a theory
comparison, ρ with theory as a fraction of it, the self-similarity distribution, the flagged tasks and
whether they are the ones the model performs at chance (``taskspace.score`` on the task's train pairs, the
pairs the probes read: Wilson 95% interval of the accuracy holding 0.5), and the time of the halves pass
beside the plain one.

    nice python benchmarks/bench_reliability.py                      # the three checkpoints
    nice python benchmarks/bench_reliability.py --revisions step2577 --json out.json

Reference (an independent implementation): step2577, 2 × 50 train pairs, gradient
self-similarity mean 0.66, min −0.03, lowest for tasks at chance.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))


def at_chance(scores) -> dict[str, bool]:
    """Task → the Wilson 95% interval of its accuracy holds 0.5."""
    t = scores.tasks
    return {str(r.task): bool(r.accuracy_ci_low <= 0.5 <= r.accuracy_ci_high) for r in t.itertuples()}


def summarize(name: str, rev: str, rel: dict, chance: dict[str, bool], acc: dict[str, float], t_plain: float,
              t_halves: float) -> dict:
    rows = rel["tasks"]
    selfs = np.array([r["self_similarity"] for r in rows])
    accs = np.array([acc[r["task"]] for r in rows])
    flagged = rel["flagged"]
    chance_tasks = sorted(t for t, c in chance.items() if c)
    lowest = [r["task"] for r in sorted(rows, key=lambda r: r["self_similarity"])[:5]]
    ok = np.isfinite(selfs)
    rho_acc = float(spearmanr(selfs[ok], accs[ok])[0]) if ok.sum() > 2 else float("nan")
    # below chance is a signal too (the model prefers the bad sentence consistently): distance from 0.5
    rho_dist = float(spearmanr(selfs[ok], np.abs(accs[ok] - 0.5))[0]) if ok.sum() > 2 else float("nan")
    ss = rel["self_similarity"]
    return {"space": name, "revision": rev, "n_tasks": rel["n_tasks"], "split_half": rel["split_half"],
            "split_half_ci": rel.get("split_half_ci"), "reliability": rel["reliability"],
            "ceiling_lower": rel["noise_ceiling"]["lower"], "ceiling_upper": rel["noise_ceiling"]["upper"],
            "rho_h_halves": rel["theory"]["rho"], "frac_upper": rel["theory"]["fraction_of_upper"],
            "frac_lower": rel["theory"]["fraction_of_lower"], "rho_h_full": rel["full"]["rho"],
            "ceiling_full": rel["full"]["ceiling"], "frac_full": rel["full"]["fraction"],
            "self": ss, "between_mean": rel["between"]["mean"], "flagged": flagged,
            "flagged_at_chance": sorted(set(flagged) & set(chance_tasks)), "at_chance": chance_tasks,
            "lowest_self": lowest, "lowest_self_accuracy": [round(acc[t], 3) for t in lowest],
            "spearman_self_vs_accuracy": rho_acc, "spearman_self_vs_distance_from_chance": rho_dist,
            "t_plain_s": t_plain, "t_halves_s": t_halves,
            "tasks": [{**r, "accuracy": acc[r["task"]], "at_chance": chance[r["task"]]} for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED / "models" / "gutenberg-gpt2-5m"))
    ap.add_argument("--suite", default=str(SHARED / "data" / "blimp"))
    ap.add_argument("--revisions", nargs="+", default=["step0", "step1000", "step2577"])
    ap.add_argument("--train-pairs", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--first", type=int, default=None, help="only the first N tasks (a smoke test)")
    ap.add_argument("--save", type=Path, default=None,
                    help="write the spaces: SAVE/<revision>/spaces/ and spaces/halves/ (taskspace compare reads them)")
    args = ap.parse_args()

    import torch

    import taskspace
    from taskspace.analysis.reliability import reliability
    from taskspace.probes.settings import ProbeSettings
    from taskspace.suites import SplitSizes
    from taskspace.suites.splits import halve_suite

    os.environ.setdefault("TASKSPACE_NO_PROGRESS", "1")
    suite = taskspace.load_suite(args.suite)
    if args.first:
        suite = suite.select(suite.tasks[: args.first])
    plain = ProbeSettings(train_pairs=args.train_pairs)
    halves = ProbeSettings(train_pairs=args.train_pairs, halves=True)
    # probes that list their tasks from the suite get the suite of halves (same splits, suites/splits.py)
    halved = halve_suite(suite, SplitSizes(plain.train_pairs, plain.dev_pairs, plain.eval_pairs), plain.seed)
    print(f"# {Path(args.model).name} × {len(suite.tasks)} BLiMP tasks, train_pairs {args.train_pairs} (halves: "
          f"2 × {args.train_pairs // 2}); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for rev in args.revisions:
        lm = taskspace.load_model(args.model, rev)
        t0 = time.perf_counter()
        scores = taskspace.score(lm, plain.splits(suite)["train"])
        acc = {str(r.task): float(r.accuracy) for r in scores.tasks.itertuples()}
        chance = at_chance(scores)
        print(f"{rev}: scored the train pairs in {time.perf_counter() - t0:.0f} s; mean accuracy "
              f"{np.mean(list(acc.values())):.3f}, {sum(chance.values())} tasks at chance", flush=True)
        for kinds, main in ((("gradients", "overlap"), ("gradients", "overlap")), ("activations", ("activations",)),
                            ("latent", ("latent",))):
            t0 = time.perf_counter()
            full = taskspace.probe(lm, suite, kinds, plain, progress=False)
            t_plain = time.perf_counter() - t0
            t0 = time.perf_counter()
            src = halved if kinds in ("activations", "latent") else suite
            half = taskspace.probe(lm, src, kinds, halves, progress=False)
            t_halves = time.perf_counter() - t0
            mode = half.spaces[main[0]].provenance.get("gradient_mode", "")
            if args.save:
                for name in main:
                    full.spaces[name].save(args.save / rev / "spaces" / name)
                    half.spaces[name].save(args.save / rev / "spaces" / "halves" / name)
            for name in main:
                rel = reliability(half.spaces[name], full.spaces[name], resamples=args.bootstrap)
                s = summarize(name, rev, rel, chance, acc, t_plain, t_halves)
                s["gradient_mode"] = mode
                results.append(s)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()
                                  if k not in ("at_chance", "tasks")}), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    print("\n| probe | revision | split-half r [95% CI] | reliability (SB) | ceiling half lo–up | ρ(H) half ÷ up–lo "
          "| ρ(H, full) | ceiling full | ÷ | self-sim mean / min / q10 / median | between | flagged (at chance) "
          "| ρ(self, acc) / ρ(self, |acc − ½|) | plain s | halves s |")
    print("|" + "---|" * 16)
    for s in results:
        ci = s["split_half_ci"] or [float("nan")] * 2
        ss = s["self"]
        print(f"| {s['space']} | {s['revision']} | {s['split_half']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | "
              f"{s['reliability']:.3f} | {s['ceiling_lower']:.2f}–{s['ceiling_upper']:.2f} | "
              f"{s['rho_h_halves']:+.3f} ÷ {s['frac_upper']:.2f}–{s['frac_lower']:.2f} | {s['rho_h_full']:+.3f} | "
              f"{s['ceiling_full']:.3f} | {s['frac_full']:.2f} | {ss['mean']:+.2f} / {ss['min']:+.2f} / "
              f"{ss['q10']:+.2f} / {ss['median']:+.2f} | {s['between_mean']:+.2f} | {len(s['flagged'])} "
              f"({len(s['flagged_at_chance'])} of {len(s['at_chance'])}) | {s['spearman_self_vs_accuracy']:+.2f} / "
              f"{s['spearman_self_vs_distance_from_chance']:+.2f} | "
              f"{s['t_plain_s']:.0f} | {s['t_halves_s']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
