"""Validation of the causal probes (issue 16): ``steering``, ``erasure`` and ``steering-estimate``.

On one model (a checkpoint and its step0 control), over a suite (BLiMP or the toy world, whose groups are
the ground truth), prints:

- per checkpoint: the chosen layer; the mean diagonal selectivity ``S[a,a] − R[a,a]`` (steering) and
  ``R[a,a] − E[a,a]`` (erasure) with a 95% bootstrap interval over pairs, and how many tasks have a
  causal direction (their own interval above 0); within − between and a Mantel ρ (Spearman of the
  off-diagonal cells with "same group", p from 999 label permutations) of S and E; Spearman of S with the
  activations space (same layer, off-diagonal); the estimate vs exact steering per layer (off-diagonal
  Spearman of Ŝ and S) and the time ratio; time per row as a ratio to one plain scoring pass;
- on the trained checkpoint: the α curve at the chosen layer (diagonal selectivity vs LM damage, the
  mean per-token NLL increase on held-out prose under steering along the tasks' directions).

Examples (the figures in ``benchmarks/README.md`` were produced with these)::

    python benchmarks/bench_causal.py --model /tmp/causal-bench/toy-small --suite toy --threads 2
    python benchmarks/bench_causal.py --suite blimp --tasks 12 --eval-pairs 20 --alpha 0.5 --threads 1
    python benchmarks/bench_causal.py --suite blimp --eval-pairs 20 --alpha 0.5 --no-control --estimate-only 1
    python benchmarks/bench_causal.py --saved /tmp/causal67 --transfer /tmp/transfer67   # maps saved by --save

Timings are wall seconds in one process; the machine may be shared (the load average is printed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
GUTENBERG = SHARED / "models" / "gutenberg-gpt2-5m"
BLIMP = SHARED / "data" / "blimp"
PROSE = SHARED / "data" / "gutenberg" / "valid.txt"


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return float(spearmanr(x[ok], y[ok]).statistic) if ok.sum() >= 3 else float("nan")


def offdiag(M: np.ndarray) -> np.ndarray:
    return M[~np.eye(len(M), dtype=bool)]


def block(M: np.ndarray, groups, permutations: int = 999, seed: int = 0) -> dict:
    """within, between (off-diagonal means), their difference, Mantel ρ and a one-sided permutation p."""
    g = np.asarray(groups)
    mask = ~np.eye(len(g), dtype=bool)
    v = M[mask]
    H = (g[:, None] == g[None, :])[mask].astype(float)
    ok = np.isfinite(v)
    rho = spearman(v[ok], H[ok])
    rng = np.random.default_rng(seed)
    ge = 0
    for _ in range(permutations if np.isfinite(rho) else 0):
        p = g[rng.permutation(len(g))]
        ge += spearman(v[ok], (p[:, None] == p[None, :])[mask].astype(float)[ok]) >= rho
    w, b = np.nanmean(v[H == 1]), np.nanmean(v[H == 0])
    return {"within": w, "between": b, "gap": w - b, "rho": rho, "p": (ge + 1) / (permutations + 1) if np.isfinite(rho) else float("nan")}


def diagonal(base, changed, random, tasks, sign: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per task a, sel_a = sign · mean_i [(m_i(changed) − m_i) − mean_k (m_i(random_k) − m_i)] over a's eval
    pairs, with a 95% bootstrap interval over those pairs; and the mean over tasks with its interval."""
    t = base["task"].to_numpy()
    m0 = base["margin"].to_numpy()
    rng = np.random.default_rng(seed)
    per, reps = {}, []
    for a in tasks:
        if a not in changed:
            continue
        idx = np.flatnonzero(t == a)
        d = (changed[a]["margin"].to_numpy()[idx] - m0[idx]) - np.mean(
            [r["margin"].to_numpy()[idx] - m0[idx] for r in random[a]], axis=0)
        d = sign * d
        boot = rng.integers(0, len(idx), (n_boot, len(idx)))
        r = d[boot].mean(1)
        per[a] = (float(d.mean()), *np.percentile(r, [2.5, 97.5]))
        reps.append(r)
    mean_reps = np.mean(reps, axis=0)
    return {"per_task": per, "mean": float(np.mean([v[0] for v in per.values()])),
            "mean_ci": tuple(np.percentile(mean_reps, [2.5, 97.5])),
            "n_causal": sum(v[1] > 0 for v in per.values()), "n": len(per)}


def matrix(base, tables, tasks) -> np.ndarray:
    t = base["task"].to_numpy()
    m0 = base["margin"].to_numpy()
    out = np.full((len(tasks), len(tasks)), np.nan)
    for i, a in enumerate(tasks):
        if a in tables:
            tab = tables[a]
            d = (tab["margin"].to_numpy() if not isinstance(tab, list) else
                 np.mean([x["margin"].to_numpy() for x in tab], axis=0)) - m0
            out[i] = [d[t == b].mean() for b in tasks]
    return out


def ari(M: np.ndarray, tasks, groups) -> float:
    """ARI of the space's average-linkage clustering (cut at the number of groups) against the groups:
    the project's own ``cluster_space`` (what compare reports), on the rows/columns without NaN."""
    from taskspace.analysis.clustering import cluster_space
    from taskspace.spaces import TaskSpace

    return cluster_space(TaskSpace(M, list(tasks), list(groups), kind="bench"))["ari"]


def transfer_space(path: Path | None, tasks) -> np.ndarray | None:
    """The measured transfer space (normalised; rows/columns in ``tasks`` order) of a ``taskspace probe
    transfer --out DIR`` run, or None. Tasks it lacks are NaN."""
    if path is None:
        return None
    from taskspace.probes.output import read_spaces

    spaces = read_spaces(path)
    name = next((n for n in ("transfer_normalized", "transfer") if n in spaces), None)
    if name is None:
        sys.exit(f"{path}: no transfer space under spaces/ (is it a `taskspace probe transfer --out` folder?)")
    sp = spaces[name]
    idx = {t: i for i, t in enumerate(sp.tasks)}
    out = np.full((len(tasks), len(tasks)), np.nan)
    for i, a in enumerate(tasks):
        for j, b in enumerate(tasks):
            if a in idx and b in idx:
                out[i, j] = sp.matrix[idx[a], idx[b]]
    print(f"  (transfer space: {name} from {path}, {sum(t in idx for t in tasks)}/{len(tasks)} tasks)")
    return out


def fmt(x, nd=3) -> str:
    if isinstance(x, tuple):
        return "[" + ", ".join(fmt(v, nd) for v in x) + "]"
    return "—" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def load(args, revision: str):
    import taskspace
    from taskspace.models.loading import list_revisions

    if args.suite == "toy":
        revs = list_revisions(args.model)
        rev = revs[-1] if revision == "last" else revision
        return taskspace.load_model(args.model, revision=rev), taskspace.load_suite("toy"), rev
    return taskspace.load_model(args.model or str(GUTENBERG), revision=revision), taskspace.load_suite(str(BLIMP)), revision


def pick_tasks(suite, n: int | None) -> tuple:
    """``n`` tasks spread over the groups (two per group, round-robin in suite order), or all."""
    if not n or n >= len(suite.tasks):
        return tuple(suite.tasks)
    by: dict[str, list] = {}
    for t in suite.tasks:
        by.setdefault(suite.group_of(t), []).append(t)
    out, k = [], 0
    while len(out) < n:                      # two per group per round, so that "within" is defined
        for g in by:
            for t in by[g][k: k + 2]:
                if len(out) < n:
                    out.append(t)
        k += 2
    return tuple(t for t in suite.tasks if t in out)


def heldout(args, suite, settings) -> list[str]:
    if args.suite != "toy" and PROSE.exists():
        lines = [s.strip() for s in PROSE.read_text(encoding="utf-8").splitlines() if 5 <= len(s.split()) <= 40]
        return lines[: args.heldout]
    from taskspace.suites.toy.corpus import toy_corpus  # the toy grammar's own prose (another seed)

    return toy_corpus(args.heldout, seed=123)


def one_checkpoint(args, revision: str, alpha_curve: bool) -> dict:
    import taskspace
    from taskspace.probes.causal import intervene, prefix_skip
    from taskspace.probes.kinds.steering import intervention_scores
    from taskspace.probes.settings import ProbeSettings
    from taskspace.scoring import Scorer

    lm, suite, rev = load(args, revision)
    tasks = pick_tasks(suite, args.tasks)
    s = ProbeSettings(tasks=tasks, train_pairs=args.train_pairs, dev_pairs=args.dev_pairs,
                      eval_pairs=args.eval_pairs, bootstrap=0, seed=0)
    groups = [suite.group_of(t) for t in tasks]
    k = args.random_directions
    print(f"\n== {args.suite} {rev}: {len(tasks)} tasks in {len(set(groups))} groups, "
          f"{args.train_pairs}/{args.dev_pairs}/{args.eval_pairs} pairs, α {args.alpha}, k {k}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    out: dict = {"revision": rev}

    t0 = time.perf_counter()
    act = taskspace.probe(lm, suite, "activations", s, progress=False)
    t_act = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = taskspace.probe(lm, suite, "steering-estimate", s, progress=False, random_directions=k)
    t_est = time.perf_counter() - t0

    # the probe as it runs by default: the dev sweep, then the full map with its controls at the chosen layer
    t0 = time.perf_counter()
    r = intervention_scores(lm, suite, s, "steering", alpha=args.alpha, n_random=k, progress=False)
    t_steer = time.perf_counter() - t0
    layer, L = r["layer"], len(r["scale"])
    test = r["splits"]["test"]
    scorer = Scorer(lm.model, lm.tokenizer, share_prefix=False)
    t0 = time.perf_counter()
    base = scorer.score_pairs(test.pairs)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    Scorer(lm.model, lm.tokenizer).score_pairs(test.pairs)
    t_plain_shared = time.perf_counter() - t0
    skip = prefix_skip(lm.tokenizer, s.prefix)
    dirs, scale = r["directions"], r["scale"]
    S = {layer: matrix(r["base"], r["changed"][layer], tasks)}
    R = matrix(r["base"], r["random"][layer], tasks)
    T = transfer_space(args.transfer, tasks)
    # the exact S (no controls) at the other layers, for the estimate's per-layer comparison
    t0 = time.perf_counter()
    for ell in range(L):
        if ell == layer or not args.other_layers:
            continue
        tabs = {}
        for i, a in enumerate(tasks):
            if np.isfinite(dirs[ell, i]).all():
                with intervene(lm.model, ell, add=args.alpha * scale[ell] * dirs[ell, i], skip=skip):
                    tabs[a] = scorer.score_pairs(test.pairs)
        S[ell] = matrix(base, tabs, tasks)
    t_other = time.perf_counter() - t0
    if not args.other_layers:              # one intervened scoring per row, timed on the chosen layer's map
        t0 = time.perf_counter()
        for i in range(min(4, len(tasks))):
            with intervene(lm.model, layer, add=args.alpha * scale[layer] * dirs[layer, i], skip=skip):
                scorer.score_pairs(test.pairs)
        t_other = (time.perf_counter() - t0) * (L - 1) * len(tasks) / min(4, len(tasks))
    t_exact_all = t_other * L / max(L - 1, 1)          # T scorings per layer, every layer

    dg = diagonal(r["base"], r["changed"][layer], r["random"][layer], tasks, +1)
    print(f"steering: layer {layer} (dev selectivity per layer: "
          + ", ".join(f"{ell}: {fmt(v)}" for ell, v in r["sweep"].items()) + ")")
    print(f"  diagonal selectivity S[a,a] − R[a,a]: mean {fmt(dg['mean'])} {fmt(dg['mean_ci'])}; "
          f"tasks with a causal direction (CI > 0): {dg['n_causal']}/{dg['n']}")
    bs = block(S[layer], groups)
    print(f"  S off-diagonal vs groups: within {fmt(bs['within'])} between {fmt(bs['between'])} "
          f"gap {fmt(bs['gap'])} Mantel ρ {fmt(bs['rho'])} p {fmt(bs['p'])} ARI {fmt(ari(S[layer], tasks, groups))}; "
          f"random R: gap {fmt(block(R, groups, 0)['gap'])}")
    if T is not None:
        print(f"  Spearman(S, measured transfer) off-diagonal {fmt(spearman(offdiag(S[layer]), offdiag(T)))}; "
              f"transfer's own ARI {fmt(ari(T, tasks, groups))}, Mantel ρ {fmt(block(T, groups)['rho'])}")
    A = act.spaces[f"activations_by_layer/layer{layer}"].matrix
    print(f"  Spearman(S, activations layer {layer}) off-diagonal {fmt(spearman(offdiag(S[layer]), offdiag(A)))}; "
          f"with activations (all layers) {fmt(spearman(offdiag(S[layer]), offdiag(act.spaces['activations'].matrix)))}")
    rhos = {}
    for ell in sorted(S):
        E = est.spaces[f"steering_estimate_by_layer/layer{ell}"].matrix
        rhos[ell] = (spearman(offdiag(E), offdiag(S[ell])), spearman(np.diag(E), np.diag(S[ell])))
    print(f"  estimate (layer {est.provenance['layer']} chosen on dev) vs exact, Spearman off-diagonal (diagonal) "
          "per layer: " + ", ".join(f"{ell}: {fmt(a)} ({fmt(b)})" for ell, (a, b) in rhos.items()))
    print(f"  time: activations {t_act:.1f} s; estimate, all layers (incl. its activations pass and dev "
          f"gradients) {t_est:.1f} s; exact S at all {L} layers (no controls) ≈ {t_exact_all:.1f} s → "
          f"estimate/exact {t_est / t_exact_all:.3f}; the steering probe as run by default (dev sweep + chosen "
          f"layer with {k} controls) {t_steer:.1f} s")
    per_pass = t_other / max((L - 1) * len(tasks), 1)
    print(f"  one plain scoring of the eval pairs: {t_plain:.2f} s (no prefix sharing), {t_plain_shared:.2f} s "
          f"(default scorer); one intervened scoring {per_pass:.2f} s = {per_pass / t_plain:.2f}× plain "
          f"({per_pass / t_plain_shared:.2f}× the default scorer); a row (1+k = {1 + k} scorings) = "
          f"{(1 + k) * per_pass / t_plain:.1f} plain passes")
    out.update(steer_layer=layer, steer_diag=dg, steer_block=bs, est_rho=rhos, t_est=t_est, t_steer=t_steer)

    # erasure at the steering layer (its own dev choice is printed too)
    t0 = time.perf_counter()
    e = intervention_scores(lm, suite, s, "erasure", n_random=k, progress=False)
    t_erase = time.perf_counter() - t0
    el = e["layer"]
    de = diagonal(e["base"], e["changed"][el], e["random"][el], tasks, -1)
    Em = matrix(e["base"], e["changed"][el], tasks)
    be = block(-Em, groups)          # the drop −E: larger = erasing a's direction hurts b more
    print(f"erasure: layer {el} (dev: " + ", ".join(f"{ell}: {fmt(v)}" for ell, v in e["sweep"].items())
          + f"); diagonal R[a,a] − E[a,a] mean {fmt(de['mean'])} {fmt(de['mean_ci'])}; "
          f"causal {de['n_causal']}/{de['n']}; drop −E vs groups: gap {fmt(be['gap'])} Mantel ρ {fmt(be['rho'])} p {fmt(be['p'])} "
          f"ARI {fmt(ari(-Em, tasks, groups))}; {t_erase:.1f} s")
    A = act.spaces[f"activations_by_layer/layer{el}"].matrix
    print(f"  Spearman(−E, activations layer {el}) off-diagonal {fmt(spearman(offdiag(-Em), offdiag(A)))}"
          + (f"; Spearman(−E, measured transfer) {fmt(spearman(offdiag(-Em), offdiag(T)))}" if T is not None else ""))
    base_acc = {a: float(e["base"]["correct"][e["base"]["task"] == a].mean()) for a in tasks}
    print(f"  mean eval accuracy of the tasks: {np.mean(list(base_acc.values())):.3f}; tasks above 0.6: "
          f"{sum(v > 0.6 for v in base_acc.values())}")
    causal_steer = {a for a, v in dg["per_task"].items() if v[1] > 0}
    above = {a for a, v in base_acc.items() if v > 0.6}
    print(f"  steering-causal tasks among those above 0.6 accuracy: {len(causal_steer & above)}/{len(above)}; "
          f"among the others: {len(causal_steer - above)}/{len(tasks) - len(above)}")
    out.update(erase_layer=el, erase_diag=de, erase_block=be)
    if args.save is not None:              # the maps, for later comparisons (e.g. with a transfer space)
        args.save.mkdir(parents=True, exist_ok=True)
        np.savez(args.save / f"causal-{rev}.npz", tasks=np.array(tasks), groups=np.array(groups),
                 S=S[layer], R=R, E=Em, steer_layer=layer, erase_layer=el,
                 A_steer=act.spaces[f"activations_by_layer/layer{layer}"].matrix, A_erase=A)

    if alpha_curve:
        prose = heldout(args, suite, s)
        sc = Scorer(lm.model, lm.tokenizer, reduction="mean", share_prefix=False)
        nll0 = -sc.sentence_logprobs(prose)
        print(f"  α curve at layer {layer} ({len(prose)} held-out sentences; damage = mean NLL/token increase, "
              "averaged over the tasks' directions):")
        own = {a: [p for p in test.pairs if p.task == a] for a in tasks}
        base_own = {a: scorer.score_pairs(own[a])["margin"].to_numpy() for a in tasks}
        from taskspace.probes.causal import random_directions
        W = dirs.shape[2]
        for alpha in args.alphas:
            sel, dmg = [], []
            for i, a in enumerate(tasks):
                if not np.isfinite(dirs[layer, i]).all():
                    continue
                with intervene(lm.model, layer, add=alpha * scale[layer] * dirs[layer, i], skip=skip):
                    m = scorer.score_pairs(own[a])["margin"].to_numpy()
                    if i < args.damage_rows:
                        dmg.append(float(np.mean(-sc.sentence_logprobs(prose) - nll0)))
                ctrl = []
                for v in random_directions(W, k, 0, a, layer):
                    with intervene(lm.model, layer, add=alpha * scale[layer] * v, skip=skip):
                        ctrl.append(np.mean(scorer.score_pairs(own[a])["margin"].to_numpy() - base_own[a]))
                sel.append(np.mean(m - base_own[a]) - np.mean(ctrl))
            print(f"    α {alpha:g}: diagonal selectivity {np.mean(sel):.3f}, LM damage {np.mean(dmg):.3f} nats/token",
                  flush=True)
    return out


def estimate_only(args, revision: str, layer: int) -> None:
    """The estimate against exact steering (no controls) at one layer over the tasks: off-diagonal and
    diagonal Spearman, and the time of each (the estimate: all layers at once)."""
    import taskspace
    from taskspace.probes.causal import intervene, prefix_skip
    from taskspace.probes.settings import ProbeSettings
    from taskspace.scoring import Scorer

    lm, suite, rev = load(args, revision)
    tasks = pick_tasks(suite, args.tasks)
    s = ProbeSettings(tasks=tasks, train_pairs=args.train_pairs, dev_pairs=args.dev_pairs,
                      eval_pairs=args.eval_pairs, bootstrap=0, seed=0)
    print(f"\n== {args.suite} {rev}: estimate vs exact at layer {layer}, {len(tasks)} tasks, α {args.alpha}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    est = taskspace.probe(lm, suite, "steering-estimate", s, progress=False, layer=layer,
                          random_directions=args.random_directions)
    t_est = time.perf_counter() - t0
    dirs, scale = est.extra["directions"], est.extra["scale"]
    test = s.splits(suite)["test"]
    scorer = Scorer(lm.model, lm.tokenizer, share_prefix=False)
    skip = prefix_skip(lm.tokenizer, s.prefix)
    t0 = time.perf_counter()
    base = scorer.score_pairs(test.pairs)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    tabs = {}
    for i, a in enumerate(tasks):
        if np.isfinite(dirs[layer, i]).all():
            with intervene(lm.model, layer, add=args.alpha * scale[layer] * dirs[layer, i], skip=skip):
                tabs[a] = scorer.score_pairs(test.pairs)
    t_exact = time.perf_counter() - t0
    S = matrix(base, tabs, tasks)
    E = est.spaces[f"steering_estimate_by_layer/layer{layer}"].matrix
    print(f"  Spearman off-diagonal {fmt(spearman(offdiag(E), offdiag(S)))}, diagonal "
          f"{fmt(spearman(np.diag(E), np.diag(S)))}; estimate (all {len(scale)} layers, incl. activations and dev "
          f"gradients) {t_est:.1f} s vs exact S at this layer {t_exact:.1f} s → {t_est / t_exact:.3f} "
          f"(vs exact at all layers ≈ {t_est / (t_exact * len(scale)):.3f}); one plain scoring {t_plain:.2f} s",
          flush=True)


def from_saved(args) -> None:
    """The saved maps of earlier runs (``--save DIR``) against the measured transfer space (``--transfer``):
    per checkpoint, the off-diagonal Spearman of S and of the erasure drop −E with the normalised transfer
    space, each map's ARI and Mantel ρ against the groups, and the transfer space's own."""
    files = sorted(args.saved.glob("causal-*.npz"))
    if not files:
        sys.exit(f"{args.saved}: no causal-*.npz (written by --save)")
    for f in files:
        z = np.load(f)
        tasks, groups = [str(t) for t in z["tasks"]], [str(g) for g in z["groups"]]
        print(f"\n== {f.name}: {len(tasks)} tasks in {len(set(groups))} groups; steering layer {int(z['steer_layer'])}, "
              f"erasure layer {int(z['erase_layer'])}")
        T = transfer_space(args.transfer, tasks)
        for name, M in (("S (steering)", z["S"]), ("−E (erasure drop)", -z["E"]), ("R (random steering)", z["R"]),
                        ("activations at the erasure layer", z["A_erase"])):
            b = block(M, groups)
            line = f"  {name}: gap {fmt(b['gap'])} Mantel ρ {fmt(b['rho'])} p {fmt(b['p'])} ARI {fmt(ari(M, tasks, groups))}"
            if T is not None:
                line += f"; Spearman with transfer (off-diagonal) {fmt(spearman(offdiag(M), offdiag(T)))}"
            print(line)
        if T is not None:
            b = block(T, groups)
            print(f"  transfer itself: gap {fmt(b['gap'])} Mantel ρ {fmt(b['rho'])} p {fmt(b['p'])} ARI {fmt(ari(T, tasks, groups))}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("blimp", "toy"), default="blimp")
    p.add_argument("--model", default=None, help="model folder (default gutenberg-gpt2-5m; a toy model for --suite toy)")
    p.add_argument("--revisions", default=None, help="trained,control (default step2577,step0; toy: last,step0)")
    p.add_argument("--tasks", type=int, default=None, help="this many tasks spread over the groups (default all)")
    p.add_argument("--train-pairs", type=int, default=50)
    p.add_argument("--dev-pairs", type=int, default=20)
    p.add_argument("--eval-pairs", type=int, default=40)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--alphas", default="0.25,0.5,1,2,4")
    p.add_argument("--random-directions", type=int, default=4)
    p.add_argument("--heldout", type=int, default=200, help="held-out sentences for the LM damage")
    p.add_argument("--damage-rows", type=int, default=8, help="task directions the LM damage averages over")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-control", action="store_true")
    p.add_argument("--transfer", type=Path, default=None, metavar="DIR",
                   help="a `taskspace probe transfer --out DIR` folder on the trained checkpoint: Spearman of S and "
                        "of the erasure drop −E with its normalised transfer space")
    p.add_argument("--saved", type=Path, default=None, metavar="DIR",
                   help="no probe run: compare the maps an earlier --save wrote with --transfer (and the groups)")
    p.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="write each checkpoint's maps (S, R, E, activations) to DIR/causal-REV.npz")
    p.add_argument("--no-other-layers", dest="other_layers", action="store_false",
                   help="skip the exact S at the other layers (the estimate's per-layer comparison); the time "
                        "of one intervened scoring then comes from 4 rows at the chosen layer")
    p.add_argument("--estimate-only", type=int, default=None, metavar="LAYER",
                   help="only the estimate vs exact steering (no controls) at this layer, on every checkpoint")
    args = p.parse_args(argv)
    args.alphas = [float(a) for a in args.alphas.split(",") if a]
    if args.suite == "toy" and not args.model:
        sys.exit("--suite toy needs --model (a folder from `taskspace pretrain --corpus toy`)")
    import warnings

    import torch

    if args.saved is not None:
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        from_saved(args)
        return

    warnings.filterwarnings("ignore", category=RuntimeWarning)        # empty means, constant ranks: printed as —
    warnings.filterwarnings("ignore", message=".*constant.*")
    os.environ.setdefault("TASKSPACE_NO_PROGRESS", "1")
    torch.set_num_threads(args.threads)
    revs = (args.revisions or ("last,step0" if args.suite == "toy" else "step2577,step0")).split(",")
    t0 = time.perf_counter()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), " ".join(sys.argv))
    for i, rev in enumerate(revs[: 1 if args.no_control else None]):
        if args.estimate_only is not None:
            estimate_only(args, rev, args.estimate_only)
        else:
            one_checkpoint(args, rev, alpha_curve=(i == 0 and bool(args.alphas)))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
