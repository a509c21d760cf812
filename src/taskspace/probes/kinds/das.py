"""Trained causal subspaces: Distributed Alignment Search (``das``) and multi-task DAS (``mdas``) task spaces.

Pairs. Each minimal pair becomes a counterfactual (:mod:`taskspace.probes.interchange`): base = bad, source =
good, tokenised as the scorer does (prefix token first); the critical region is where their tokens differ,
the site is the region's last token in each run (aligned by that token and the shared continuation after
it), and the outcome ``m(run)`` is the log-probability of the shared continuation in that run (or, where the
sentences differ up to their last token with a same-length region, the log-odds of the two last tokens). A
task's pairs that do not align are counted per reason; a task with fewer than ``min_pairs`` alignable train
or eval pairs is skipped (NaN row and column) and the table says why.

DAS. For task a at layer ℓ (the residual stream after block ℓ; the last layer after the final norm, as in
the other causal probes), an orthonormal ``R_a ∈ R^{k×width}`` is trained on a's alignable **train** pairs
by interchange intervention — ``h_base ← h_base + R_aᵀ(R_a h_source − R_a h_base)`` at the base run's site,
every parameter frozen — to make the base run's outcome match the source's (the squared-error objective of
:mod:`taskspace.probes.subspaces`, where the choice is argued). On b's alignable **eval** pairs::

    das[a, b] = Σ_i sign(Δ_i)(m_b,i(R_a) − m_b,i(base)) / Σ_i |Δ_i|,   Δ_i = m_b,i(source) − m_b,i(base)

the fraction of b's base→source margin that a's subspace recovers (|Δ|-weighted mean of the per-pair
fractions); the diagonal is a's own *cause* score. Beside it, on the same pairs:

- ``das_random``: a shared pool of ``random_subspaces`` uniformly random rank-k subspaces (seeded by seed
  and layer; :func:`~taskspace.probes.subspaces.random_pool` says why not covariance-matched): a random
  subspace's effect on b does not depend on the row, so one pool serves every row (each row of the space is
  the pool's mean), and a's cause is ranked against the pool's recoveries on a: ``p = (1 + #{random ≥ own}) / (1 + n)``;
- ``das_mean_difference``: the rank-1 interchange along d̂_a, the ``activations`` probe's pooled good−bad
  difference at layer ℓ on a's train pairs, normalised (the direction the steering and erasure probes use);
- the full patch (``R = I``, the source's whole state at the site) per task, in the table: the most an
  interchange at the site can do at the last layer (at earlier layers the rest of the region still feeds
  the continuation, and a trained subspace can recover more than the full patch);
- interchange-intervention accuracy (IIA: pairs whose intervened outcome lands nearer the source's than the
  base's) for each, in the table; the untrained checkpoint through ``--control first``.

Layer. Without ``--layer``, R_a is trained at every layer and the layer with the largest mean diagonal
selectivity on the **dev** pairs (own recovery − the random pool's, over tasks) is chosen, as the steering
probe chooses its layer; the subspaces trained there are the ones evaluated (no retraining). Cost: L
trainings per task (``--layer`` fixes it: one).

MDAS (RAVEL). One subspace per group g, trained at the chosen layer on the train pairs of g's tasks (cause)
and, with weight ``isolate_weight`` (λ), on the train pairs of every other group's tasks (isolate: their
recovery pushed to 0). ``mdas[a, b]`` = the recovery on b of the subspace of a's group — groups × tasks made
square by giving each task its group's subspace (rows of one group are equal). Its table, per task with its
group's scores beside: cause (mean recovery on the group's tasks), isolate (1 − mean |recovery| on other
groups' tasks), next to per-task DAS's and the random pool's, on held-out pairs.

Files: ``stats/das_tasks.csv`` (per task: alignment counts and reasons, cause with interval, IIA, the random
pool, its p-value, full patch, mean difference, within / other groups, seconds), ``stats/das_layers.csv``
(the dev sweep), ``stats/mdas_tasks.csv`` and ``stats/mdas_groups.csv``, ``subspaces/das.safetensors`` /
``subspaces/mdas.safetensors`` (the trained R, one ``[k, width]`` tensor per task or group).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...errors import InputError
from ..causal import check_layer, choose_layer, frozen, n_layers
from ..common import DIFFERENCES, convention_of, probe_provenance, probe_tasks, provided
from ..interchange import align_pairs
from ..registry import by_method, runner_probes
from ..settings import LEVEL
from ..subspaces import (
    Runs,
    bootstrap_recovery,
    concat,
    iia,
    intervened,
    plain_runs,
    random_pool,
    recovery,
    recovery_parts,
    train_subspace,
)

if TYPE_CHECKING:  # pragma: no cover
    from ...models.loading import LoadedModel
    from ...scoring import Head
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import ProbeSpec, RunContext

#: the methods (``ProbeSpec.method``) of the two probes this module runs in one pass: a subspace per task
#: (DAS) and a subspace per group (MDAS)
PER_TASK, PER_GROUP = "task-subspaces", "group-subspaces"


def option_defaults() -> dict[str, Any]:
    """The registry's defaults of the options of ``das`` and ``mdas`` (for a direct call with fewer options)."""
    return {o.name: o.default for o in by_method(PER_GROUP).options}


class Env:
    """What every stage needs: the model as backbone + head, padding, batch budget, options, progress."""

    def __init__(self, loaded: "LoadedModel", settings: "ProbeSettings", opts: dict, progress: bool) -> None:
        from ...scoring import Head, resolve_prefix

        self.loaded, self.settings, self.progress = loaded, settings, progress
        self.opts = {**option_defaults(), **opts}
        self.head: "Head" = Head(loaded.model)
        _, self.prefix_id = resolve_prefix(loaded.tokenizer, settings.prefix)
        pad = getattr(loaded.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else (self.prefix_id if self.prefix_id is not None else 0)
        self.batch_tokens = settings.batch_tokens
        self.width = int(loaded.model.get_input_embeddings().weight.shape[1])

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        from ...scoring import encode

        return encode(self.loaded.tokenizer, sentences, self.prefix_id)

    def runs(self, cfs: Sequence[Any], layers: Sequence[int]) -> Runs:
        return plain_runs(self.head, cfs, layers, pad_id=self.pad_id, batch_tokens=self.batch_tokens)

    def score(self, runs: Runs, layer: int, basis: Any) -> np.ndarray:
        return intervened(self.head, runs, layer, basis, pad_id=self.pad_id, batch_tokens=self.batch_tokens)

    def train(self, layer: int, cause: Runs, label: str, isolate: Runs | None = None) -> tuple[np.ndarray, list]:
        from ..gradient.masks import task_seed

        with frozen(self.loaded.model):
            return train_subspace(self.head, layer, int(self.opts["rank"]), cause,
                                  steps=int(self.opts["rotation_steps"]), lr=float(self.opts["rotation_lr"]),
                                  batch_pairs=self.settings.batch_pairs, pad_id=self.pad_id,
                                  seed=task_seed(self.settings.seed, f"das\x00{label}\x00{layer}"),
                                  isolate=isolate, weight=float(self.opts["isolate_weight"]))


# -- alignment ---------------------------------------------------------------------------------------------

def align_splits(env: Env, splits: dict, tasks: Sequence[str], names: Sequence[str]) -> tuple[dict, dict]:
    """``aligned[split][task]`` (counterfactuals) and ``skipped[split][task]`` (``{pair_id: reason}``)."""
    aligned: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    for split in names:
        aligned[split], skipped[split] = {}, {}
        for t in tasks:
            aligned[split][t], skipped[split][t] = align_pairs(splits[split].pairs_of(t), env.encode)
    return aligned, skipped


def kept_tasks(aligned: dict, tasks: Sequence[str], min_pairs: int) -> tuple[list[str], dict[str, str]]:
    """The tasks with at least ``min_pairs`` alignable train and eval pairs, and why each other one is not."""
    kept, why = [], {}
    for t in tasks:
        short = [f"{len(aligned[s][t])} alignable {label} pairs" for s, label in (("train", "train"), ("test", "eval"))
                 if len(aligned[s][t]) < min_pairs]
        if short:
            why[t] = f"skipped: {' and '.join(short)} (min_pairs {min_pairs})"
        else:
            kept.append(t)
    return kept, why


# -- the layer sweep -----------------------------------------------------------------------------------------

def sweep(env: Env, train: dict[str, Runs], dev: dict[str, Runs], kept: Sequence[str],
          layers: Sequence[int]) -> tuple[dict, dict]:
    """Per layer: every kept task's trained R (``subspaces[ℓ][t]``, with ``losses`` and ``seconds``) and, with
    dev pairs, the mean diagonal recovery of the trained subspaces and of the random pool
    (``curve[ℓ] = {"dev_recovery", "dev_random", "dev_selectivity"}``)."""
    from ...progress import progress_bar

    subspaces: dict[int, dict] = {}
    curve: dict[int, dict] = {}
    n_random = int(env.opts["random_subspaces"])
    with progress_bar("das: training subspaces", len(layers) * len(kept), show=env.progress) as advance:
        for ell in layers:
            subspaces[ell] = {}
            pool = random_pool(env.width, int(env.opts["rank"]), n_random, env.settings.seed, ell)
            own, rnd = [], []
            for t in kept:
                t0 = time.perf_counter()
                R, losses = env.train(ell, train[t], t)
                subspaces[ell][t] = {"R": R, "losses": losses, "seconds": time.perf_counter() - t0}
                if len(dev.get(t, ())) and np.abs(dev[t].delta).sum() > 0:
                    own.append(recovery(env.score(dev[t], ell, R), dev[t]))
                    rnd.append(float(np.mean([recovery(env.score(dev[t], ell, P), dev[t]) for P in pool])))
                advance(1)
            mo = float(np.mean(own)) if own else float("nan")
            mr = float(np.mean(rnd)) if rnd else float("nan")
            curve[ell] = {"dev_recovery": mo, "dev_random": mr, "dev_selectivity": mo - mr, "dev_tasks": len(own)}
    return subspaces, curve


# -- evaluation at the chosen layer ----------------------------------------------------------------------------

def evaluate(env: Env, test: dict[str, Runs], kept: Sequence[str], layer: int, rows: dict[str, np.ndarray],
             label: str) -> dict[str, dict[str, np.ndarray]]:
    """``m_int[a][b]``: b's eval pairs under row a's subspace ``rows[a]`` (forward only)."""
    from ...progress import progress_bar

    out: dict[str, dict[str, np.ndarray]] = {}
    with progress_bar(f"das: {label}, tasks × tasks", len(rows) * len(kept), show=env.progress) as advance:
        for a, R in rows.items():
            out[a] = {}
            for b in kept:
                out[a][b] = env.score(test[b], layer, R)
                advance(1)
    return out


def space_values(m_int: dict, test: dict[str, Runs], tasks: Sequence[str], kept: Sequence[str],
                 bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(value, low, high, iia)`` ``[T, T]`` matrices of the recovery (NaN outside kept rows / columns)."""
    from ..finetune.evaluation import bootstrap_counts

    n = len(tasks)
    val, lo, hi, acc = (np.full((n, n), np.nan) for _ in range(4))
    counts = {b: bootstrap_counts(len(test[b]), bootstrap, seed, b) if bootstrap else None for b in kept}
    index = {t: i for i, t in enumerate(tasks)}
    for a, row in m_int.items():
        for b, m in row.items():
            i, j = index[a], index[b]
            num, den = recovery_parts(m, test[b])
            val[i, j] = float(num.sum() / den.sum()) if den.sum() > 0 else np.nan
            lo[i, j], hi[i, j] = bootstrap_recovery(num, den, counts[b])
            acc[i, j] = iia(m, test[b])
    return val, lo, hi, acc


def mean_difference_directions(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", layer: int,
                               tasks: Sequence[str]) -> dict[str, np.ndarray]:
    """``{task: d̂_t^ℓ}`` (``[width]``): the activations probe's train-pair differences at ``layer``, normalised,
    by running that probe's registered runner (no split-half pass); a task with a zero difference is left out."""
    diffs = provided(DIFFERENCES, loaded, suite, settings)
    out = {}
    for t in tasks:
        d = np.asarray(diffs[t][layer], dtype=np.float64)
        norm = np.linalg.norm(d)
        if norm > 0 and np.isfinite(norm):
            out[t] = d / norm
    return out


def das_scores(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", opts: dict, *,
               progress: bool = True) -> dict[str, Any]:
    """Everything both probes report: alignment, the layer sweep, the trained subspaces and the scorings of
    every eval pair under them and under the controls (``own``, ``mean_difference``, ``random``, ``full``)."""
    env = Env(loaded, settings, opts, progress)
    L = n_layers(loaded.model)
    fixed = env.opts["layer"]
    check_layer(fixed, L)
    if int(env.opts["rank"]) > env.width:
        raise InputError(f"rank must be at most the residual width {env.width}, got {env.opts['rank']}", field="rank")
    splits, tasks, _ = probe_tasks(suite, settings, ["train", "test"])
    names = ["train", "test"] + (["dev"] if fixed is None else [])
    aligned, skipped = align_splits(env, splits, tasks, names)
    kept, why = kept_tasks(aligned, tasks, int(env.opts["min_pairs"]))
    if not kept:
        raise InputError("no task has enough alignable pairs for an interchange: " +
                         "; ".join(f"{t}: {w}" for t, w in list(why.items())[:3]), field="tasks")
    if fixed is None and not any(aligned["dev"][t] for t in kept):
        raise InputError("the layer is chosen on dev pairs and no task has an alignable one: give dev pairs "
                         "(--dev-pairs) or fix the layer (--layer)", field="layer")
    layers = [fixed] if fixed is not None else list(range(L))
    train = {t: env.runs(aligned["train"][t], layers) for t in kept}
    dev = {t: env.runs(aligned["dev"][t], layers) for t in kept} if fixed is None else {}
    subspaces, curve = sweep(env, train, dev, kept, layers)
    layer = fixed if fixed is not None else choose_layer({k: v["dev_selectivity"] for k, v in curve.items()})
    test = {t: env.runs(aligned["test"][t], [layer]) for t in kept}
    own_R = {t: subspaces[layer][t]["R"] for t in kept}
    t0 = time.perf_counter()
    own = evaluate(env, test, kept, layer, own_R, "trained subspaces")
    row_seconds = (time.perf_counter() - t0) / len(kept)
    dirs = mean_difference_directions(loaded, suite, settings, layer, kept)
    md = evaluate(env, test, kept, layer, {t: d[None] for t, d in dirs.items()}, "mean-difference directions")
    pool = random_pool(env.width, int(env.opts["rank"]), int(env.opts["random_subspaces"]), settings.seed, layer)
    rand = {b: [env.score(test[b], layer, P) for P in pool] for b in kept}
    full = {b: env.score(test[b], layer, np.eye(env.width)) for b in kept}
    return {"env": env, "tasks": tasks, "groups": [suite.group_of(t) for t in tasks], "kept": kept, "why": why,
            "aligned": aligned, "skipped": skipped, "splits": splits, "layer": layer, "curve": curve,
            "subspaces": subspaces, "train": train, "test": test, "own": own, "mean_difference": md,
            "random": rand, "full": full, "row_seconds": row_seconds, "layers": layers}


def mdas_scores(r: dict[str, Any]) -> dict[str, Any]:
    """One subspace per group (cause on its tasks' train pairs + λ·isolate on the other groups'), trained at
    the chosen layer, and every kept task's eval pairs under each: ``{"R": {g}, "m_int": {g: {b}}, ...}``."""
    from ...progress import progress_bar

    env, layer, kept = r["env"], r["layer"], r["kept"]
    group_of = dict(zip(r["tasks"], r["groups"]))
    groups = list(dict.fromkeys(group_of[t] for t in kept))
    out: dict[str, Any] = {"R": {}, "m_int": {}, "losses": {}, "seconds": {}, "groups": groups}
    with progress_bar("mdas: group subspaces", len(groups) * (1 + len(kept)), show=env.progress) as advance:
        for g in groups:
            t0 = time.perf_counter()
            cause = concat([r["train"][t] for t in kept if group_of[t] == g])
            iso = concat([r["train"][t] for t in kept if group_of[t] != g])
            R, losses = env.train(layer, cause, f"group\x00{g}", isolate=iso if len(iso) else None)
            out["R"][g], out["losses"][g] = R, losses
            out["seconds"][g] = time.perf_counter() - t0
            advance(1)
            out["m_int"][g] = {}
            for b in kept:
                out["m_int"][g][b] = env.score(r["test"][b], layer, R)
                advance(1)
    return out


# -- outputs ----------------------------------------------------------------------------------------------------

def _pool_recoveries(r: dict[str, Any], b: str) -> list[float]:
    return [recovery(m, r["test"][b]) for m in r["random"][b]]


def _pool_matrix(r: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The random pool as a "row" for every kept task: per column b, the per-pair mean outcome over the pool
    (the recovery is linear in m_int, so this is the pool's mean recovery)."""
    cols = {b: np.mean(r["random"][b], axis=0) for b in r["kept"]}
    return {a: cols for a in r["kept"]}


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def _alignment_columns(r: dict[str, Any], t: str) -> dict[str, Any]:
    """Per task: alignable pairs per split, how many align by the final-token rule, and why the others do not."""
    out: dict[str, Any] = {}
    reasons: dict[str, int] = {}
    final = 0
    for split, label in (("train", "train"), ("dev", "dev"), ("test", "eval")):
        if split not in r["aligned"]:
            continue
        out[f"pairs_{label}"] = len(r["splits"][split].pairs_of(t))
        out[f"aligned_{label}"] = len(r["aligned"][split][t])
        final += sum(cf.kind == "final" for cf in r["aligned"][split][t])
        for why in r["skipped"][split][t].values():
            reasons[why] = reasons.get(why, 0) + 1
    out["aligned_final_token"] = final
    out["not_aligned"] = "; ".join(f"{k}: {v}" for k, v in reasons.items())
    out["status"] = r["why"].get(t, "ok")
    return out


def das_table(r: dict[str, Any], own: tuple, md: tuple) -> "Any":
    """``stats/das_tasks.csv``: one row per task (skipped tasks too, with the reason)."""
    import pandas as pd

    tasks, groups, kept = r["tasks"], r["groups"], r["kept"]
    val, lo, hi, acc = own
    mval, _, _, macc = md
    layer, n = r["layer"], int(r["env"].opts["random_subspaces"])
    rows = []
    for i, (t, g) in enumerate(zip(tasks, groups)):
        row: dict[str, Any] = {"task": t, "group": g, **_alignment_columns(r, t), "layer": layer,
                               "rank": int(r["env"].opts["rank"])}
        if t in kept:
            pool = _pool_recoveries(r, t)
            full = r["full"][t]
            sub = r["subspaces"][layer][t]
            same = [val[i, j] for j, h in enumerate(groups) if h == g and j != i]
            other = [val[i, j] for j, h in enumerate(groups) if h != g]
            row.update({
                "cause": val[i, i], "cause_low": lo[i, i], "cause_high": hi[i, i], "iia": acc[i, i],
                "random": _mean(pool), "random_max": max(pool) if pool else np.nan,
                "random_p": (1 + sum(p >= val[i, i] for p in pool)) / (1 + n) if np.isfinite(val[i, i]) else np.nan,
                "full_patch": recovery(full, r["test"][t]), "full_patch_iia": iia(full, r["test"][t]),
                "mean_difference": mval[i, i], "mean_difference_iia": macc[i, i],
                "within": _mean(same), "other_groups": _mean(other),
                "eval_margin_change": float(np.mean(r["test"][t].delta)),
                "train_loss": float(np.mean(sub["losses"][-10:])) if sub["losses"] else np.nan,
                "train_steps": len(sub["losses"]),
                "train_seconds": float(sum(r["subspaces"][ell][t]["seconds"] for ell in r["layers"])),
                "row_seconds": r["row_seconds"]})
        rows.append(row)
    return pd.DataFrame(rows)


def layers_table(r: dict[str, Any]) -> "Any":
    """``stats/das_layers.csv``: the dev sweep per layer (a fixed layer: one row without dev numbers)."""
    import pandas as pd

    return pd.DataFrame([{"layer": ell, **{k: v for k, v in r["curve"].get(ell, {}).items()},
                          "chosen": ell == r["layer"]} for ell in r["layers"]])


def mdas_tables(r: dict[str, Any], m: dict[str, Any], das_val: np.ndarray) -> tuple["Any", "Any"]:
    """``stats/mdas_tasks.csv`` (per task, with its group's scores; the columns of the two probes' own
    recoveries named after them) and ``stats/mdas_groups.csv`` (RAVEL's table: per group, cause and isolate of
    its subspace beside per-task DAS's and the random pool's)."""
    das, mdas = by_method(PER_TASK).name, by_method(PER_GROUP).name
    import pandas as pd

    tasks, groups, kept = r["tasks"], r["groups"], r["kept"]
    group_of = dict(zip(tasks, groups))
    idx = {t: i for i, t in enumerate(tasks)}
    rec = {g: {b: recovery(m["m_int"][g][b], r["test"][b]) for b in kept} for g in m["groups"]}
    pool = {b: _mean(_pool_recoveries(r, b)) for b in kept}
    grows = []
    for g in m["groups"]:
        mine = [b for b in kept if group_of[b] == g]
        rest = [b for b in kept if group_of[b] != g]
        grows.append({
            "group": g, "n_tasks": len(mine),
            "cause": _mean([rec[g][b] for b in mine]),
            "cause_iia": _mean([iia(m["m_int"][g][b], r["test"][b]) for b in mine]),
            "isolate": 1 - _mean([abs(rec[g][b]) for b in rest]) if rest else np.nan,
            "leak": _mean([rec[g][b] for b in rest]),
            "das_cause": _mean([das_val[idx[b], idx[b]] for b in mine]),
            "das_isolate": 1 - _mean([abs(das_val[idx[a], idx[b]]) for a in mine for b in rest]) if rest else np.nan,
            "random_cause": _mean([pool[b] for b in mine]),
            "random_isolate": 1 - _mean([abs(pool[b]) for b in rest]) if rest else np.nan,
            "train_loss": float(np.mean(m["losses"][g][-10:])) if m["losses"][g] else np.nan,
            "train_steps": len(m["losses"][g]), "train_seconds": m["seconds"][g], "layer": r["layer"]})
    gtab = pd.DataFrame(grows)
    by_group = {row["group"]: row for row in grows}
    trows = []
    for t, g in zip(tasks, groups):
        row: dict[str, Any] = {"task": t, "group": g, "status": r["why"].get(t, "ok")}
        if t in kept:
            others = [rec[h][t] for h in m["groups"] if h != g]
            row.update({mdas: rec[g][t], f"{mdas}_iia": iia(m["m_int"][g][t], r["test"][t]),
                        das: das_val[idx[t], idx[t]], "random": pool[t],
                        "other_group_subspaces": _mean(others),
                        **{f"group_{k}": by_group[g][k] for k in ("cause", "isolate", "das_cause", "das_isolate",
                                                                   "random_cause", "random_isolate")}})
        trows.append(row)
    return pd.DataFrame(trows), gtab


def _provenance(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", r: dict[str, Any],
                probe: "ProbeSpec") -> dict:
    o = r["env"].opts
    group = probe.method == PER_GROUP
    return probe_provenance(
        loaded, suite.select(r["tasks"]), settings, probe.name, convention_of(loaded.model, loaded.tokenizer, settings),
        n_train_pairs=r["splits"]["train"].counts(), n_eval_pairs=r["splits"]["test"].counts(),
        n_aligned_train={t: len(r["aligned"]["train"][t]) for t in r["tasks"]},
        n_aligned_eval={t: len(r["aligned"]["test"][t]) for t in r["tasks"]},
        skipped_tasks=r["why"], layer=r["layer"],
        layer_choice=("fixed by the layer option" if o["layer"] is not None else
                      "largest mean diagonal selectivity (own − random pool recovery) on the dev pairs"),
        layer_selectivity={str(k): v["dev_selectivity"] for k, v in r["curve"].items()},
        rank=int(o["rank"]), rotation_steps=int(o["rotation_steps"]), rotation_lr=float(o["rotation_lr"]),
        batch_pairs=settings.batch_pairs, random_subspaces=int(o["random_subspaces"]), min_pairs=int(o["min_pairs"]),
        isolate_weight=float(o["isolate_weight"]) if group else None,
        intervention="h_base <- h_base + R^T (R h_source - R h_base) at the base run's site (last token of the "
                     "critical region), residual stream after block l (the last layer after the final norm)",
        counterfactual="base = bad sentence, source = good sentence, tokenised with the prefix token",
        outcome="log p(shared continuation) summed over its tokens (or log-odds of the two last tokens where the "
                "sentences differ up to the end with a same-length region)",
        objective="mean (m_int - m_source)^2 / mean (m_source - m_base)^2 over the cause pairs" +
                  (" + isolate_weight * mean (m_int - m_base)^2 / mean (m_source - m_base)^2 over other groups' "
                   "pairs" if group else "") + "; Adam, R orthonormal (torch orthogonal parametrization)",
        recovery="sum_i sign(D_i)(m_int,i - m_base,i) / sum_i |D_i|, D_i = m_source,i - m_base,i, on eval pairs",
        bootstrap={"resamples": settings.bootstrap, "level": LEVEL, "unit": "eval pair"},
        scorer={"batch_tokens": settings.batch_tokens, "share_prefix": False, "split_head": r["env"].head.split})


def _writer(name: str, tensors: dict[str, np.ndarray]) -> Any:
    """Writes ``subspaces/<name>.safetensors`` (``name``: the probe's) into the probe folder."""
    def write(d: Any) -> list:
        from safetensors.numpy import save_file

        from ...io import atomic_path

        path = d / "subspaces" / f"{name}.safetensors"
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp))
        return [path]
    return write


def _space(value: tuple, r: dict[str, Any], name: str, prov: dict, **extra: Any) -> "Any":
    from ...spaces import TaskSpace

    val, lo, hi, _ = value
    return TaskSpace(val, r["tasks"], r["groups"], name, dict(prov, **extra), lo, hi)


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``das`` and / or ``mdas`` probe on one checkpoint (one pass; options ``rank``, ``layer``,
    ``rotation_steps``, ``rotation_lr``, ``random_subspaces``, ``min_pairs``, ``isolate_weight``)."""
    from ..result import ProbeResult

    asked = {s.method: s for s in runner_probes(run, kinds, ctx)}
    das, mdas = by_method(PER_TASK), by_method(PER_GROUP)    # the pass is das's (its provenance and files)
    r = das_scores(loaded, suite, settings, ctx.options, progress=ctx.progress)
    tasks, kept, layer = r["tasks"], r["kept"], r["layer"]
    boot, seed = settings.bootstrap, settings.seed
    own = space_values(r["own"], r["test"], tasks, kept, boot, seed)
    prov = _provenance(loaded, suite, settings, r, das)
    res = ProbeResult(tuple(s.name for s in asked.values()), provenance=prov, extra={
        "layer": layer, "kept": kept, "notes": [f"{das.name}: {t} {w}" for t, w in r["why"].items()]})
    res.tables[f"stats/{das.name}_layers.csv"] = (layers_table(r), prov)
    if PER_TASK in asked:
        own_space, md_space, random_space = (s.name for s in das.spaces)      # as the registry declares them
        md = space_values(r["mean_difference"], r["test"], tasks, kept, boot, seed)
        rnd = space_values(_pool_matrix(r), r["test"], tasks, kept, boot, seed)
        res.spaces[own_space] = _space(own, r, own_space, prov, rows="task whose subspace is interchanged",
                                       columns="task evaluated", perf="fraction of the margin recovered")
        res.spaces[md_space] = _space(md, r, md_space, prov,
                                      subspace="rank 1 along the activations probe's d_a, normalised")
        res.spaces[random_space] = _space(rnd, r, random_space, prov, subspace=(
            f"mean of a shared pool of {r['env'].opts['random_subspaces']} random rank-k subspaces (every row the same)"))
        res.tables[das.file("table")] = (das_table(r, own, md), prov)
        res.writers.append(_writer(das.name, {t: r["subspaces"][layer][t]["R"] for t in kept}))
        res.extra["subspaces"] = {t: r["subspaces"][layer][t]["R"] for t in kept}
    if PER_GROUP in asked:
        (group_space,) = (s.name for s in mdas.spaces)
        m = mdas_scores(r)
        mprov = _provenance(loaded, suite, settings, r, mdas)
        group_of = dict(zip(tasks, r["groups"]))
        rows = {a: m["m_int"][group_of[a]] for a in kept}
        res.spaces[group_space] = _space(space_values(rows, r["test"], tasks, kept, boot, seed), r, group_space, mprov,
                                         rows="task whose group's subspace is interchanged (rows of one group are "
                                              "equal)", columns="task evaluated", perf="fraction of the margin recovered")
        ttab, gtab = mdas_tables(r, m, own[0])
        res.tables[mdas.file("table")] = (ttab, mprov)
        res.tables[f"stats/{mdas.name}_groups.csv"] = (gtab, mprov)
        res.writers.append(_writer(mdas.name, m["R"]))
        res.extra["group_subspaces"] = m["R"]
    return res
