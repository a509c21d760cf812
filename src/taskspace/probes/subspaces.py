"""Trained interchange subspaces (the machinery of ``das`` and ``mdas``): the base and source runs of a set of
counterfactual pairs, an orthonormal subspace trained by interchange intervention, scoring with any subspace,
the recovered fraction of the margin, and the random subspace pool.

Objective. ``R`` (``k × width``, orthonormal rows: ``torch.nn.utils.parametrizations.orthogonal``) is trained,
every model parameter frozen, on the *cause* pairs to make the intervened base run's outcome margin equal the
source run's, and (MDAS) on the *isolate* pairs to leave the base run's margin where it was::

    L(R) = mean_cause (m_int − m_source)² / mean_cause (m_source − m_base)²
         + λ · mean_isolate (m_int − m_base)² / mean_isolate (m_source − m_base)²

(each denominator over the whole pool, a constant). Why this and not CausalGym's log-odds loss: CausalGym's
pairs end in two alternative next tokens (a label to classify), while most minimal pairs are one shared
continuation scored under two different contexts — there is no label, only a margin to match. A logistic
(or the raw margin) on the recovered margin rewards overshooting the source without bound (FTGD's
``difference`` objective gained 67 nats on one paradigm); the squared error is bounded below at exactly the
source's margin. The normalisation makes ``L = 1`` at ``R = 0`` whatever the task's margin scale, so one
learning rate serves every task and model, and pairs weigh by their squared effect ``(m_source − m_base)²``,
as the recovery below weighs them by ``|m_source − m_base|``: a pair whose continuation barely changes
carries no signal about where the change lives.

Recovery on a set of pairs (the space's entry; ``Δ_i = m_source,i − m_base,i``)::

    recovery = Σ_i sign(Δ_i)·(m_int,i − m_base,i) / Σ_i |Δ_i|       (= mean_i r_i weighted by |Δ_i|)
    r_i = (m_int,i − m_base,i) / Δ_i;   IIA = fraction of pairs (Δ_i ≠ 0) with r_i > ½

The unweighted mean of ``r_i`` is unbounded where ``Δ_i`` is near 0 (on BLiMP many continuations are one
``.`` whose log-probability the region barely moves); the weighted mean is the same number when all ``Δ_i``
are equal, 0 for ``R = 0`` and 1 for a full patch at the last layer's site. IIA (interchange-intervention
accuracy): the intervened run lands nearer the source's outcome than the base's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..scoring import quiet_transformers
from .interchange import Counterfactual, batches, intervened_outcomes, orthonormal, run_outcomes
from .settings import LEVEL

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..scoring import Head

#: the seed label of the random subspace pool (one pool per layer, shared by every row)
RANDOM_LABEL = "das-random"
#: training stops early once the mean loss of a window of WINDOW steps is below TOL (:func:`converged`)
WINDOW, TOL = 10, 0.01


@dataclass
class Runs:
    """The plain base and source runs of ``cfs``: outcome margins and the states at the sites per layer."""

    cfs: list[Counterfactual]
    m_base: np.ndarray
    m_source: np.ndarray
    h_source: dict[int, "torch.Tensor"] = field(default_factory=dict)
    h_base: dict[int, "torch.Tensor"] = field(default_factory=dict)

    @property
    def delta(self) -> np.ndarray:
        return self.m_source - self.m_base

    def __len__(self) -> int:
        return len(self.cfs)

    def subset(self, idx: Sequence[int]) -> "Runs":
        idx = list(idx)
        t = np.asarray(idx, dtype=np.int64)
        return Runs([self.cfs[i] for i in idx], self.m_base[t], self.m_source[t],
                    {k: v[t] for k, v in self.h_source.items()}, {k: v[t] for k, v in self.h_base.items()})


def concat(runs: Sequence[Runs]) -> Runs:
    """One :class:`Runs` of all ``runs`` (their layers must agree)."""
    import torch

    runs = [r for r in runs if len(r)]
    if not runs:
        return Runs([], np.zeros(0), np.zeros(0))
    layers = list(runs[0].h_source)
    return Runs([cf for r in runs for cf in r.cfs], np.concatenate([r.m_base for r in runs]),
                np.concatenate([r.m_source for r in runs]),
                {k: torch.cat([r.h_source[k] for r in runs]) for k in layers},
                {k: torch.cat([r.h_base[k] for r in runs]) for k in layers})


def plain_runs(head: "Head", cfs: Sequence[Counterfactual], layers: Sequence[int], *, pad_id: int,
               batch_tokens: int) -> Runs:
    """Base and source runs of ``cfs`` (no gradients), with their site states at ``layers``."""
    import torch

    n = len(cfs)
    m_b, m_s = np.zeros(n), np.zeros(n)
    hs: dict[int, list] = {k: [] for k in layers}
    hb: dict[int, list] = {k: [] for k in layers}
    order: list[int] = []
    with torch.inference_mode():
        for idx in batches(cfs, batch_tokens):
            sub = [cfs[i] for i in idx]
            mb, sb = run_outcomes(head, sub, side="base", pad_id=pad_id, layers=layers)
            ms, ss = run_outcomes(head, sub, side="source", pad_id=pad_id, layers=layers)
            m_b[idx], m_s[idx] = mb.double().cpu().numpy(), ms.double().cpu().numpy()
            for k in layers:
                hs[k].append(ss[k].clone())
                hb[k].append(sb[k].clone())
            order += idx
    inv = np.argsort(np.asarray(order, dtype=np.int64)) if order else np.zeros(0, dtype=np.int64)
    cat = (lambda xs: torch.cat(xs)[torch.as_tensor(inv)]) if order else (lambda xs: None)
    return Runs(list(cfs), m_b, m_s, {k: cat(hs[k]) for k in layers}, {k: cat(hb[k]) for k in layers})


def intervened(head: "Head", runs: Runs, layer: int, basis: "np.ndarray | torch.Tensor", *, pad_id: int,
               batch_tokens: int) -> np.ndarray:
    """``m_int`` of every pair of ``runs``: its base run with the interchange along ``basis`` (``[k, width]``,
    orthonormal rows) at ``layer`` from its source run's state (forward only)."""
    import torch

    out = np.zeros(len(runs))
    B = torch.as_tensor(np.asarray(basis)) if not isinstance(basis, torch.Tensor) else basis
    with torch.inference_mode():
        for idx in batches(runs.cfs, batch_tokens):
            m = intervened_outcomes(head, [runs.cfs[i] for i in idx], layer, runs.h_source[layer][idx], B,
                                    pad_id=pad_id)
            out[idx] = m.double().cpu().numpy()
    return out


def recovery_parts(m_int: np.ndarray, runs: Runs) -> tuple[np.ndarray, np.ndarray]:
    """Per pair ``(sign(Δ)·(m_int − m_base), |Δ|)``: the recovery is ``Σ num / Σ den``."""
    d = runs.delta
    return np.sign(d) * (m_int - runs.m_base), np.abs(d)


def recovery(m_int: np.ndarray, runs: Runs) -> float:
    """The |Δ|-weighted fraction of the margin recovered (NaN when no pair's margin differs)."""
    num, den = recovery_parts(m_int, runs)
    return float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")


def iia(m_int: np.ndarray, runs: Runs) -> float:
    """Interchange-intervention accuracy: the fraction of pairs (Δ ≠ 0) where the intervened outcome is
    nearer the source's than the base's."""
    d = runs.delta
    ok = d != 0
    if not ok.any():
        return float("nan")
    return float(np.mean((m_int[ok] - runs.m_base[ok]) / d[ok] > 0.5))


def bootstrap_recovery(num: np.ndarray, den: np.ndarray, counts: np.ndarray | None,
                       level: float = LEVEL) -> tuple[float, float]:
    """A percentile interval of ``Σ num / Σ den`` over resampled pairs (``counts``: ``[resamples, n]``)."""
    if counts is None or not len(num):
        return float("nan"), float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (counts @ num) / (counts @ den)
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return float("nan"), float("nan")
    lo, hi = np.percentile(reps, (100 * (1 - level) / 2, 100 * (1 + level) / 2))
    return float(lo), float(hi)


def train_subspace(head: "Head", layer: int, rank: int, cause: Runs, *, steps: int, lr: float, batch_pairs: int,
                   seed: int, pad_id: int, isolate: Runs | None = None, weight: float = 0.0,
                   on_step: Callable[[float], None] | None = None) -> tuple[np.ndarray, list[float]]:
    """``R`` (``[rank, width]`` float64, orthonormal rows) trained by interchange intervention at ``layer``
    (the module docstring's objective; Adam, at most ``steps`` steps of ``batch_pairs`` cause pairs, and as
    many isolate pairs when ``isolate`` is given with ``weight`` > 0; stopped early once converged,
    :func:`converged`), and the loss per step. The model must be
    frozen by the caller (:func:`~taskspace.probes.causal.frozen`); only ``R`` gets gradients."""
    import torch
    from torch.nn.utils.parametrizations import orthogonal

    width = cause.h_source[layer].shape[1]
    dtype = torch.float64 if cause.h_source[layer].dtype == torch.float64 else torch.float32
    rng = np.random.default_rng(seed)
    lin = torch.nn.Linear(width, rank, bias=False).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(orthonormal(rng.standard_normal((rank, width)))))
    # the parametrisation completes R to a full orthogonal basis with torch.randn (rank < width); the basis
    # steers every later step, so it is drawn from the training's own seed, never the global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lin = orthogonal(lin)
    lin = lin.to(head.device)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    use_iso = isolate is not None and len(isolate) > 0 and weight > 0
    scale_c = max(float(np.mean(cause.delta ** 2)), 1e-12)
    scale_i = max(float(np.mean(isolate.delta ** 2)), 1e-12) if use_iso else 1.0
    draw_c = _sampler(len(cause), batch_pairs, rng)
    draw_i = _sampler(len(isolate), batch_pairs, rng) if use_iso else None
    losses = []
    with quiet_transformers():                   # once for all of the training's model calls
        for _ in range(steps):
            idx = draw_c()
            sub = [cause.cfs[i] for i in idx]
            m = intervened_outcomes(head, sub, layer, cause.h_source[layer][idx], lin.weight, pad_id=pad_id)
            target = torch.as_tensor(cause.m_source[idx], dtype=m.dtype, device=m.device)
            loss = ((m - target) ** 2).mean() / scale_c
            if draw_i is not None:
                j = draw_i()
                sub_i = [isolate.cfs[i] for i in j]
                mi = intervened_outcomes(head, sub_i, layer, isolate.h_source[layer][j], lin.weight, pad_id=pad_id)
                keep = torch.as_tensor(isolate.m_base[j], dtype=mi.dtype, device=mi.device)
                loss = loss + weight * ((mi - keep) ** 2).mean() / scale_i
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(losses[-1])
            if converged(losses):
                break
    with torch.no_grad():
        return lin.weight.detach().double().cpu().numpy(), losses


def converged(losses: Sequence[float], window: int = WINDOW, tol: float = TOL) -> bool:
    """True once a complete window of ``window`` steps has a mean loss below ``tol``. The loss is in units of
    its value at ``R = 0`` (1 for the cause term), so 0.01 means 99% of the squared margin gap is closed.
    (A plateau rule on the minibatch loss stopped real BLiMP tasks far too early: gutenberg-gpt2-5m, 100
    train pairs, recovery 0.27 instead of 0.51 on anaphor_number_agreement.)"""
    return len(losses) % window == 0 and len(losses) > 0 and float(np.mean(losses[-window:])) < tol


def _sampler(n: int, size: int, rng: np.random.Generator) -> Callable[[], list[int]]:
    """Batches of ``size`` indices of ``range(n)``, epoch by epoch in a fresh seeded order."""
    state = {"order": [], "at": 0}

    def draw() -> list[int]:
        out: list[int] = []
        while len(out) < min(size, n):
            if state["at"] >= len(state["order"]):
                state["order"], state["at"] = list(rng.permutation(n)), 0
            out.append(int(state["order"][state["at"]]))
            state["at"] += 1
        return out
    return draw


def random_pool(width: int, rank: int, n: int, seed: int, layer: int) -> list[np.ndarray]:
    """``n`` uniformly random rank-``rank`` subspaces (``[rank, width]``, orthonormal rows: QR of a Gaussian
    matrix, Haar-distributed), seeded by (seed, layer) — one pool per layer, shared by every row, isotropic
    like the steering and erasure probes' random directions. (A pool drawn with the residual stream's
    covariance collapses onto its few largest-variance directions: on a model with outlier dimensions, or
    few distinct states, every draw is nearly the same subspace, which is no pool.)"""
    from .gradient.masks import task_seed

    rng = np.random.default_rng(task_seed(seed, f"{RANDOM_LABEL}\x00{layer}"))
    return [orthonormal(rng.standard_normal((rank, width))) for _ in range(n)]
