"""Validation of the issue-10 probes (transfer-estimate, lookahead, ablation, activations, latent) and the
lr × objective trade-off of FTGD, on gutenberg-gpt2-5m (8 BLiMP paradigms by default, ``--tasks all``
for all 67) and on a toy model. Every figure is per checkpoint, never pooled across models.

Subcommands (each prints one table; heavy work is cached under ``--cache``, never in the repository)::

    python benchmarks/bench_estimates.py --cache /tmp/val-bench estimates
    python benchmarks/bench_estimates.py --cache /tmp/val67 --tasks all --eval-pairs 100 --threads 2 --workers 2 \
        estimates --toy-model /tmp/val-bench/toy-tiny
    python benchmarks/bench_estimates.py --cache /tmp/val-bench tradeoff [--rows a,b,c,d]
    python benchmarks/bench_estimates.py --cache /tmp/val-bench combined --lr 1e-4 --objective logistic
    python benchmarks/bench_estimates.py --cache /tmp/val-bench ablation --toy-model /tmp/val-bench/toy-tiny
    python benchmarks/bench_estimates.py --cache /tmp/val-bench probes --toy-model /tmp/val-bench/toy-tiny

Global options (``--revision``, ``--tasks``, pair counts) go before the subcommand; write
``--revision=step1000`` (the option takes several values). A rerun with the same cache re-reads the spaces and the recorded timings (nothing is recomputed).
Timings are wall seconds in one process; the machine may be shared: the load average is recorded with
each timing (``timings.json``) and printed under each table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
GUTENBERG = SHARED / "models" / "gutenberg-gpt2-5m"
BLIMP = SHARED / "data" / "blimp"

#: 16 BLiMP paradigms, two from each of 8 groups (1,000 pairs each)
TASKS16 = (
    "anaphor_gender_agreement", "anaphor_number_agreement",                      # anaphor_agreement
    "determiner_noun_agreement_1", "determiner_noun_agreement_2",                # determiner_noun_agreement
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2",  # subject_verb
    "irregular_past_participle_adjectives", "irregular_past_participle_verbs",   # irregular_forms
    "ellipsis_n_bar_1", "ellipsis_n_bar_2",                                      # ellipsis
    "animate_subject_passive", "animate_subject_trans",                          # s-selection
    "existential_there_quantifiers_1", "existential_there_quantifiers_2",        # quantifiers
    "principle_A_domain_1", "principle_A_domain_2",                              # binding
)
#: the default subset actually measured (a loaded 2-core machine made 16 too slow): 4 groups × 2, the
#: paradigms of the issue's first check (anaphor, determiner-noun, regular subject-verb, irregular forms)
TASKS8 = TASKS16[:8]
#: the trade-off's source rows (2 groups × 2)
ROWS = TASKS16[:4]
#: toy tasks for the ablation: two per group where the group has two or more
TOY_ABLATION = ("anaphor_gender_agreement", "anaphor_number_agreement", "sva_simple", "sva_auxiliary",
                "dna_demonstrative_swap", "dna_noun_swap", "irregular_past_in_simple_past",
                "irregular_participle_after_have", "npi_ever_licensed_by_not", "npi_any_licensed_by_no",
                "wh_vs_that_no_gap", "wh_vs_that_with_gap")


# ---------------------------------------------------------------- helpers
def _setup(threads: int) -> None:
    import torch

    os.environ.setdefault("TASKSPACE_NO_PROGRESS", "1")
    torch.set_num_threads(threads)


def _load():
    return os.getloadavg()[0]


def _blimp(revision: str):
    import taskspace

    return (taskspace.load_model(str(GUTENBERG), revision=revision),
            taskspace.load_suite(str(BLIMP)))


def _toy(model: str, revision: str | None):
    import taskspace
    from taskspace.models.loading import list_revisions

    revs = list_revisions(model)
    rev = revision or revs[-1]
    return taskspace.load_model(model, revision=rev), taskspace.load_suite("toy"), rev


def _toy_pairs(args) -> dict:
    tr, dv, ev = (int(v) for v in args.toy_pairs.split(","))
    return {"train_pairs": tr, "dev_pairs": dv, "eval_pairs": ev}


def _tasks_arg(value: str) -> tuple:
    if value == "all":
        import taskspace

        return tuple(taskspace.load_suite(str(BLIMP)).tasks)
    return tuple(value.split(","))


def _settings(args, **kw):
    from taskspace.probes.settings import ProbeSettings

    base = dict(tasks=tuple(args.tasks), train_pairs=args.train_pairs, dev_pairs=args.dev_pairs,
                eval_pairs=args.eval_pairs, bootstrap=args.bootstrap, steps=args.steps,
                workers=args.workers)
    base.update(kw)
    return ProbeSettings(**base)


def _timed(cache: Path, name: str, fn, saved: Path | None = None):
    """Run ``fn()`` (a probe call returning a ProbeResult) once, save its spaces under ``saved`` (default:
    ``cache/<name>``) and keep its wall seconds and the 1-min load average in ``cache/timings.json``.
    A rerun re-reads the saved spaces and records instead of computing again."""
    from taskspace.probes.result import ProbeResult
    from taskspace.spaces import TaskSpace

    saved = saved or cache / name
    path = cache / "timings.json"
    rec = json.loads(path.read_text()) if path.exists() else {}
    if name in rec and (cache / f".done-{name}").exists():
        spaces = {str(p.relative_to(saved / "spaces").with_suffix("")): TaskSpace.load(p)
                  for p in (saved / "spaces").rglob("*.csv")}
        records = {str(p.relative_to(saved)): json.loads(p.read_text())
                   for p in (saved / "stats").glob("*_info.json")}
        return ProbeResult((name,), spaces=spaces, records=records), rec[name], True
    l0 = _load()
    t = time.perf_counter()
    res = fn()
    sec = time.perf_counter() - t
    res.save(saved)
    rec = json.loads(path.read_text()) if path.exists() else {}
    rec[name] = {"seconds": sec, "load_before": l0, "load_after": _load(),
                 "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1))
    (cache / f".done-{name}").write_text("")
    return res, rec[name], False


def offdiag(n: int) -> np.ndarray:
    return ~np.eye(n, dtype=bool)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def block_stats(M: np.ndarray, tasks, groups, rows, permutations: int = 999, seed: int = 0) -> dict:
    """Within/between means, Spearman with H and a Mantel-style p (task labels permuted) over the
    off-diagonal cells of the ``rows`` × all-tasks block of M."""
    idx = [list(tasks).index(r) for r in rows]
    g = np.asarray(groups)
    cells = [(i, j) for i in idx for j in range(len(tasks)) if i != j and np.isfinite(M[i, j])]
    v = np.array([M[i, j] for i, j in cells])

    def h(gg):
        return np.array([float(gg[i] == gg[j]) for i, j in cells])

    H = h(g)
    within, between = v[H == 1].mean(), v[H == 0].mean()
    rho = spearman(v, H)
    rng = np.random.default_rng(seed)
    ge = sum(spearman(v, h(g[rng.permutation(len(g))])) >= rho for _ in range(permutations))
    return {"within": within, "between": between, "gap": within - between, "rho": rho,
            "p": (ge + 1) / (permutations + 1)}


def _fmt(x, nd=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(x)
    return f"{x:.{nd}g}" if abs(x) >= 1000 or abs(x) < 1e-3 and x != 0 else f"{x:.{nd}f}"


def _table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |")


def _transfer_block(out: Path, tasks, rows):
    """T and T̃ (rows × all tasks; other rows NaN) from a transfer run's per-row logs, and the LM damage."""
    import pandas as pd

    from taskspace.probes.finetune.evaluation import transfer_matrices
    from taskspace.probes.output import task_filename

    base = pd.read_parquet(out / "scores" / "base.parquet")
    logs = {a: pd.read_parquet(out / "scores" / "transfer" / f"{task_filename(a)}.parquet") for a in rows}
    est = transfer_matrices(base, logs, list(tasks), bootstrap=0)
    dmg = {a: json.loads((out / "ftgd" / f"{task_filename(a)}.json").read_text()).get("lm_damage") for a in rows}
    return est[""].value, est["_normalized"].value, dmg


# ---------------------------------------------------------------- 1. estimates
def estimates(args) -> None:
    import taskspace
    from taskspace.probes.settings import ProbeSettings

    header = ["checkpoint", "probe", "ρ off-diag (raw)", "ρ off-diag (row-normalised)",
              "sign agreement |T|>0.5", "cells |T|>0.5", "sign agreement |T|>2", "cells |T|>2",
              "diag T/T̂ median [min, max]", "within − between (normalised)", "Mantel ρ (p)", "time (s)",
              "time / transfer", "standalone / transfer", "load"]
    table = []
    runs = [(rev, *_blimp(rev), _settings(args), Path(args.cache) / "estimates" / rev) for rev in args.revision]
    if args.toy_model:
        tlm, tsuite, trev = _toy(args.toy_model, None)
        runs.append((f"toy {Path(args.toy_model).name} {trev}", tlm, tsuite,
                     _settings(args, tasks=tuple(tsuite.tasks), **_toy_pairs(args)),
                     Path(args.cache) / "estimates" / f"toy-{Path(args.toy_model).name}-{trev}"))
    for rev, lm, suite, s, cache in runs:
        tr, t_tr, _ = _timed(cache, "transfer", lambda: taskspace.probe(lm, suite, "transfer", s, out=cache,
                                                                          progress=False), cache)
        te, t_te, _ = _timed(cache, "transfer-estimate",
                             lambda: taskspace.probe(lm, suite, "transfer-estimate", s, out=cache, progress=False),
                             cache / "te")
        la, t_la, _ = _timed(cache, "lookahead",
                             lambda: taskspace.probe(lm, suite, "lookahead", s, progress=False))
        T, Tn = tr.spaces["transfer"].matrix, tr.spaces["transfer_normalized"].matrix
        off = offdiag(len(T))
        big = off & (np.abs(T) > 2)
        mid = off & (np.abs(T) > 0.5)
        tasks_ = tr.spaces["transfer"].tasks
        groups_ = [suite.group_of(t) for t in tasks_]

        def groups_of(M):
            b = block_stats(M, tasks_, groups_, tasks_, permutations=199)
            return b["gap"], f"{b['rho']:.3f} ({b['p']:.3f})"

        def agree(raw, cells):
            return float(np.mean(np.sign(raw[cells]) == np.sign(T[cells]))) if cells.any() else float("nan")

        # the estimate without a transfer run: masks + FTGD (as the transfer run spent them) + its own pass
        recs = [json.loads(p.read_text()) for p in (cache / "ftgd").glob("*.json")]
        ft = sum(r.get("gradient_seconds", 0) + r.get("seconds", 0) for r in recs)
        ev = sum(r.get("eval_seconds", 0) for r in recs)
        # with worker processes these are summed over the workers: scale them to the run's wall time
        scale = min(1.0, t_tr["seconds"] / (ft + ev)) if ft + ev > 0 else 1.0
        ft, ev = ft * scale, ev * scale
        print(f"# {rev}: transfer {t_tr['seconds']:.0f} s = masks+FTGD {ft:.0f} s + evaluation {ev:.0f} s + "
              f"load/base scoring/assembly {t_tr['seconds'] - ft - ev:.0f} s")
        table.append([rev, "transfer (measured)", 1.0, 1.0, 1.0, int(mid.sum()), 1.0, int(big.sum()), "1",
                      *groups_of(Tn), t_tr["seconds"], 1.0, 1.0, f"{t_tr['load_before']:.1f}"])
        for name, raw, norm, t in (("transfer-estimate", te.spaces["transfer_estimate"].matrix,
                                    te.spaces["transfer_estimate_normalized"].matrix, t_te),
                                   ("lookahead", la.spaces["lookahead_raw"].matrix, la.spaces["lookahead"].matrix,
                                    t_la)):
            if name == "transfer-estimate":
                r = np.diag(T) / np.diag(raw)
                diag = f"{np.nanmedian(r):.2f} [{np.nanmin(r):.2f}, {np.nanmax(r):.2f}]"
            else:
                diag = "n/a (no step size)"
            alone = t["seconds"] + (ft if name == "transfer-estimate" else 0.0)
            table.append([rev, name, spearman(T[off], raw[off]), spearman(Tn[off], norm[off]), agree(raw, mid),
                          int(mid.sum()), agree(raw, big), int(big.sum()), diag, *groups_of(norm), t["seconds"],
                          t["seconds"] / t_tr["seconds"],
                          alone / t_tr["seconds"], f"{t['load_before']:.1f}"])
        dmg = tr.records.get("stats/transfer_info.json", {}).get("lm_damage_mean")
        print(f"# {rev}: mean self-transfer {np.nanmean(np.diag(T)):.1f} nats, mean LM damage "
              f"{_fmt(dmg)} nats/token")
    print(f"## estimates — gutenberg-gpt2-5m, {len(args.tasks)} BLiMP paradigms, {args.train_pairs}/"
          f"{args.dev_pairs}/{args.eval_pairs} pairs (toy: {args.toy_pairs}, all toy tasks), default settings "
          f"(objective {ProbeSettings().objective}, lr {ProbeSettings().lr:g}, {args.steps} steps)")
    _table(header, table)


# ---------------------------------------------------------------- 2. tradeoff
def tradeoff(args) -> None:
    import taskspace

    header = ["checkpoint", "lr", "objective", "mean self-transfer T[a,a] (nats)", "mean LM damage (nats/tok)",
              "max LM damage", "T̃ within", "T̃ between", "within − between", "Mantel ρ", "p",
              "|T̃| within − between", "ρ estimate vs measured (raw, off-diag)", "ρ (row-normalised)",
              "ρ estimate vs measured default (lr 1e-3 difference)", "ρ lookahead vs measured", "load"]
    table = []
    rows = [r for r in args.rows if r in args.tasks]
    for rev in args.revision:
        lm, suite = _blimp(rev)
        for obj in args.objectives:
            for lr in args.lrs:
                s = _settings(args, lr=lr, objective=obj)
                tag = str(len(rows)) if tuple(rows) == ROWS else "-".join(r[:12] for r in rows)
                cache = Path(args.cache) / "tradeoff" / rev / f"lr{lr:g}_{obj}"
                default = Path(args.cache) / "estimates" / rev
                if lr == 1e-3 and obj == "difference" and (default / ".done-transfer-estimate").exists():
                    cache = default               # the estimates run has these rows already
                _, t1, _ = _timed(cache, f"transfer-rows-{tag}",
                                  lambda: taskspace.probe(lm, suite, "transfer", s, out=cache, rows=rows,
                                                          progress=False), cache)
                te, _, _ = _timed(cache, f"transfer-estimate-rows-{tag}",
                                  lambda: _rows_probe(lm, suite, "transfer-estimate", s, rows, out=cache),
                                  cache / f"te-rows-{tag}" if tag != "4" else cache / "te-rows")
                T, Tn, dmg = _transfer_block(cache, args.tasks, rows)
                tasks = list(args.tasks)
                groups = [suite.group_of(t) for t in tasks]
                idx = [tasks.index(r) for r in rows]
                st = block_stats(Tn, tasks, groups, rows)
                sa = block_stats(np.abs(Tn), tasks, groups, rows, permutations=0)
                E, En = te.spaces["transfer_estimate"].matrix, te.spaces["transfer_estimate_normalized"].matrix
                cells = np.zeros_like(T, dtype=bool)
                cells[idx, :] = True
                cells &= offdiag(len(T))
                d = [v for v in dmg.values() if v is not None]
                # the estimate of this configuration against the default configuration's measured space,
                # and the (configuration-free) lookahead against this configuration's measured space
                dflt = Path(args.cache) / "estimates" / rev / "spaces" / "transfer.csv"
                la = Path(args.cache) / "estimates" / rev / "lookahead" / "spaces" / "lookahead_raw.csv"
                from taskspace.spaces import TaskSpace

                rho_d = (spearman(TaskSpace.load(dflt).select(tasks).matrix[cells], E[cells])
                         if dflt.exists() else float("nan"))
                rho_l = (spearman(T[cells], TaskSpace.load(la).select(tasks).matrix[cells])
                         if la.exists() else float("nan"))
                table.append([rev, f"{lr:g}", obj, float(np.mean(np.diag(T)[idx])), float(np.mean(d)),
                              float(np.max(d)), st["within"], st["between"], st["gap"], st["rho"], st["p"], sa["gap"],
                              spearman(T[cells], E[cells]), spearman(Tn[cells], En[cells]), rho_d, rho_l,
                              f"{t1['load_before']:.1f}"])
                print(f"# done {rev} lr {lr:g} {obj}: {t1['seconds']:.0f} s", flush=True)
    print(f"## tradeoff — gutenberg-gpt2-5m, rows {', '.join(rows)} × {len(args.tasks)} columns, "
          f"{args.train_pairs}/{args.dev_pairs}/{args.eval_pairs} pairs, 50 steps, top-5% masks")
    _table(header, table)


def combined(args) -> None:
    """The estimate and lookahead against the measured space of one trade-off configuration over all
    rows it has (``tradeoff`` run once per row set): no new computation."""
    import glob

    from taskspace.spaces import TaskSpace

    tasks = list(args.tasks)
    header = ["checkpoint", "lr", "objective", "rows", "probe", "ρ off-diag (raw)", "sign agreement |T|>0.5",
              "cells", "sign agreement |T|>2", "cells", "diag T/T̂ median [min, max]"]
    table = []
    for rev in args.revision:
        c = Path(args.cache) / "tradeoff" / rev / f"lr{args.lr:g}_{args.objective}"
        if args.lr == 1e-3 and args.objective == "difference":
            c = Path(args.cache) / "estimates" / rev
        have = [t for t in tasks if (c / "scores" / "transfer").glob("*") and any(
            Path(f).stem == t for f in glob.glob(str(c / "scores" / "transfer" / "*.parquet")))]
        T, _, _ = _transfer_block(c, tasks, have)
        E = np.full_like(T, np.nan)
        for f in glob.glob(str(c / "te*" / "spaces" / "transfer_estimate.csv")):
            m = TaskSpace.load(f).select(tasks).matrix
            ok = np.isfinite(m).all(1)
            E[ok] = m[ok]
        la = TaskSpace.load(Path(args.cache) / "estimates" / rev / "lookahead" / "spaces" / "lookahead_raw.csv")
        L = la.select(tasks).matrix
        off = offdiag(len(tasks)) & np.isfinite(T) & np.isfinite(E)
        for name, M in (("transfer-estimate", E), ("lookahead", L)):
            row = [rev, f"{args.lr:g}", args.objective, str(len(have)), name, spearman(T[off], M[off])]
            for thr in (0.5, 2):
                big = off & (np.abs(T) > thr)
                row += [float(np.mean(np.sign(M[big]) == np.sign(T[big]))) if big.any() else float("nan"),
                        int(big.sum())]
            r = np.diag(T) / np.diag(E)
            row.append(f"{np.nanmedian(r):.2f} [{np.nanmin(r):.2f}, {np.nanmax(r):.2f}]"
                       if name == "transfer-estimate" else "n/a")
            table.append(row)
    print("## combined — estimate and lookahead vs the measured space of one trade-off configuration")
    _table(header, table)


# ---------------------------------------------------------------- 3. ablation
def _ablation_rows(res, suite, rows, seed=0):
    A, R = res.spaces["ablation"], res.spaces["ablation_random"]
    tasks = A.tasks
    idx = [tasks.index(r) for r in rows]
    a, r = np.diag(A.matrix)[idx], np.diag(R.matrix)[idx]
    sep = int(np.sum(np.diag(A.ci_high)[idx] < np.diag(R.ci_low)[idx]))
    diff = a - r
    rng = np.random.default_rng(seed)
    boots = [rng.choice(diff, len(diff)).mean() for _ in range(2000)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    groups = [suite.group_of(t) for t in tasks]
    st = block_stats(A.matrix, tasks, groups, rows, permutations=0)
    sr = block_stats(R.matrix, tasks, groups, rows, permutations=0)
    return [float(a.mean()), float(r.mean()), float(diff.mean()), f"[{lo:.2f}, {hi:.2f}]",
            f"{sep}/{len(rows)}", st["within"], st["between"], sr["within"], sr["between"]]


def _rows_probe(lm, suite, kind, s, rows, out=None):
    """``taskspace.probe(..., rows=rows)`` refuses probes that do not claim ``per_task`` (ablation,
    transfer-estimate), although their runners compute ``RunContext.rows`` (the other rows NaN): call the
    runner directly."""
    from taskspace.probes.registry import RunContext, get

    ctx = RunContext(out=Path(out) if out is not None else None, progress=False, rows=tuple(rows), options={})
    return get(kind).load_runner()(lm, suite, s, ctx, (kind,))


def ablation(args) -> None:
    header = ["model", "fraction", "diag A[a,a]", "diag random", "A − random", "95% CI (over rows)",
              "rows with CIs apart", "A within", "A between", "random within", "random between", "time (s)",
              "load"]
    table = []
    models = []
    if not args.skip_blimp:
        lm, suite = _blimp(args.revision[0])
        models.append((f"gutenberg {args.revision[0]}", lm, suite, list(args.tasks), list(args.tasks[::2]),
                       "gutenberg"))
    if args.toy_model:
        tlm, tsuite, trev = _toy(args.toy_model, None)
        tt = [t for t in TOY_ABLATION if t in tsuite.tasks]
        models.append((f"toy {Path(args.toy_model).name} {trev}", tlm, tsuite, tt, tt[::2], "toy"))
    for label, lm, suite, tasks, rows, key in models:
        for f in args.fractions:
            kw = _toy_pairs(args) if key == "toy" else {"eval_pairs": args.ablation_eval_pairs}
            s = _settings(args, tasks=tuple(tasks), ablation_fraction=f, **kw)
            cache = Path(args.cache) / "ablation" / key / f"f{f:g}"
            res, t, cached = _timed(cache, "ablation", lambda: _rows_probe(lm, suite, "ablation", s, rows))
            table.append([label, f"{f:g}", *_ablation_rows(res, suite, rows), t["seconds"], f"{t['load_before']:.1f}"])
            print(f"# done {label} {f:g}", flush=True)
    print(f"## ablation — rows: every second task (one per group), columns: all; gutenberg "
          f"{args.train_pairs} train / {args.ablation_eval_pairs} eval pairs, toy {args.toy_pairs} "
          f"train,dev,eval pairs; margins in nats; {args.bootstrap} bootstrap resamples per cell")
    _table(header, table)


# ---------------------------------------------------------------- 4. probes
def probes(args) -> None:
    import taskspace
    from taskspace.analysis.compare import summarize_space

    header = ["model", "probe (space)", "checkpoint", "within", "between", "within − between", "Mantel ρ", "p",
              "ARI", "ARI p", "time (s)", "load"]
    table = []
    jobs = []
    if not args.skip_blimp:
        for rev in (args.revision[0], "step0"):
            jobs.append(("gutenberg", rev, args.blimp_probes, list(args.tasks)))
    if args.toy_model:
        from taskspace.models.loading import list_revisions

        revs = list_revisions(args.toy_model)
        for rev in (revs[-1], revs[0]):
            jobs.append(("toy", rev, args.toy_probes, None))
    for key, rev, kinds, tasks in jobs:
        if key == "gutenberg":
            lm, suite = _blimp(rev)
        else:
            lm, suite, _ = _toy(args.toy_model, rev)
            tasks = list(suite.tasks)
        s = _settings(args, tasks=tuple(tasks), **(_toy_pairs(args) if key == "toy" else {}))
        for kind in kinds:
            cache = Path(args.cache) / "probes" / key / rev / kind
            k = ("gradients", "overlap") if kind == "gradients+overlap" else kind
            res, t, _ = _timed(cache, kind, lambda: taskspace.probe(lm, suite, k, s, progress=False))
            names = {"gradients+overlap": ["gradients", "overlap"], "transfer": ["transfer_normalized"],
                     "lookahead": ["lookahead"]}.get(kind, [kind.replace("-", "_")])
            for name in names:
                sm = summarize_space(res.spaces[name])
                sg = sm["signed"]
                table.append([key, name, rev, sg["within"], sg["between"], sg["difference"], sg["rho"], sg["p"],
                              sm["ari"], sm["ari_p"], t["seconds"], f"{t['load_before']:.1f}"])
            print(f"# done {key} {rev} {kind}: {t['seconds']:.0f} s", flush=True)
    print("## probes — trained vs step0 control, signed spaces; gutenberg: "
          f"{len(args.tasks)} BLiMP paradigms; toy: all toy tasks")
    _table(header, table)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", required=True, help="folder for the probe runs (outside the repository)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--revision", nargs="+", default=["step2577"], help="gutenberg checkpoints (each on its own)")
    p.add_argument("--tasks", type=_tasks_arg, default=TASKS8,
                   help="comma-separated paradigms, or 'all' for every BLiMP paradigm (67)")
    p.add_argument("--workers", type=int, default=1, help="transfer: fine-tuning processes side by side")
    p.add_argument("--train-pairs", type=int, default=100)
    p.add_argument("--dev-pairs", type=int, default=50)
    p.add_argument("--eval-pairs", type=int, default=50)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--steps", type=int, default=50, help="FTGD step cap (smoke tests only)")
    p.add_argument("--toy-pairs", default="50,25,50", help="train,dev,eval pairs per toy task (200 per task)")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("estimates", help="transfer vs transfer-estimate vs lookahead")
    e.add_argument("--toy-model", default=None, help="also on a toy model folder (its last checkpoint)")
    t = sub.add_parser("tradeoff", help="lr × objective on 6 rows")
    t.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    t.add_argument("--objectives", nargs="+", default=["difference", "logistic"])
    t.add_argument("--rows", type=lambda v: tuple(v.split(",")), default=ROWS)
    cb = sub.add_parser("combined", help="estimate vs measured over all trade-off rows of one configuration")
    cb.add_argument("--lr", type=float, default=1e-4)
    cb.add_argument("--objective", default="logistic")
    a = sub.add_parser("ablation", help="ablation vs random mask over mask fractions")
    a.add_argument("--fractions", type=float, nargs="+", default=[0.001, 0.005, 0.02, 0.05])
    a.add_argument("--toy-model", default=None, help="a toy model folder with checkpoints")
    a.add_argument("--ablation-eval-pairs", type=int, default=50)
    a.add_argument("--skip-blimp", action="store_true")
    q = sub.add_parser("probes", help="activations / latent / gradients vs step0; toy ARI")
    q.add_argument("--toy-model", default=None)
    q.add_argument("--blimp-probes", nargs="+", default=["gradients+overlap", "activations", "latent"])
    q.add_argument("--toy-probes", nargs="+",
                   default=["gradients+overlap", "activations", "latent", "lookahead"])
    q.add_argument("--skip-blimp", action="store_true")
    args = p.parse_args(argv)
    _setup(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}, "
          f"threads {args.threads}", flush=True)
    {"estimates": estimates, "tradeoff": tradeoff, "combined": combined, "ablation": ablation, "probes": probes}[args.cmd](args)


if __name__ == "__main__":
    main()
