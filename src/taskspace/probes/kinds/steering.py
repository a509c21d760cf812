"""Causal task spaces by intervening on the residual stream (``steering`` and ``erasure``): forward only.

For task t and layer ℓ, ``d_t^ℓ`` is the ``activations`` probe's mean good−bad residual-stream difference
on t's **train** pairs (asked from the registry, so it is that probe's number), ``d̂ = d/‖d‖``, and ``s_ℓ``
the RMS norm of the residual stream at ℓ over the eval sentences (prefix position left out). While task
b's **eval** pairs are scored (every sentence position, good and bad sentence alike, not the prefix)::

    steering:  r_ℓ ← r_ℓ + α·s_ℓ·d̂_a        S_ℓ[a,b] = mean_i [m_b,i(α) − m_b,i(0)]   (nats of margin)
    erasure:   r_ℓ ← r_ℓ − ⟨r_ℓ, d̂_a⟩ d̂_a    E_ℓ[a,b] = mean_i [m_b,i(erased) − m_b,i]
    control:   the same along a pool of k seeded random unit directions (one pool per layer, shared by
               every row; default k = 19), averaged → R_ℓ[a,b]
    S̃ = S / |S[a,a]|                        (steering only, as for transfer)

(m = log p(good) − log p(bad), scored by :class:`~taskspace.scoring.Scorer` under the run's convention,
without prefix sharing so every row starts at the prefix token.) Why: ``d_a`` is *correlational* — what
separates a's good from its bad sentences inside the model. Pushing along it (or removing it) and
watching every task's margin asks whether the model *uses* that direction, and for which tasks: a
tasks × tasks map of causal effects beside a random-direction control (Arora et al. 2024, CausalGym;
Huang et al. 2024, RAVEL).

Layer. The main spaces are at one layer, chosen on the **dev** split: every layer's diagonal (each task
steered or erased along its own direction, and along its random directions) is scored on the dev pairs,
and the layer with the largest mean diagonal selectivity wins (steering: ``S[a,a] − R[a,a]``; erasure:
``R[a,a] − E[a,a]``, erasure should hurt). ``--layer`` fixes it instead. The full tasks × tasks map
costs ``T·(1+k)`` scorings of all eval pairs per layer, so by default (``--layers chosen``) it is computed
at the chosen layer only (the dev sweep costs ``L·(1+k)`` scorings of the dev pairs); ``--layers all``
computes it at every layer (``<space>_by_layer/layer<ℓ>`` for each).

Files: ``stats/<probe>_layers.csv`` (per layer: s_ℓ, dev selectivity, chosen), ``stats/causal_<probe>.csv``
(per task: cause, within, isolate with bootstrap intervals and the random control, the paired
selectivity interval, the row's rank p-value against the pool and its Benjamini–Hochberg q;
:func:`~taskspace.probes.causal.causal_table`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ...progress import progress_bar
from ...scoring import Scorer
from ...spaces import TaskSpace
from ..causal import (
    POOL,
    causal_count,
    causal_table,
    check_layer,
    choose_layer,
    intervene,
    n_layers,
    prefix_skip,
    random_directions,
    residual_statistics,
    split_sentences,
    unit_directions,
    variance_share,
)
from ..common import DIFFERENCES, convention_of, probe_provenance, probe_tasks, provided
from ..finetune.evaluation import transfer_matrices
from ..registry import get, runner_probes
from ..result import ProbeResult
from ..settings import LEVEL

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import ProbeSpec, RunContext

#: the methods (``ProbeSpec.method``) of the two probes this module runs: the direction added to the
#: residual stream (steering) or projected out of it (erasure)
ADD, ERASE = "add-direction", "erase-direction"
#: per method: the sign that makes "selective" positive (steering should help, erasure should hurt)
SIGN = {ADD: 1, ERASE: -1}


def task_differences(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings") -> dict[str, Any]:
    """``{task: D_t}`` (``[layers, width]``): the activations probe's differences on the training split, by
    running the registered runner of the probe that provides them (no split-half pass)."""
    return provided(DIFFERENCES, loaded, suite, settings)


def _mean_table(tables: Sequence["pd.DataFrame"]) -> "pd.DataFrame":
    """One per-pair table whose margin and correct are the means over ``tables`` (the random control)."""
    out = tables[0].copy()
    out["margin"] = np.mean([t["margin"].to_numpy(np.float64) for t in tables], axis=0)
    out["correct"] = np.mean([t["correct"].to_numpy(np.float64) for t in tables], axis=0)
    return out


def intervention_scores(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", probe: "ProbeSpec | str", *,
                        alpha: float = 0.5, n_random: int = 19, layer: int | None = None, all_layers: bool = False,
                        random_kind: str = "covariance", progress: bool = True) -> dict[str, Any]:
    """Everything the two probes compute: ``{"tasks", "groups", "scale" [L], "sweep" {ℓ: dev selectivity},
    "layer" (chosen), "base" (eval table), "changed" {ℓ: {a: table}}, "random" {ℓ: {a: [tables]}},
    "splits", "directions" [L, T, W], "pool" {ℓ: [k, W]}, "covariance" [L, W, W]}``. ``probe``: the steering
    or the erasure probe (its registry entry or name; its ``method`` says what is done to the direction);
    ``random_kind``: the control pool matched to the residual stream's covariance, or isotropic."""
    spec = get(probe) if isinstance(probe, str) else probe
    if spec.method not in SIGN:
        raise KeyError(spec.name)
    needed = ["train", "test"] + (["dev"] if layer is None else [])
    splits, tasks, _ = probe_tasks(suite, settings, needed)
    test = splits["test"]
    model, tok = loaded.model, loaded.tokenizer
    L = n_layers(model)
    check_layer(layer, L)
    dirs = unit_directions(task_differences(loaded, suite, settings), tasks)     # [L, T, W]
    width = dirs.shape[2]
    stats = residual_statistics(model, tok, split_sentences(test), prefix=settings.prefix,
                                batch_tokens=settings.batch_tokens)
    scale, cov = stats["scale"], stats["covariance"]
    skip = prefix_skip(tok, settings.prefix)
    # prefix sharing as the plain scorer does it: the hook counts positions from where each call starts
    scorer = Scorer(model, tok, reduction=settings.reduction, prefix=settings.prefix,
                    batch_tokens=settings.batch_tokens)
    _ = scorer.shares_prefix   # the head split and prefix sharing are checked before any hook is in place
    iv = _Intervener(model, scorer, spec, skip, alpha, scale, cov, width, n_random, settings.seed, random_kind)
    sweep: dict[int, float] = {}
    if layer is None:
        sweep = _layer_sweep(iv, splits["dev"], tasks, dirs, progress)
        layer = choose_layer(sweep)
    main_layers = list(range(L)) if all_layers else [layer]
    base = scorer.score_pairs(test.pairs)
    changed, rand = _intervened_scores(iv, test.pairs, tasks, dirs, main_layers, progress)
    return {"tasks": tasks, "groups": [suite.group_of(t) for t in tasks], "scale": scale, "sweep": sweep,
            "layer": layer, "base": base, "changed": changed, "random": rand, "splits": splits,
            "directions": dirs, "skip": skip, "scorer": scorer.describe(), "pool": iv.pools, "covariance": cov}


def _run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
         spec: "ProbeSpec") -> "ProbeResult":
    opts = ctx.options
    add = spec.method == ADD
    # every option is present: the caller (probe(), the CLI, a run) fills in the spec's defaults
    alpha = float(opts["alpha"]) if add else None
    n_random = int(opts["random_directions"])
    random_kind = str(opts["random_kind"])
    fixed = opts["layer"]
    all_layers = opts["layers"] == "all"
    r = intervention_scores(loaded, suite, settings, spec, alpha=alpha if alpha is not None else 0.0,
                            n_random=n_random, layer=fixed, all_layers=all_layers, random_kind=random_kind,
                            progress=ctx.progress)
    tasks, layer, splits = r["tasks"], r["layer"], r["splits"]
    what = ("r ← r + α·s_ℓ·d̂_a at every sentence position after block ℓ" if add
            else "r ← r − ⟨r, d̂_a⟩ d̂_a at every sentence position after block ℓ")
    prov = probe_provenance(
        loaded, suite.select(tasks), settings, spec.name, convention_of(loaded.model, loaded.tokenizer, settings),
        n_train_pairs=splits["train"].counts(), n_eval_pairs=splits["test"].counts(),
        intervention=what, directions="d_t^l of the activations probe (train pairs), normalised",
        alpha=alpha, random_directions=n_random, random_kind=random_kind, layer=layer,
        layer_choice=("fixed by the layer option" if fixed is not None else
                      "largest mean diagonal selectivity on the dev pairs"),
        layer_selectivity={str(k): v for k, v in r["sweep"].items()},
        scale={str(i): float(s) for i, s in enumerate(r["scale"])},
        scale_definition="s_l = RMS norm of the residual stream at layer l over the eval sentences' positions",
        site="hidden_states[l+1]: output of block l; the last layer after the final norm",
        bootstrap={"resamples": settings.bootstrap, "level": LEVEL, "paired": True, "unit": "eval pair"},
        rows=spec.spaces[0].rows,
        columns="task evaluated", perf="mean margin change (nats)", scorer=r["scorer"])
    spaces, diag_eval = _spaces_by_layer(r, spec, prov, settings, n_random)
    layers_table = pd.DataFrame([{"layer": ell, "scale": float(r["scale"][ell]),
                                  "dev_selectivity": r["sweep"].get(ell, np.nan),
                                  "eval_selectivity": diag_eval.get(ell, np.nan), "chosen": ell == layer}
                                 for ell in range(len(r["scale"]))])
    table = _causal_stats(r, spec, settings)
    res = ProbeResult((spec.name,), spaces=spaces, provenance=prov,
                      extra={"directions": r["directions"], "scale": r["scale"], "layer": layer})
    res.tables[f"stats/{spec.name}_layers.csv"] = (layers_table, prov)
    res.tables[spec.file("table")] = (table, dict(
        prov, cause=("gain of the row task's own accuracy" if add else
                     "drop of the row task's own accuracy"),
        within="mean fraction of pairs whose judgement flips, tasks of the row's group (row excluded)",
        isolate="1 − mean fraction of pairs whose judgement flips, tasks of other groups",
        random="the same under the random directions of the pool (averaged)",
        variance_share="d^T S d / tr S at the chosen layer (S: the residual stream's covariance over the eval "
                       "sentences' positions); _random: the pool's mean",
        test=("p: the row's own mean-margin effect against the pool's (one-sided prediction t test, k − 1 "
              "degrees of freedom); p_rank: its rank among the pool's, (1 + #random ≥ own) / (1 + k); q: "
              "Benjamini–Hochberg of p across rows; causal: q ≤ 0.05 and p_rank ≤ 0.05"),
        counts=causal_count(table)))
    return res


class _Intervener:
    """Scores pairs with one direction added (steering) or erased (erasure) at one layer, and draws each
    layer's pool of random control directions once."""

    def __init__(self, model: Any, scorer: Any, spec: "ProbeSpec", skip: int, alpha: float, scale: np.ndarray,
                 cov: np.ndarray, width: int, n_random: int, seed: int, random_kind: str) -> None:
        self.model, self.scorer, self.skip, self.alpha, self.scale = model, scorer, skip, alpha, scale
        self.cov, self.width, self.n_random, self.seed, self.random_kind = cov, width, n_random, seed, random_kind
        self.probe, self.add, self.sign = spec.name, spec.method == ADD, SIGN[spec.method]
        self.pools: dict[int, np.ndarray] = {}

    def score(self, ell: int, u: np.ndarray, pairs: Sequence[Any]) -> "pd.DataFrame":
        kw = {"add": self.alpha * self.scale[ell] * u} if self.add else {"erase": u}
        with intervene(self.model, ell, skip=self.skip, **kw):
            return self.scorer.score_pairs(pairs)

    def randoms(self, ell: int) -> np.ndarray:
        # one pool per layer, shared by every row: k scorings of the eval pairs in all, not T·k
        if ell not in self.pools:
            self.pools[ell] = random_directions(self.width, self.n_random, self.seed, POOL, ell,
                                                self.cov[ell] if self.random_kind == "covariance" else None)
        return self.pools[ell]


def _layer_sweep(iv: _Intervener, dev: "Suite", tasks: list[str], dirs: np.ndarray,
                 progress: bool) -> dict[int, float]:
    """Per layer, the mean selectivity on the dev pairs (a task's own margin change minus its random
    controls', signed so that larger is more selective): the layer choice's input."""
    L, n_random = dirs.shape[0], iv.n_random
    base_dev = {a: iv.scorer.score_pairs(dev.pairs_of(a)) for a in tasks}
    sweep: dict[int, float] = {}
    with progress_bar(f"{iv.probe}: layer sweep on dev pairs", L * len(tasks) * (1 + n_random),
                      show=progress) as advance:
        for ell in range(L):
            sel = []
            for i, a in enumerate(tasks):
                if not np.isfinite(dirs[ell, i]).all():
                    advance(1 + n_random)
                    continue
                pa, m0 = dev.pairs_of(a), base_dev[a]["margin"].to_numpy()
                own = float(np.mean(iv.score(ell, dirs[ell, i], pa)["margin"].to_numpy() - m0))
                ctrl = float(np.mean([np.mean(iv.score(ell, r, pa)["margin"].to_numpy() - m0)
                                      for r in iv.randoms(ell)]))
                sel.append(iv.sign * (own - ctrl))
                advance(1 + n_random)
            sweep[ell] = float(np.mean(sel)) if sel else float("nan")
    return sweep


def _intervened_scores(iv: _Intervener, pairs: Sequence[Any], tasks: list[str], dirs: np.ndarray,
                       layers: Sequence[int], progress: bool) -> tuple[dict, dict]:
    """At each of ``layers``, the eval pairs' scores under each task's direction (``changed``) and under
    each random direction of the pool (``random``, the same list for every row)."""
    changed: dict[int, dict[str, Any]] = {}
    rand: dict[int, dict[str, list]] = {}
    for ell in layers:
        changed[ell], rand[ell] = {}, {}
        with progress_bar(f"{iv.probe}: layer {ell}, tasks × tasks", len(tasks) + iv.n_random,
                          show=progress) as advance:
            pool = []
            for r in iv.randoms(ell):
                pool.append(iv.score(ell, r, pairs))
                advance(1)
            for i, a in enumerate(tasks):
                if np.isfinite(dirs[ell, i]).all():
                    changed[ell][a] = iv.score(ell, dirs[ell, i], pairs)
                    rand[ell][a] = pool
                advance(1)
    return changed, rand


def _spaces_by_layer(r: dict, spec: "ProbeSpec", prov: dict, settings: "ProbeSettings",
                     n_random: int) -> tuple[dict[str, Any], dict[int, float]]:
    """The probe's spaces at every scored layer (and under the plain names at the chosen one), and per
    layer the mean diagonal selectivity on the eval pairs."""
    tasks, groups, layer = r["tasks"], r["groups"], r["layer"]
    spaces: dict[str, Any] = {}
    diag_eval: dict[int, float] = {}
    sign = SIGN[spec.method]
    # as the registry declares them: the main space, a normalised one where declared (steering), the control
    main, *normalized, random = spec.spaces
    for ell in sorted(r["changed"]):
        pl = dict(prov, layer=ell)
        e = transfer_matrices(r["base"], r["changed"][ell], tasks, bootstrap=settings.bootstrap, seed=settings.seed)
        rnd = {a: _mean_table(ts) for a, ts in r["random"][ell].items()}
        c = transfer_matrices(r["base"], rnd, tasks, bootstrap=settings.bootstrap, seed=settings.seed)
        named = [(main, e[""], {}), (random, c[""], {"directions": f"{n_random} random unit directions "
                                                     "per row, averaged (seeded)"})]
        if normalized:
            named.insert(1, (normalized[0], e["_normalized"], {"normalised": "S / |S[a,a]|"}))
        for space, est, extra in named:
            name = space.name
            sp = TaskSpace(est.value, tasks, groups, name, dict(pl, **extra), est.low, est.high)
            spaces[f"{space.parts_folder}/layer{ell}"] = sp
            if ell == layer:
                spaces[name] = TaskSpace(est.value, tasks, groups, name, dict(pl, **extra), est.low, est.high)
        diag_eval[ell] = float(np.nanmean(sign * (np.diag(e[""].value) - np.diag(c[""].value))))
    return spaces, diag_eval


def _causal_stats(r: dict, spec: "ProbeSpec", settings: "ProbeSettings") -> "pd.DataFrame":
    """The per-row causal table at the chosen layer, with each direction's share of the residual
    stream's variance beside the control pool's."""
    tasks, layer = r["tasks"], r["layer"]
    table = causal_table(r["base"], r["changed"][layer], r["random"][layer], tasks, r["groups"], sign=SIGN[spec.method],
                         bootstrap=settings.bootstrap, seed=settings.seed)
    table.insert(2, "layer", layer)
    table.insert(2, "intervention", spec.name)
    # how much of the residual stream's variance each direction holds (what erasing it removes), beside
    # the control pool's mean: a direction that holds far more variance than the pool's is no fair match
    idx = {t: i for i, t in enumerate(tasks)}
    table["variance_share"] = variance_share(r["directions"][layer][[idx[t] for t in table["task"]]],
                                             r["covariance"][layer])
    table["variance_share_random"] = float(np.mean(variance_share(r["pool"][layer], r["covariance"][layer])))
    return table


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``steering`` probe on one checkpoint (options ``alpha``, ``random_directions``, ``layer``,
    ``layers``)."""
    (spec,) = runner_probes(run, kinds, ctx)
    return _run(loaded, suite, settings, ctx, spec)


def run_erasure(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
                kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``erasure`` probe on one checkpoint (options ``random_directions``, ``layer``, ``layers``)."""
    (spec,) = runner_probes(run_erasure, kinds, ctx)
    return _run(loaded, suite, settings, ctx, spec)
