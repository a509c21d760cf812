"""The first-order steering estimate (``steering-estimate``): ``∂m_b/∂α`` at α = 0, without any intervened
scoring pass.

With the ``steering`` probe's notation (d̂_a^ℓ the activations probe's unit direction, s_ℓ the residual
stream's RMS norm over the eval sentences, every sentence position shifted, not the prefix)::

    G_ℓ(x)      = Σ_positions ∇_{r_ℓ} log p(x)            one backward pass per sentence, down to layer ℓ
    Ŝ_ℓ[a,b]    = mean_i  s_ℓ · ⟨G_ℓ(good_i) − G_ℓ(bad_i), d̂_a^ℓ⟩     (b's eval pairs; nats per unit α)
    R̂_ℓ[a,b]    = the same along the row's random directions (the steering probe's, same seeds), averaged
    Ŝ_ℓ / |Ŝ_ℓ[a,a]|                                          normalised, as for transfer

Why: steering's exact map costs ``T·(1+k)`` scorings of every eval pair per layer; the gradient with
respect to a shift of the residual stream is one backward pass per eval sentence for *all* rows and
*all* layers at once (a zero shift ``δ_ℓ`` is added at every layer's site, and ``∂/∂δ_ℓ`` at δ = 0 is
each layer's own derivative). ``α·Ŝ`` is the steering probe's ``S`` to first order in α.

No parameter gradient is computed (``requires_grad`` is off for every parameter during the pass and
restored after). The layer of the main spaces is chosen on the dev split as for steering (largest mean
``Ŝ[a,a] − R̂[a,a]``; ``--layer`` fixes it); every layer gets its ``…_by_layer/layer<ℓ>`` spaces.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from ...progress import progress_bar
from ...scoring import Scorer, batch_logprobs, length_batches
from ...scoring.batching import backward_batch_tokens
from ...spaces import TaskSpace
from ..causal import (
    POOL,
    check_layer,
    choose_layer,
    frozen,
    n_layers,
    prefix_skip,
    random_directions,
    residual_statistics,
    shift_recorder,
    split_sentences,
    unit_directions,
)
from ..common import DIFFERENCES, convention_of, probe_provenance, probe_tasks, provided
from ..finetune.evaluation import transfer_matrices
from ..registry import runner_probes
from ..result import ProbeResult
from ..settings import LEVEL

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import RunContext, SpaceSpec


def shift_gradients(model: Any, tokenizer: Any, sentences: Sequence[str], settings: "ProbeSettings",
                    layers: Sequence[int] | None = None, progress: bool = False) -> dict[int, np.ndarray]:
    """``{ℓ: G}`` with ``G[j] = Σ_positions ∇_{r_ℓ} log p(sentences[j])`` (``[n, width]``, float64): the
    gradient of each sentence's score (the scorer's convention: prefix, reduction) with respect to one
    shift of the residual stream after layer ℓ at every sentence position (not the prefix)."""
    L = n_layers(model)
    layers = list(range(L)) if layers is None else list(layers)
    scorer = Scorer(model, tokenizer, reduction=settings.reduction, prefix=settings.prefix,
                    batch_tokens=settings.batch_tokens, share_prefix=False)
    head = scorer.head
    pad, token_id = getattr(tokenizer, "pad_token_id", None), scorer.convention.prefix_token_id
    pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)     # as the scorer pads
    skip = prefix_skip(tokenizer, settings.prefix)
    uniq = list(dict.fromkeys(sentences))
    ids = scorer.encode(uniq)
    width = None
    out: dict[int, np.ndarray | None] = {ell: None for ell in layers}
    keep = [j for j, x in enumerate(ids) if len(x) > 1]          # one token: nothing is scored, gradient 0
    with frozen(model), progress_bar("steering-estimate: gradients", len(keep), show=progress) as advance:
        # a backward keeps every layer's activations: batches of at most BACKWARD_TOKENS padded tokens
        for batch in length_batches([len(ids[j]) - 1 for j in keep], backward_batch_tokens(settings.batch_tokens)):
            rows = [keep[k] for k in batch]
            with shift_recorder(model, layers, skip) as rec, torch.enable_grad():
                lp = batch_logprobs(model, [ids[j] for j in rows], reduction=settings.reduction, head=head,
                                    pad_id=pad_id)
                deltas = [rec[ell][0] for ell in layers]
                # rows are independent: ∂(Σ_rows lp)/∂δ[row] = ∂lp[row]/∂δ[row]
                grads = torch.autograd.grad(lp.sum(), deltas)
            for ell, g in zip(layers, grads):
                g = g.detach().to("cpu", torch.float64).numpy()
                if out[ell] is None:
                    width = g.shape[1]
                    out[ell] = np.zeros((len(uniq), width))
                out[ell][rows] = g
            advance(len(rows))
    if width is None:
        width = int(model.config.hidden_size)
    index = {s: j for j, s in enumerate(uniq)}
    order = [index[s] for s in sentences]
    return {ell: (g if g is not None else np.zeros((len(uniq), width)))[order] for ell, g in out.items()}


def pair_gradients(model: Any, tokenizer: Any, pairs: Sequence[Any], settings: "ProbeSettings",
                   progress: bool = False) -> dict[int, np.ndarray]:
    """``{ℓ: [n_pairs, width]}``: ``G_ℓ(good_i) − G_ℓ(bad_i)``, the derivative of each pair's margin with
    respect to one shift of the residual stream after layer ℓ (every layer)."""
    sents = [s for p in pairs for s in (p.good, p.bad)]
    g = shift_gradients(model, tokenizer, sents, settings, progress=progress)
    return {ell: x[0::2] - x[1::2] for ell, x in g.items()}


def estimates(grads: np.ndarray, directions: np.ndarray, scale: float) -> np.ndarray:
    """``[rows, pairs]``: ``s_ℓ·⟨g_i, d̂_a⟩`` for every direction (row) and pair (a NaN direction: NaN row)."""
    return scale * (np.asarray(directions, dtype=np.float64) @ grads.T)


def _tables(pairs: Sequence[Any], values: dict[str, np.ndarray]) -> tuple["pd.DataFrame", dict[str, "pd.DataFrame"]]:
    """Per-pair tables in the shape the transfer matrices read: a zero base and, per row, its estimate as
    the margin change (so the matrices, the normalisation and the paired bootstrap are transfer's)."""
    base = pd.DataFrame({"task": [p.task for p in pairs], "pair_id": [p.pair_id for p in pairs],
                         "margin": 0.0, "correct": 0.0})
    out = {}
    for a, v in values.items():
        if np.isfinite(v).all():
            t = base.copy()
            t["margin"] = v
            out[a] = t
    return base, out


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``steering-estimate`` probe on one checkpoint: the estimate, its normalised form and its random
    control at every layer (``…_by_layer/layer<ℓ>``) and at the chosen layer;
    ``stats/steering_estimate_layers.csv``."""
    (spec,) = runner_probes(run, kinds, ctx)
    n_random = int(ctx.options["random_directions"])
    random_kind = str(ctx.options["random_kind"])
    fixed = ctx.options["layer"]
    needed = ["train", "test"] + (["dev"] if fixed is None else [])
    splits, tasks, _ = probe_tasks(suite, settings, needed)
    test = splits["test"]
    model, tok = loaded.model, loaded.tokenizer
    L = n_layers(model)
    check_layer(fixed, L)
    dirs = unit_directions(provided(DIFFERENCES, loaded, suite, settings), tasks)
    width = dirs.shape[2]
    stats = residual_statistics(model, tok, split_sentences(test), prefix=settings.prefix,
                                batch_tokens=settings.batch_tokens, covariance=random_kind == "covariance")
    scale = stats["scale"]
    groups = [suite.group_of(t) for t in tasks]
    # the same shared pool per layer as the exact probes (one set of directions for every row)
    pool = {ell: random_directions(width, n_random, settings.seed, POOL, ell,
                                   stats["covariance"][ell] if random_kind == "covariance" else None)
            for ell in range(L)}
    rand = {(a, ell): pool[ell] for a in tasks for ell in range(L)}

    sweep = _dev_sweep(model, tok, splits["dev"], tasks, dirs, rand, scale, settings, ctx) if fixed is None else {}
    layer = fixed if fixed is not None else choose_layer(sweep)

    pairs = test.pairs
    grads = pair_gradients(model, tok, pairs, settings, progress=ctx.progress)
    prov = probe_provenance(
        loaded, suite.select(tasks), settings, spec.name,
        convention_of(model, tok, settings), n_train_pairs=splits["train"].counts(), n_eval_pairs=test.counts(),
        estimate="s_l · mean_i <Σ_pos ∇_{r_l} m_b,i, d̂_a^l> = ∂m_b/∂α at α = 0 (nats per unit α)",
        directions="d_t^l of the activations probe (train pairs), normalised", random_directions=n_random, random_kind=random_kind,
        layer=layer, layer_choice=("fixed by the layer option" if fixed is not None else
                                   "largest mean diagonal selectivity on the dev pairs"),
        layer_selectivity={str(k): v for k, v in sweep.items()},
        scale={str(i): float(s) for i, s in enumerate(scale)},
        site="hidden_states[l+1]: output of block l; the last layer after the final norm",
        bootstrap={"resamples": settings.bootstrap, "level": LEVEL, "paired": True, "unit": "eval pair"},
        rows="task whose direction is added", columns="task evaluated", perf="d(mean margin)/dα")
    spaces: dict[str, Any] = {}
    layer_rows = []
    for ell in range(L):
        own = {a: estimates(grads[ell], dirs[ell, i][None], scale[ell])[0] for i, a in enumerate(tasks)}
        ctrl = {a: estimates(grads[ell], rand[a, ell], scale[ell]).mean(0) for a in tasks}
        e, c = _layer_spaces(spec.spaces, spaces, pairs, own, ctrl, tasks, groups, dict(prov, layer=ell), settings,
                             n_random, ell, chosen=ell == layer)
        layer_rows.append({"layer": ell, "scale": float(scale[ell]), "dev_selectivity": sweep.get(ell, np.nan),
                           "eval_selectivity": float(np.nanmean(np.diag(e[""].value) - np.diag(c[""].value))),
                           "chosen": ell == layer})
    res = ProbeResult((spec.name,), spaces=spaces, provenance=prov,
                      extra={"pair_gradients": grads, "directions": dirs, "scale": scale, "layer": layer})
    res.tables[f"stats/{spec.spaces[0].name}_layers.csv"] = (pd.DataFrame(layer_rows), prov)
    return res


def _dev_sweep(model: Any, tok: Any, dev: "Suite", tasks: list[str], dirs: np.ndarray, rand: dict,
               scale: Sequence[float], settings: "ProbeSettings", ctx: "RunContext") -> dict[int, float]:
    """Per layer, the mean selectivity on the dev pairs: a task's own estimate minus its random
    control's, averaged over the tasks with a finite direction (the layer choice's input)."""
    dev_g = pair_gradients(model, tok, dev.pairs, settings, progress=ctx.progress)
    dev_task = np.array([p.task for p in dev.pairs])
    sweep: dict[int, float] = {}
    for ell in range(dirs.shape[0]):
        sel = []
        for i, a in enumerate(tasks):
            if not np.isfinite(dirs[ell, i]).all():
                continue
            g = dev_g[ell][dev_task == a]
            own = estimates(g, dirs[ell, i][None], scale[ell]).mean()
            ctrl = estimates(g, rand[a, ell], scale[ell]).mean()
            sel.append(own - ctrl)
        sweep[ell] = float(np.mean(sel)) if sel else float("nan")
    return sweep


def _layer_spaces(declared: Sequence["SpaceSpec"], spaces: dict, pairs: Sequence[Any], own: dict, ctrl: dict,
                  tasks: list[str], groups: list[str], prov: dict, settings: "ProbeSettings", n_random: int, ell: int,
                  chosen: bool) -> tuple[dict, dict]:
    """The estimate, its normalised form and its random control (``declared``: the probe's three spaces, as
    the registry declares them) at layer ``ell`` into ``spaces`` (also under the plain names for the chosen
    layer); returns the estimate's and the control's transfer matrices."""
    base, t_own = _tables(pairs, own)
    _, t_ctrl = _tables(pairs, ctrl)
    e = transfer_matrices(base, t_own, tasks, bootstrap=settings.bootstrap, seed=settings.seed)
    c = transfer_matrices(base, t_ctrl, tasks, bootstrap=settings.bootstrap, seed=settings.seed)
    estimate, normalized, random = declared
    for space, est, extra in ((estimate, e[""], {}),
                              (normalized, e["_normalized"], {"normalised": "Ŝ / |Ŝ[a,a]|"}),
                              (random, c[""], {"directions": f"{n_random} random unit directions per "
                                                             "row, averaged (seeded)"})):
        name = space.name
        spaces[f"{space.parts_folder}/layer{ell}"] = TaskSpace(est.value, tasks, groups, name, dict(prov, **extra),
                                                               est.low, est.high)
        if chosen:
            spaces[name] = TaskSpace(est.value, tasks, groups, name, dict(prov, **extra), est.low, est.high)
    return e, c
