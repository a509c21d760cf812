"""Interventions on the residual stream, shared by the causal probes (``steering``, ``erasure``,
``steering-estimate``): where the residual stream after block ℓ is, how to add a vector to it or project
a direction out of it with a plain forward hook, its scale ``s_ℓ``, the task and random directions, the
layer choice on the dev split, and the cause / isolate table.

Sites. Layer ℓ is what the ``activations`` probe reads as ``hidden_states[ℓ + 1]``: the output of block ℓ
for ℓ < L − 1 and, for the last layer, the backbone's output (``transformers`` applies the final norm
there, so the last layer is intervened on where the unembedding reads it — the same state the direction
``d^{L−1}`` was measured on). The blocks are found from the model, not from a table of architectures:
the ``ModuleList`` under the backbone (``get_decoder()``, else ``base_model``) whose length is
``config.num_hidden_layers`` (GPT-2's ``h``, GPT-NeoX's ``layers``, Llama's ``layers``).

Positions. An intervention changes every *sentence* position of every row: the prefix position (BOS, else
EOS; absent with ``prefix="none"``) is left alone, as the activations probe leaves it out of ``d``. With
prefix sharing a sentence runs as a prefix call and a continuation on its KV cache; the hook reads where
each call starts (:func:`taskspace.scoring.call_start`), so the same positions change as in one call over
the whole sentence, and an intervened scoring shares prefixes as a plain one does. Padded positions are
changed too; under a causal model nothing scored reads them.

The hooks are removed in ``finally``; no parameter is touched, so the model is restored bit for bit.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import t as student_t

from ..errors import InputError, TaskspaceError
from ..multiple_testing import bh
from ..scoring import call_start, encode, length_batches, quiet_transformers, resolve_prefix
from ..scoring.convention import BATCH_TOKENS
from .finetune.evaluation import bootstrap_counts
from .gradient.masks import task_seed
from .settings import LEVEL

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from ..suites.schema import Suite

#: the seed label of the random control directions (one set per task and layer, shared by the three
#: probes so that steering, erasure and the estimate are controlled by the same directions)
RANDOM_LABEL = "causal-random"


# -- where the residual stream is ----------------------------------------------------------------------

def backbone_of(model: Any) -> Any:
    """The transformer without its output head (``base_model``; the model itself if it has none)."""
    base = getattr(model, "base_model", None)
    return model if base is None else base


def block_list(model: Any) -> Any:
    """The model's ``ModuleList`` of transformer blocks: the shallowest one under the decoder whose length
    is ``config.num_hidden_layers`` (GPT-2, GPT-NeoX, Llama-style and most causal LMs)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    root = None
    if hasattr(model, "get_decoder"):
        try:
            root = model.get_decoder()
        except (AttributeError, NotImplementedError):
            root = None
    root = root if root is not None else backbone_of(model)
    found = [(name.count("."), name, m) for name, m in root.named_modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and (n is None or len(m) == n)]
    if not found:
        raise TaskspaceError(f"cannot find the transformer blocks of {type(model).__name__} (no ModuleList of "
                             f"config.num_hidden_layers = {n} modules)")
    return min(found, key=lambda x: (x[0], x[1]))[2]


def residual_sites(model: Any) -> list[Any]:
    """One module per layer whose output is the residual stream ``hidden_states[ℓ + 1]``: blocks
    ``0 … L−2`` and, for layer ``L−1``, the backbone (its output has the final norm applied)."""
    blocks = list(block_list(model))
    return blocks[:-1] + [backbone_of(model)]


def n_layers(model: Any) -> int:
    return len(block_list(model))


def _with_state(out: Any, fn: Callable[["torch.Tensor"], "torch.Tensor"]) -> Any:
    """A module output with its hidden states (a tensor, the first item of a tuple, or a model output's
    ``last_hidden_state``) replaced by ``fn(states)``."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, tuple):
        return (fn(out[0]),) + tuple(out[1:])
    if hasattr(out, "last_hidden_state"):
        out["last_hidden_state"] = fn(out.last_hidden_state)
        return out
    raise TaskspaceError(f"cannot intervene on a module output of type {type(out).__name__}")


def _sentence_part(h: "torch.Tensor", skip: int, fn: Callable[["torch.Tensor"], "torch.Tensor"]) -> "torch.Tensor":
    """``h`` with positions ``skip:`` replaced by ``fn(h[:, skip:])`` (the prefix positions untouched)."""
    if skip == 0:
        return fn(h)
    return torch.cat([h[:, :skip], fn(h[:, skip:])], dim=1)


@contextmanager
def intervene(model: Any, layer: int, *, add: "np.ndarray | torch.Tensor | None" = None,
              erase: "np.ndarray | torch.Tensor | None" = None, skip: int = 1) -> Iterator[None]:
    """Inside the block, the residual stream after layer ``layer`` becomes, at every sentence position from
    ``skip`` on (``skip=1``: the prefix token is left alone; a continuation call on a prefix cache counts its
    positions from where it starts)::

        add:    r ← r + v                        (steering: v = α·s_ℓ·d̂)
        erase:  r ← r − ⟨r, u⟩ u                 (u a unit vector: the direction is projected out)

    A plain forward hook, removed on exit."""
    if (add is None) == (erase is None):
        raise ValueError("give exactly one of add= and erase=")
    site = residual_sites(model)[layer]
    vec = torch.as_tensor(add if add is not None else erase)
    cache: dict[tuple, torch.Tensor] = {}

    def cast(h: torch.Tensor) -> torch.Tensor:
        key = (h.dtype, h.device)
        if key not in cache:
            cache[key] = vec.to(device=h.device, dtype=h.dtype)
        return cache[key]

    if add is not None:
        def change(x: torch.Tensor) -> torch.Tensor:
            return x + cast(x)
    else:
        def change(x: torch.Tensor) -> torch.Tensor:
            u = cast(x)
            return x - (x @ u).unsqueeze(-1) * u

    def hook(module: Any, args: Any, out: Any) -> Any:
        return _with_state(out, lambda h: _sentence_part(h, max(0, skip - call_start()), change))

    handle = site.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def shift_recorder(model: Any, layers: Sequence[int], skip: int = 1) -> Iterator[dict[int, list]]:
    """For gradients with respect to a shift of the residual stream: at each of ``layers`` every forward
    call adds a fresh zero leaf ``δ`` of shape ``[batch, width]`` (requires grad) to every position from
    ``skip`` on of each row, and appends it to ``recorded[layer]``; ``∂f/∂δ[row]`` is then
    ``Σ_positions ∇_{r_ℓ} f`` of that row. Adding zeros changes no number."""
    sites = residual_sites(model)
    recorded: dict[int, list] = {layer: [] for layer in layers}
    handles = []

    def make(layer: int) -> Callable:
        def hook(module: Any, args: Any, out: Any) -> Any:
            def shift(h: torch.Tensor) -> torch.Tensor:
                d = torch.zeros(h.shape[0], h.shape[-1], dtype=h.dtype, device=h.device, requires_grad=True)
                recorded[layer].append(d)
                return _sentence_part(h, skip, lambda x: x + d.unsqueeze(1))
            return _with_state(out, shift)
        return hook

    try:
        for layer in layers:
            handles.append(sites[layer].register_forward_hook(make(layer)))
        yield recorded
    finally:
        for h in handles:
            h.remove()


@contextmanager
def frozen(model: Any) -> Iterator[None]:
    """No parameter gradients inside the block (``requires_grad`` off, restored on exit), eval mode."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    model.eval()
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)


# -- scale and directions --------------------------------------------------------------------------------

def prefix_skip(tokenizer: Any, prefix: str) -> int:
    """1 when sentences are encoded with a prefix token (it is never intervened on), else 0."""
    return 1 if resolve_prefix(tokenizer, prefix)[1] is not None else 0


def residual_statistics(model: Any, tokenizer: Any, sentences: Sequence[str], *, prefix: str = "bos",
                        batch_tokens: int = BATCH_TOKENS, covariance: bool = True) -> dict[str, np.ndarray]:
    """The residual stream after each block over every sentence position of ``sentences`` (the prefix
    position left out: its state is often far larger than any other, and it is never intervened on):
    ``scale`` = ``s_ℓ = sqrt(mean ‖r_ℓ‖²)`` (``[L]``) and, with ``covariance``, ``covariance`` = the
    centred covariance of ``r_ℓ`` (``[L, W, W]``, float64) — what random control directions are matched to
    and what an erased direction's share of variance is measured against. Forward passes only."""
    _, token_id = resolve_prefix(tokenizer, prefix)
    skip = 1 if token_id is not None else 0
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)
    device = next(model.parameters()).device
    ids = [x for x in encode(tokenizer, list(dict.fromkeys(sentences)), token_id) if len(x) > skip]
    L = n_layers(model)
    total = torch.zeros(L, dtype=torch.float64)
    sums: list[Any] = [None] * L
    outer: list[Any] = [None] * L
    count = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in length_batches([len(x) for x in ids], batch_tokens):
                rows = [ids[j] for j in batch]
                width = max(len(x) for x in rows)
                inp = torch.full((len(rows), width), pad_id, dtype=torch.long)
                for r, x in enumerate(rows):
                    inp[r, : len(x)] = torch.tensor(x)
                with quiet_transformers():
                    hs = backbone_of(model)(input_ids=inp.to(device), output_hidden_states=True,
                                            use_cache=False).hidden_states
                lens = torch.tensor([len(x) for x in rows], device=device)
                pos = torch.arange(width, device=device)
                sel = (pos.unsqueeze(0) >= skip) & (pos.unsqueeze(0) < lens.unsqueeze(1))
                for layer, h in enumerate(hs[1:]):
                    x = h[sel].to(torch.float64)
                    total[layer] += x.pow(2).sum().cpu()
                    if covariance:
                        s1, s2 = x.sum(0).cpu(), (x.T @ x).cpu()
                        sums[layer] = s1 if sums[layer] is None else sums[layer] + s1
                        outer[layer] = s2 if outer[layer] is None else outer[layer] + s2
                count += int(sel.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise InputError("no sentence tokens to measure the residual stream's scale on", field="tasks")
    out = {"scale": np.sqrt(total.numpy() / count)}
    if covariance:
        mean = np.stack([v.numpy() for v in sums]) / count
        out["covariance"] = np.stack([o.numpy() for o in outer]) / count - mean[:, :, None] * mean[:, None, :]
    return out


def residual_scale(model: Any, tokenizer: Any, sentences: Sequence[str], *, prefix: str = "bos",
                   batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
    """``s_ℓ = sqrt(mean ‖r_ℓ‖²)`` per layer (float64, ``[L]``); :func:`residual_statistics` without the
    covariance."""
    return residual_statistics(model, tokenizer, sentences, prefix=prefix, batch_tokens=batch_tokens,
                               covariance=False)["scale"]


def variance_share(directions: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """``d̂ᵀ Σ d̂ / tr Σ`` for each unit direction (rows of ``directions``, NaN rows stay NaN): the share of
    the residual stream's variance that lies along it — what erasing it removes."""
    d = np.asarray(directions, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.einsum("nw,wv,nv->n", d, covariance, d) / float(np.trace(covariance))


def unit_directions(diffs: Mapping[str, Any], tasks: Sequence[str]) -> np.ndarray:
    """``d̂_t^ℓ = d_t^ℓ / ‖d_t^ℓ‖`` as an array ``[layers, tasks, width]`` (float64); a zero difference (only
    identical pairs) has no direction: a NaN row."""
    stack = np.stack([np.asarray(diffs[t], dtype=np.float64) for t in tasks], axis=1)    # [L, T, W]
    norms = np.linalg.norm(stack, axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = stack / norms
    out[~np.isfinite(out)] = np.nan
    return out


#: the control pool's task label: one pool of random directions per layer, shared by every row (a random
#: direction's effect on task b does not depend on the row it is paired with)
POOL = ""


#: how control directions are drawn: matched to the residual stream's covariance, or isotropic
RANDOM_KINDS = ("covariance", "isotropic")


def random_directions(width: int, n: int, seed: int, task: str, layer: int,
                      covariance: np.ndarray | None = None) -> np.ndarray:
    """``n`` random unit vectors ``[n, width]`` (float64), seeded by (seed, task, layer): the control
    directions at ``layer``, the same in every causal probe. Isotropic Gaussian, normalised; with
    ``covariance`` (``[W, W]``), drawn from ``N(0, Σ)`` and normalised, so they fall where the residual
    stream varies, as a task's own direction does — an isotropic direction mostly points where a
    strongly anisotropic residual stream has almost no variance, a weak control."""
    rng = np.random.default_rng(task_seed(seed, f"{RANDOM_LABEL}\x00{task}\x00{layer}"))
    v = rng.standard_normal((n, width))
    if covariance is not None:
        lam, u = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
        v = (v * np.sqrt(np.clip(lam, 0.0, None))) @ u.T
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def check_layer(layer: int | None, n: int) -> None:
    if layer is not None and not 0 <= layer < n:
        raise InputError(f"layer must be between 0 and {n - 1} for this model, got {layer}", field="layer")


def choose_layer(selectivity: Mapping[int, float]) -> int:
    """The layer with the largest mean diagonal selectivity (NaN never wins; the first on a tie)."""
    finite = {k: v for k, v in selectivity.items() if np.isfinite(v)}
    if not finite:
        raise TaskspaceError("no layer has a finite diagonal selectivity on the dev pairs (no task has a direction)")
    return max(finite, key=lambda k: (finite[k], -k))


# -- the cause / isolate table -----------------------------------------------------------------------------

def causal_table(base: "pd.DataFrame", changed: Mapping[str, "pd.DataFrame"],
                 random: Mapping[str, Sequence["pd.DataFrame"]], tasks: Sequence[str], groups: Sequence[str],
                 *, sign: int, bootstrap: int, seed: int, level: float = LEVEL, alpha: float = 0.05) -> "pd.DataFrame":
    """Per row task a, RAVEL's scores of one intervention (``changed[a]``: the eval pairs of every task
    scored with it; ``random[a]``: the same under each random direction of the control pool), with
    bootstrap intervals over pairs (each column task resampled on its own) and the random control beside
    each::

        cause    = sign · (acc_a(changed) − acc_a)      steering: the gain (sign +1); erasure: the drop (−1)
        within   = mean_{b ≠ a, group(b) = group(a)} flip_b    how much a's own group moves
        isolate  = 1 − mean_{group(b) ≠ group(a)} flip_b       how little the other groups move

    ``flip_b`` = the fraction of b's eval pairs whose judgement (margin > 0) changes; random: averaged
    over the random directions. ``selectivity`` = cause − cause_random, with a *paired* interval (the same
    resampled pairs in both). The test of a row: ``effect`` = sign · its own mean-margin change, ranked
    against the same under each of the k random directions. Two p-values: ``p_rank = (1 + #{random ≥
    own}) / (1 + k)``, exact but coarse (never below ``1 / (1 + k)``), and ``p``, the one-sided prediction
    test of the own effect against the pool, ``t = (own − mean) / (sd · sqrt(1 + 1/k))`` on ``k − 1``
    degrees of freedom (exact when the pool's effects are normal; continuous, so Benjamini–Hochberg over
    many rows can pass: with the rank p alone, 19 directions would let a row pass only if every row sat at
    1/20). ``q`` = Benjamini–Hochberg of ``p`` across the rows; ``causal`` = q ≤ ``alpha`` and the rank p
    ≤ ``alpha`` too where the pool allows it (k ≥ 19), so a parametric tail alone never decides. NaN where a
    has no direction or no task qualifies."""
    rv = _Ravel(base, tasks, groups, sign=sign, bootstrap=bootstrap, seed=seed, level=level)
    df = pd.DataFrame([rv.row(i, changed, random) for i in range(len(tasks))])
    df["q"] = bh(df["p"].to_list())
    rank_ok = (df["p_rank"] <= alpha) | (1.0 / (1 + df["n_random"]) > alpha)
    df["causal"] = (df["q"] <= alpha) & rank_ok
    return df


def pool_p(own: float, pool: Sequence[float]) -> float:
    """One-sided p of ``own`` exceeding a new draw from the pool's distribution: the prediction t test,
    ``t = (own − mean) / (sd · sqrt(1 + 1/k))`` on ``k − 1`` degrees of freedom (NaN with k < 3 or a
    constant pool)."""
    x = np.asarray(pool, dtype=np.float64)
    k = x.size
    sd = float(x.std(ddof=1)) if k >= 3 else 0.0
    if k < 3 or not np.isfinite(own) or sd <= 0:
        return float("nan")
    return float(student_t.sf((own - float(x.mean())) / (sd * np.sqrt(1 + 1 / k)), k - 1))


class _Ravel:
    """The pieces of :func:`causal_table`: each column task's eval pairs and bootstrap counts, and the
    baseline's judgements and margins."""

    def __init__(self, base: "pd.DataFrame", tasks: Sequence[str], groups: Sequence[str], *, sign: int,
                 bootstrap: int, seed: int, level: float) -> None:
        self.tasks, self.groups, self.sign, self.bootstrap = tasks, groups, sign, bootstrap
        task_col = base["task"].to_numpy()
        self.cols = {b: np.flatnonzero(task_col == b) for b in tasks}
        self.counts = {b: bootstrap_counts(len(self.cols[b]), bootstrap, seed, b) for b in tasks} if bootstrap else {}
        self.base_c = base["correct"].to_numpy(np.float64)
        self.base_m = base["margin"].to_numpy(np.float64)
        self.q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)

    def _nan_reps(self) -> np.ndarray:
        return np.full(max(self.bootstrap, 1), np.nan)

    def interval(self, reps: np.ndarray) -> tuple[float, float]:
        return ((np.nan, np.nan) if not self.bootstrap or not np.isfinite(reps).all()
                else tuple(np.percentile(reps, self.q)))

    def mean_of(self, x: np.ndarray, b: str) -> tuple[float, np.ndarray]:
        """The mean of ``x`` over task b's eval pairs, and its bootstrap replicates."""
        idx = self.cols[b]
        point = float(x[idx].mean()) if len(idx) else np.nan
        reps = self.counts[b] @ x[idx] / len(idx) if self.bootstrap and len(idx) else self._nan_reps()
        return point, reps

    def stats(self, tables: Sequence["pd.DataFrame"], i: int) -> dict[str, tuple[float, np.ndarray]]:
        """``cause``, ``within`` and ``isolate`` of row ``i`` under ``tables`` (averaged over them), each
        as (point, bootstrap replicates)."""
        tasks, groups, base_c = self.tasks, self.groups, self.base_c
        a = tasks[i]
        dacc = np.mean([t["correct"].to_numpy(np.float64) - base_c for t in tables], axis=0)
        flip = np.mean([(t["correct"].to_numpy(np.float64) != base_c).astype(np.float64) for t in tables], axis=0)
        same = [b for b, g in zip(tasks, groups) if b != a and g == groups[i]]
        other = [b for b, g in zip(tasks, groups) if g != groups[i]]
        p, r = self.mean_of(dacc, a)
        out = {"cause": (self.sign * p + 0.0, self.sign * r + 0.0)}   # + 0.0: no "-0.0" in the table
        for name, bs, f in (("within", same, lambda v: v), ("isolate", other, lambda v: 1.0 - v)):
            if not bs:
                out[name] = (np.nan, self._nan_reps())
                continue
            parts = [self.mean_of(flip, b) for b in bs]
            out[name] = (f(float(np.mean([x[0] for x in parts]))), f(np.mean([x[1] for x in parts], axis=0)))
        return out

    def effect(self, table: "pd.DataFrame", a: str) -> float:
        """sign · the mean margin change of task a's own eval pairs under ``table``."""
        cols = self.cols[a]
        return float(self.sign * np.mean(table["margin"].to_numpy(np.float64)[cols] - self.base_m[cols]))

    def row(self, i: int, changed: Mapping[str, "pd.DataFrame"],
            random: Mapping[str, Sequence["pd.DataFrame"]]) -> dict[str, Any]:
        """The table's row of task ``i``: its scores and intervals, its random control's, its selectivity
        and its rank test."""
        a, g = self.tasks[i], self.groups[i]
        row: dict[str, Any] = {"task": a, "group": g, "n_eval_pairs": len(self.cols[a])}
        own = self.stats([changed[a]], i) if a in changed else None
        rnd = self.stats(list(random.get(a, ())), i) if random.get(a) else None
        for key, st in (("", own), ("_random", rnd)):
            for name in ("cause", "within", "isolate"):
                p, reps = st[name] if st else (np.nan, self._nan_reps())
                lo, hi = self.interval(reps)
                row.update({f"{name}{key}": p, f"{name}{key}_low": lo, f"{name}{key}_high": hi})
        if own and rnd:
            lo, hi = self.interval(own["cause"][1] - rnd["cause"][1])
            row.update(selectivity=own["cause"][0] - rnd["cause"][0], selectivity_low=lo, selectivity_high=hi)
            mine = self.effect(changed[a], a)
            pool = [self.effect(t, a) for t in random[a]]
            row.update(effect=mine, effect_random_mean=float(np.mean(pool)), n_random=len(pool),
                       p_rank=(1 + sum(x >= mine for x in pool)) / (1 + len(pool)), p=pool_p(mine, pool))
        else:
            row.update(selectivity=np.nan, selectivity_low=np.nan, selectivity_high=np.nan, effect=np.nan,
                       effect_random_mean=np.nan, n_random=0, p_rank=np.nan, p=np.nan)
        return row


def causal_count(table: "pd.DataFrame", alpha: float = 0.05) -> dict[str, Any]:
    """How many rows a causal table calls causal, beside what the null would give: ``n_tested``,
    ``n_p`` (pool p ≤ alpha, uncorrected), ``n_rank`` (rank p ≤ alpha, uncorrected) and ``expected_p``
    (alpha · n_tested under the null), ``n_causal`` (Benjamini–Hochberg q ≤ alpha with the rank p ≤ alpha;
    under the null at most about ``alpha`` rows in expectation are called causal at all), ``min_p`` (the
    smallest rank p the pool allows)."""
    p = table["p"].to_numpy(np.float64)
    rank = table["p_rank"].to_numpy(np.float64)
    tested = np.isfinite(p)
    k = int(table["n_random"].max()) if len(table) else 0
    return {"n_tested": int(tested.sum()), "n_p": int((p[tested] <= alpha).sum()),
            "n_rank": int((rank[np.isfinite(rank)] <= alpha).sum()),
            "expected_p": float(alpha * tested.sum()), "n_causal": int(table["causal"].sum()),
            "min_p": 1.0 / (1 + k) if k else float("nan")}


def split_sentences(suite: "Suite") -> list[str]:
    """The unique sentences of a suite's pairs, in order."""
    return list(dict.fromkeys(s for p in suite.pairs for s in (p.good, p.bad)))
