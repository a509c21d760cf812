"""Evaluation of fine-tuned models on every task: transfer matrices, bootstrap CIs, LM damage (docs/design.md, "Probes").

``T[a, b] = perf_b(θ_a) − perf_b(θ_0)`` with perf = mean margin or accuracy over task b's held-out
(eval) pairs; ``T̃[a, b] = T[a, b] / |T[a, a]|``. Confidence intervals come from a paired bootstrap
over evaluation pairs: one resample of task b's pairs is applied to both ``θ_a`` and ``θ_0`` (paired),
and replicate r uses the same resample of b for every row a, so a row's ratio ``T̃`` is bootstrapped
jointly with its own diagonal. Resamples are seeded per (seed, task), so adding tasks or resuming a run
never changes another task's interval.

Everything here works on per-pair score tables (``Scorer.score_pairs``), which are also written to
disk, so every metric can be recomputed from the per-sample log.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ...errors import TaskspaceError
from ..settings import BOOTSTRAP, LEVEL

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ...scoring import Scorer

#: names of the four matrices of a transfer probe (prefixed by the probe: transfer, baseline)
METRICS = ("", "_normalized", "_accuracy", "_accuracy_normalized")


@dataclass
class Estimate:
    """A tasks × tasks matrix of point estimates with its bootstrap interval (NaN where none)."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray


def lm_nll(pairs_df: "pd.DataFrame", reduction: str = "sum") -> float:
    """Mean per-token NLL (nats) of the good sentences of a per-pair score table.

    The held-out text for LM damage by default: fine-tuning on one task should not make the model
    worse at ordinary grammatical sentences of the other tasks.
    """
    lp = pairs_df["logp_good"].to_numpy(dtype=np.float64)
    n = pairs_df["n_tokens_good"].to_numpy(dtype=np.float64)
    total = lp * n if reduction == "mean" else lp
    return float(-total.sum() / max(n.sum(), 1.0))


def heldout_nll(scorer: "Scorer", sentences: Sequence[str]) -> float:
    """Mean per-token NLL (nats) of ``sentences`` (e.g. lines of a held-out text file)."""
    lp, n = scorer.sentence_logprobs(list(sentences), return_counts=True)
    lp = np.asarray(lp, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    total = lp * n if scorer.convention.reduction == "mean" else lp
    return float(-total.sum() / max(n.sum(), 1.0))


def self_transfer(base: "pd.DataFrame", finetuned: "pd.DataFrame", task: str) -> dict[str, float]:
    """``T[a, a]`` in margin and accuracy: how much fine-tuning on ``task`` helped ``task`` itself."""
    _check_aligned(base, finetuned)
    sel = (base["task"] == task).to_numpy()
    dm = finetuned["margin"].to_numpy(np.float64)[sel] - base["margin"].to_numpy(np.float64)[sel]
    da = (finetuned["correct"].to_numpy(np.float64)[sel] - base["correct"].to_numpy(np.float64)[sel])
    return {"margin": float(dm.mean()) if dm.size else float("nan"),
            "accuracy": float(da.mean()) if da.size else float("nan")}


def bootstrap_counts(n: int, n_boot: int, seed: int, task: str) -> np.ndarray:
    """``(n_boot, n)`` resample counts for a task's ``n`` eval pairs, seeded by ``(seed, task)``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _stable_hash(task)])
    if n == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def transfer_matrices(
    base: "pd.DataFrame",
    finetuned: Mapping[str, "pd.DataFrame | None"],
    tasks: Sequence[str],
    *,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Estimate]:
    """The four transfer matrices with bootstrap CIs, keyed ``""`` (margin), ``"_normalized"``,
    ``"_accuracy"``, ``"_accuracy_normalized"``.

    ``base`` is the base model's per-pair table over the eval pairs of all ``tasks``; ``finetuned[a]``
    the same pairs scored with ``θ_a`` (None, or absent, when the fine-tuning on a failed: its row is
    NaN). Rows and columns follow ``tasks``.
    """
    tasks = list(tasks)
    n = len(tasks)
    base_task = base["task"].to_numpy()
    cols = {b: np.flatnonzero(base_task == b) for b in tasks}
    counts = {b: bootstrap_counts(len(cols[b]), bootstrap, seed, b) for b in tasks} if bootstrap else {}
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    out = {m: Estimate(np.full((n, n), np.nan), np.full((n, n), np.nan), np.full((n, n), np.nan))
           for m in METRICS}
    base_m = base["margin"].to_numpy(np.float64)
    base_c = base["correct"].to_numpy(np.float64)
    for i, a in enumerate(tasks):
        ft = finetuned.get(a)
        if ft is None:
            continue
        _check_aligned(base, ft)
        for kind, d in (("", ft["margin"].to_numpy(np.float64) - base_m),
                        ("_accuracy", ft["correct"].to_numpy(np.float64) - base_c)):
            point = np.array([d[cols[b]].mean() if len(cols[b]) else np.nan for b in tasks])
            norm_point = _ratio(point, point[i])
            out[kind].value[i] = point
            out[kind + "_normalized"].value[i] = norm_point
            if not bootstrap:
                continue
            # (n_tasks, n_boot): replicate r of every column uses that column's r-th resample
            reps = np.stack([counts[b] @ d[cols[b]] / max(len(cols[b]), 1) if len(cols[b])
                             else np.full(bootstrap, np.nan) for b in tasks])
            norm_reps = _ratio(reps, reps[i][None, :])
            for name, r in ((kind, reps), (kind + "_normalized", norm_reps)):
                lo, hi = _percentiles(r, q)
                out[name].low[i], out[name].high[i] = lo, hi
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / |den|``, NaN where the denominator is 0 or not finite (no self-transfer to normalise by)."""
    den = np.abs(np.asarray(den, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.asarray(num, dtype=np.float64) / den
    r[~np.isfinite(r)] = np.nan
    return r


def _percentiles(reps: np.ndarray, q: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN bounds, as they should
        lo = np.nanpercentile(reps, q[0], axis=1)
        hi = np.nanpercentile(reps, q[1], axis=1)
    return lo, hi


def _check_aligned(base: "pd.DataFrame", other: "pd.DataFrame") -> None:
    if len(base) != len(other) or not (
            np.array_equal(base["task"].to_numpy(), other["task"].to_numpy())
            and np.array_equal(base["pair_id"].to_numpy(), other["pair_id"].to_numpy())):
        raise TaskspaceError("fine-tuned and base scores are not over the same eval pairs "
                             "(delete the probe's scores/ folder and run again)")


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
