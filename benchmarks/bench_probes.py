"""Benchmark of the probes (issue 4): wall time of gradients, overlap, transfer and baseline, split into
fine-tuning and evaluation; the masked FTGD step vs a plain fine-tuning step; peak RSS vs number of tasks.

The full 67 × 67 BLiMP transfer space takes long, so ``--finetune-tasks K`` fine-tunes only K tasks
(each still evaluated on ALL tasks' eval pairs, exactly as in the full run) and extrapolates to all
tasks: per-task cost × number of tasks + the one-off base-model scoring.

Examples (the figures in the README were produced with these)::

    python benchmarks/bench_probes.py probes --suite blimp --finetune-tasks 3 --threads 2
    python benchmarks/bench_probes.py probes --suite toy --threads 2
    python benchmarks/bench_probes.py step --threads 2
    python benchmarks/bench_probes.py probes --suite blimp --probes transfer --finetune-tasks 6 --workers 2
    python benchmarks/bench_probes.py memory --suite blimp --steps 3 --train-pairs 20 --eval-pairs 20

Results are printed and written as JSON under ``benchmarks/results/``. The machine may be shared: the
load average is recorded with each result; compare ratios measured in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
GUTENBERG = SHARED / "models" / "gutenberg-gpt2-5m"
BLIMP = SHARED / "data" / "blimp"
RESULTS = REPO / "benchmarks" / "results"


def _setup(threads: int) -> None:
    import torch

    os.environ.setdefault("TASKSPACE_NO_PROGRESS", "1")
    torch.set_num_threads(threads)


def _load(suite: str, model: str | None, revision: str | None):
    """(LoadedModel, Suite): BLiMP with gutenberg-gpt2-5m step2577, or the toy suite with a toy model."""
    from taskspace.models.loading import load_model
    from taskspace.suites import load_suite

    if suite == "blimp":
        return load_model(model or str(GUTENBERG), revision or "step2577"), load_suite(str(BLIMP))
    s = load_suite("toy")
    if model is None:
        # a toy model pretrained here, cached between benchmark runs
        from taskspace.models.pretrain import pretrain

        folder = RESULTS / "toy-model"
        pretrain("toy", "tiny", folder, progress=False)
        from taskspace.models.loading import list_revisions

        model, revision = str(folder), list_revisions(str(folder))[-1]
    return load_model(model, revision), s


def _meta(threads: int) -> dict:
    from taskspace.provenance import versions

    return {"threads": threads, "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
            "versions": versions()}


def bench_probes(args: argparse.Namespace) -> dict:
    """Gradients + overlap over all tasks (or --tasks N), transfer and baseline per task, extrapolated."""
    from taskspace.probes import run_gradient_probes
    from taskspace.probes.kinds.transfer import _run_task
    from taskspace.probes.settings import ProbeSettings
    from taskspace.scoring import Scorer

    lm, suite = _load(args.suite, args.model, args.revision)
    tasks = suite.tasks[: args.tasks] if args.tasks else suite.tasks
    settings = ProbeSettings(tasks=tuple(tasks), train_pairs=args.train_pairs, dev_pairs=args.dev_pairs,
                             eval_pairs=args.eval_pairs, steps=args.steps, bootstrap=args.bootstrap)
    out: dict = {"suite": args.suite, "model": lm.describe(), "n_tasks": len(tasks),
                 "settings": settings.to_dict(), **_meta(args.threads)}
    out["settings"]["tasks"] = f"{len(tasks)} tasks"

    if "gradients" in args.probes or "overlap" in args.probes:
        grad_tasks = tasks[: args.gradient_tasks] if args.gradient_tasks else tasks
        gs = ProbeSettings(tasks=tuple(grad_tasks), train_pairs=args.train_pairs)
        t = time.perf_counter()
        run_gradient_probes(lm, suite, gs, probes=("gradients", "overlap"), progress=False)
        total = time.perf_counter() - t
        per_task = total / len(grad_tasks)
        out["gradients_overlap"] = {"tasks_run": len(grad_tasks), "seconds": total,
                                    "seconds_per_task": per_task,
                                    "extrapolated_all_tasks_s": per_task * len(tasks)}
        print(f"gradients+overlap: {total:.1f} s for {len(grad_tasks)} tasks "
              f"({per_task:.2f} s/task → {per_task * len(tasks):.0f} s for {len(tasks)})")

    split = settings.splits(suite)
    train_by, dev_by, eval_pairs = split["train"].by_task(), split["dev"].by_task(), split["test"].pairs
    scorer = Scorer(lm.model, lm.tokenizer, reduction=settings.reduction, prefix=settings.prefix,
                    batch_tokens=settings.batch_tokens)
    t = time.perf_counter()
    base_df = scorer.score_pairs(eval_pairs)
    base_eval = time.perf_counter() - t
    from taskspace.probes.finetune.evaluation import lm_nll

    base_nll = lm_nll(base_df)
    groups = {a: suite.group_of(a) for a in tasks}
    out["base_eval_s"] = base_eval
    out["eval_pairs_total"] = len(eval_pairs)
    print(f"base model on {len(eval_pairs)} eval pairs of {len(tasks)} tasks: {base_eval:.1f} s")
    ft_tasks = tasks[:: max(1, len(tasks) // args.finetune_tasks)][: args.finetune_tasks]
    if args.workers > 1:
        for probe in [p for p in ("transfer", "baseline") if p in args.probes]:
            out[probe] = _bench_workers(args, probe, lm, settings, split, base_df, base_nll, groups, ft_tasks,
                                        base_eval, len(tasks))
        return out
    for probe in [p for p in ("transfer", "baseline") if p in args.probes]:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for a in ft_tasks:
                timings = {"gradients": 0.0, "finetune": 0.0, "eval": 0.0}
                t = time.perf_counter()
                rec = _run_task(a, probe=probe, loaded=lm, scorer=scorer, settings=settings,
                                train_pairs=train_by[a], dev_pairs=dev_by.get(a, []), eval_pairs=eval_pairs,
                                base_df=base_df, base_nll=base_nll, heldout=None, groups=groups,
                                out=Path(tmp), rows_dir=Path(tmp) / "rows", save_deltas=probe == "transfer",
                                timings=timings)
                wall = time.perf_counter() - t
                rows.append({"task": a, "status": rec["status"], "steps_run": rec["steps_run"],
                             "gradients_s": rec["gradient_seconds"], "finetune_s": rec["seconds"],
                             "eval_s": rec["eval_seconds"], "wall_s": wall,
                             "self_transfer": rec.get("self_transfer"), "lm_damage": rec.get("lm_damage")})
                print(f"  {probe} {a}: grad {rec['gradient_seconds']:.1f} s, fine-tune {rec['seconds']:.1f} s "
                      f"({rec['steps_run']} steps), eval {rec['eval_seconds']:.1f} s, wall {wall:.1f} s")
        mean = {k: statistics.mean(r[k] for r in rows) for k in ("gradients_s", "finetune_s", "eval_s", "wall_s")}
        est = base_eval + mean["wall_s"] * len(tasks)
        out[probe] = {"tasks_run": [r["task"] for r in rows], "per_task": rows, "mean_per_task": mean,
                      "extrapolated_all_tasks_s": est,
                      "extrapolated_finetune_s": (mean["gradients_s"] + mean["finetune_s"]) * len(tasks),
                      "extrapolated_eval_s": base_eval + mean["eval_s"] * len(tasks)}
        print(f"{probe}: per task {mean['wall_s']:.1f} s (fine-tuning {mean['gradients_s'] + mean['finetune_s']:.1f}"
              f" s incl. gradient/mask, evaluation {mean['eval_s']:.1f} s) → {len(tasks)}×{len(tasks)} space "
              f"≈ {est / 60:.1f} min")
    return out


def _bench_workers(args, probe, lm, settings, split, base_df, base_nll, groups, ft_tasks, base_eval,
                   n_tasks) -> dict:
    """K tasks through ``--workers`` spawned processes (as ``transfer_probe`` runs them); the wall time
    includes starting the workers, so the per-task figure is an upper bound for a long run."""
    import dataclasses

    from taskspace.probes.kinds.transfer import _in_workers, _Job, worker_threads

    with tempfile.TemporaryDirectory() as tmp:
        dev_by = split["dev"].by_task()
        job = _Job(probe=probe, settings=dataclasses.replace(settings, workers=args.workers),
                   train_by=split["train"].by_task(), dev_by={a: dev_by.get(a, []) for a in ft_tasks},
                   eval_pairs=split["test"].pairs, base_df=base_df, base_nll=base_nll, heldout=None,
                   groups=groups, out=Path(tmp), rows_dir=Path(tmp) / "rows", save_deltas=probe == "transfer")
        t = time.perf_counter()
        rows = [{"task": a, "status": rec["status"], "gradients_s": rec["gradient_seconds"],
                 "finetune_s": rec["seconds"], "eval_s": rec["eval_seconds"]}
                for a, rec, _ in _in_workers(lm, job, list(ft_tasks), args.workers)]
        wall = time.perf_counter() - t
    per_task = wall / len(ft_tasks)
    est = base_eval + per_task * n_tasks
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("gradients_s", "finetune_s", "eval_s")}
    print(f"{probe}: {len(ft_tasks)} tasks in {args.workers} workers × {worker_threads(args.workers)} thread(s): "
          f"{wall:.1f} s wall incl. start-up → {per_task:.1f} s/task; in a worker: fine-tuning "
          f"{mean['gradients_s'] + mean['finetune_s']:.1f} s incl. gradient/mask, evaluation {mean['eval_s']:.1f} s"
          f" → {n_tasks}×{n_tasks} space ≈ {est / 60:.1f} min")
    return {"tasks_run": list(ft_tasks), "workers": args.workers, "threads_per_worker": worker_threads(args.workers),
            "per_task": rows, "wall_s": wall, "mean_in_worker": mean, "extrapolated_all_tasks_s": est}


def bench_step(args: argparse.Namespace) -> dict:
    """Per-step wall time: FTGD's masked step (top-5% gradient mask) vs a plain fine-tuning step (all
    parameters, Adam in place) vs a naive masked step (full gradient × mask, Adam on everything), same
    model and batches, interleaved repetitions; medians."""
    from taskspace.probes.finetune.ftgd import _Dense, _finetune, _Sparse
    from taskspace.probes.gradient.differentials import task_gradients
    from taskspace.probes.gradient.masks import top_fraction_mask
    from taskspace.suites.schema import Suite

    lm, suite = _load(args.suite, args.model, args.revision)
    task = suite.tasks[0]
    pairs = suite.pairs_of(task)[: args.train_pairs]
    g = task_gradients(lm.model, lm.tokenizer, Suite(pairs), progress=False)
    mask = top_fraction_mask(g.get(task), 0.05)
    del g

    class _Naive(_Dense):
        """Full Adam over all parameters with the gradient multiplied by the mask (the obvious way)."""

        def after_backward(self) -> None:
            for n, p in self._named.items():
                if p.grad is not None:
                    p.grad.mul_(mask[n])

    kinds = {"masked (FTGD)": lambda: _Sparse(lm.model, mask), "plain (all parameters)": lambda: _Dense(lm.model),
             "naive masked (grad × mask, full Adam)": lambda: _Naive(lm.model)}
    per_step: dict[str, list[float]] = {k: [] for k in kinds}
    for rep in range(args.reps):
        for name, factory in kinds.items():
            res = _finetune(lm.model, lm.tokenizer, pairs, [], factory, objective="difference",
                            steps=args.steps, lr=1e-3, patience=5, eval_every=10, batch_pairs=16,
                            reduction="sum", prefix="bos", batch_tokens=4096, seed=rep, on_step=None)
            per_step[name].append(res.seconds / res.steps_run)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    plain = med["plain (all parameters)"]
    out = {"task": task, "batch_pairs": 16, "steps": args.steps, "reps": args.reps,
           "mask_entries": sum(int(m.sum()) for m in mask.values()),
           "median_step_s": med, "ratio_to_plain": {k: v / plain for k, v in med.items()},
           "all_step_s": per_step, "model": lm.describe(), **_meta(args.threads)}
    for k, v in med.items():
        print(f"{k:40s} {v * 1000:8.1f} ms/step   ×{v / plain:.3f} of plain")
    return out


def bench_memory(args: argparse.Namespace) -> dict:
    """Resident memory after each task of one transfer run over ``--tasks`` tasks (default: all), in a
    fresh process. Flat means: what a finished task allocated is released, so the peak does not grow
    with the number of tasks. Prints the peak after the first task, after a quarter of the tasks and
    at the end (assembling the spaces and the combined per-pair log included), and the slope of the
    resident memory over the tasks (least squares, MiB per task)."""
    code = f"""
import json, sys, tempfile, time
sys.path.insert(0, {str(REPO / 'benchmarks')!r})
import bench_probes as b
b._setup({args.threads})
from taskspace.probes.settings import ProbeSettings
from taskspace.probes.kinds.transfer import transfer_probe

def status():
    kv = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
    return int(kv['VmRSS'].split()[0]) / 1024, int(kv['VmHWM'].split()[0]) / 1024

def main():
    lm, suite = b._load({args.suite!r}, {args.model!r}, {args.revision!r})
    tasks = suite.tasks[:{args.tasks}] if {args.tasks} else suite.tasks
    s = ProbeSettings(tasks=tuple(tasks), train_pairs={args.train_pairs}, dev_pairs={args.dev_pairs},
                      eval_pairs={args.eval_pairs}, steps={args.steps}, bootstrap={args.bootstrap})
    rows = [dict(zip(('rss_mib', 'peak_mib'), status()), task=None)]
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        transfer_probe(lm, suite, s, d, progress=False,
                       on_task=lambda a, rec: rows.append(dict(zip(('rss_mib', 'peak_mib'), status()), task=a)))
        rows.append(dict(zip(('rss_mib', 'peak_mib'), status()), task='(assembled)'))
    print(json.dumps({{"rows": rows, "seconds": time.perf_counter() - t}}))

if __name__ == '__main__':
    main()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, TASKSPACE_NO_PROGRESS="1"))
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    rows = res["rows"]
    per_task = [r for r in rows[1:] if r["task"] != "(assembled)"]
    n = len(per_task)
    xs = list(range(1, n + 1))
    slope = statistics.linear_regression(xs, [r["rss_mib"] for r in per_task]).slope if n > 1 else 0.0
    q = per_task[max(0, n // 4 - 1)]
    out = {"tasks": n, "after_load_mib": rows[0]["rss_mib"], "peak_after_first_task_mib": per_task[0]["peak_mib"],
           "peak_after_quarter_mib": q["peak_mib"], "peak_at_end_mib": rows[-1]["peak_mib"],
           "rss_slope_mib_per_task": slope, "seconds": res["seconds"], "trace": rows,
           "suite": args.suite, "steps": args.steps, **_meta(args.threads)}
    print(f"{n} tasks: after loading {out['after_load_mib']:.0f} MiB; peak after task 1 {out['peak_after_first_task_mib']:.0f}"
          f" MiB, after task {n // 4 or 1} {out['peak_after_quarter_mib']:.0f} MiB, at the end {out['peak_at_end_mib']:.0f}"
          f" MiB; resident memory slope {slope:+.2f} MiB/task ({res['seconds']:.0f} s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["probes", "step", "memory"])
    ap.add_argument("--suite", default="blimp", choices=["blimp", "toy"])
    ap.add_argument("--model", default=None, help="model folder (default: gutenberg-gpt2-5m for blimp, "
                                                  "a toy model pretrained here for toy)")
    ap.add_argument("--revision", default=None)
    ap.add_argument("--probes", default="gradients,overlap,transfer,baseline")
    ap.add_argument("--tasks", type=int, default=0, help="use only the first N tasks of the suite (0: all)")
    ap.add_argument("--gradient-tasks", type=int, default=0,
                    help="compute gradient differentials for only N tasks and extrapolate (0: all)")
    ap.add_argument("--finetune-tasks", type=int, default=3, help="fine-tune K tasks (spread over the suite) "
                                                                  "and extrapolate")
    ap.add_argument("--workers", type=int, default=1, help="probes: fine-tune in this many processes "
                                                           "(--threads shared out among them)")
    ap.add_argument("--train-pairs", type=int, default=100)
    ap.add_argument("--dev-pairs", type=int, default=50)
    ap.add_argument("--eval-pairs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3, help="step: interleaved repetitions")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.probes = [p.strip() for p in args.probes.split(",")]
    _setup(args.threads)
    fn = {"probes": bench_probes, "step": bench_step, "memory": bench_memory}[args.what]
    res = fn(args)
    res["command"] = " ".join(["python", "benchmarks/bench_probes.py", *sys.argv[1:]])
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"probes_{args.what}_{args.suite}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
