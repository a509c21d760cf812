"""Bootstrap intervals over tasks for every summary of a task space (docs/design.md, "Reliability";
docs/reliability.md, "Intervals on every summary").

A task space is a sample of paradigms standing for their groups: which paradigms were written for a
group is the chance part, the groups are theory's. So a resample draws, within each group, as many tasks
as the group has, with replacement, and rebuilds the space over the drawn tasks; entries of a task with a
copy of itself (its diagonal) are left out. Every statistic is recomputed on each resample and the 95%
interval is the 2.5th–97.5th percentile of the resampled values (percentile bootstrap, seeded).

Everything is vectorised over resamples where the statistic allows: a resample is a vector of counts
``c`` (how often each task was drawn), and a mean over the rebuilt space's off-diagonal entries is
``Σ_{a≠b} c_a c_b S[a,b] / Σ_{a≠b} c_a c_b``; Spearman's ρ with H uses the same weights on the ranks
(mid-ranks of the rebuilt multiset). The ARI gets no interval here: a bootstrap would re-cluster the
~63% distinct tasks of each draw, another quantity than the ARI of all tasks (it gets a permutation p).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# the resamples and level of every interval, declared once with the probe settings
from ..probes.settings import BOOTSTRAP as RESAMPLES
from ..probes.settings import LEVEL
from .hypothesis import hypothesis_space
from .inference import auc_draws, interval_design, read, rho_max
from .stats import complete_tasks, within_between

SCHEME = ("tasks resampled with replacement within each group (group sizes kept), space rebuilt over the "
          "drawn tasks without the entries of a task with its own copy; percentile interval")


def resample_tasks(groups: Sequence[str], resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` task indices: position ``j`` of a row holds a task drawn from ``groups[j]``'s group."""
    g = np.asarray([str(x) for x in groups])
    n = g.size
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, n), dtype=np.intp)
    for grp in dict.fromkeys(g.tolist()):
        members = np.flatnonzero(g == grp)
        out[:, members] = members[rng.integers(0, members.size, size=(resamples, members.size))]
    return out


def task_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """``(resamples, n)`` float counts of each task in each resample."""
    b = idx.shape[0]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def percentile_ci(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """``[lo, hi]``: the percentile interval of the finite values; NaN when fewer than half are finite."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.size < 0.5 * np.asarray(values).size:
        return [float("nan"), float("nan")]
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return [float(lo), float(hi)]


def _weighted_mean(matrix: np.ndarray, mask: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample, the mean of ``matrix`` over the entries ``mask`` (finite only) of the rebuilt space."""
    ok = mask & np.isfinite(matrix)
    w = np.where(ok, matrix, 0.0)
    num = np.einsum("bi,ij,bj->b", counts, w, counts)
    den = np.einsum("bi,ij,bj->b", counts, ok.astype(float), counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def group_contrast_draws(matrix: np.ndarray, groups: Sequence[str], counts: np.ndarray, *,
                         absolute: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Per group with at least two tasks, ``within``, ``between`` and ``gap`` of each rebuilt space
    (:func:`~taskspace.spaces.group_contrasts` on the resampled tasks; NaN where fewer than two distinct
    tasks of the group were drawn)."""
    m = np.abs(np.asarray(matrix, dtype=float)) if absolute else np.asarray(matrix, dtype=float)
    g = np.asarray([str(x) for x in groups])
    fin = np.isfinite(m)
    z = np.where(fin, m, 0.0)
    out = {}
    for grp in dict.fromkeys(g.tolist()):
        inside = g == grp
        if inside.sum() < 2:
            continue
        idx, rest = np.flatnonzero(inside), np.flatnonzero(~inside)
        w = _weighted_mean(m[np.ix_(idx, idx)], ~np.eye(idx.size, dtype=bool), counts[:, idx])
        ci, cr = counts[:, idx], counts[:, rest]
        num = (np.einsum("bi,ij,bj->b", ci, z[np.ix_(idx, rest)], cr)
               + np.einsum("bj,ji,bi->b", cr, z[np.ix_(rest, idx)], ci))
        den = (np.einsum("bi,ij,bj->b", ci, fin[np.ix_(idx, rest)].astype(float), cr)
               + np.einsum("bj,ji,bi->b", cr, fin[np.ix_(rest, idx)].astype(float), ci))
        with np.errstate(invalid="ignore", divide="ignore"):
            bt = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        out[grp] = {"within": w, "between": bt, "gap": w - bt}
    return out


def within_between_draws(matrix: np.ndarray, groups: Sequence[str], counts: np.ndarray, *,
                         absolute: bool = False) -> dict[str, np.ndarray]:
    """``within``, ``between`` and ``difference`` of each resample, as
    :func:`~taskspace.spaces.within_between` computes them: the mean over groups of the per-group
    contrasts (a group whose resample holds one distinct task drops out of that resample)."""
    per = group_contrast_draws(matrix, groups, counts, absolute=absolute)
    if not per:
        nan = np.full(counts.shape[0], np.nan)
        return {"within": nan, "between": nan.copy(), "difference": nan.copy()}
    gaps = np.stack([v["gap"] for v in per.values()])
    ok = np.isfinite(gaps)
    with np.errstate(invalid="ignore"):
        def mean(key: str) -> np.ndarray:
            x = np.stack([v[key] for v in per.values()])
            return np.where(ok, x, 0.0).sum(0) / np.where(ok.sum(0) > 0, ok.sum(0), np.nan)
        return {"within": mean("within"), "between": mean("between"), "difference": mean("gap")}


def _sorted_ties(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order of ``v``, the start of each run of equal values in it, and each sorted entry's run."""
    order = np.argsort(v, kind="stable")
    vs = v[order]
    new = np.r_[True, vs[1:] != vs[:-1]]
    return order, np.flatnonzero(new), np.cumsum(new) - 1


def _multiset_ranks(w: np.ndarray, order: np.ndarray, starts: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Mid-ranks of each entry in the multiset that holds entry ``i`` ``w[:, i]`` times (per row of w)."""
    ws = w[:, order]
    # weight of each run of ties; without ties every run is one entry, whose sum is that entry (the same
    # floats, so the same ranks) and whose run index is its position: neither reduceat nor the gather
    tied = starts.size < order.size
    gw = np.add.reduceat(ws, starts, axis=1) if tied else ws
    before = np.cumsum(gw, axis=1) - gw
    ranks = np.empty_like(w)
    mid = before + (gw + 1.0) / 2.0
    ranks[:, order] = mid[:, run] if tied else mid
    return ranks


def rho_draws(matrix: np.ndarray, reference: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman ρ of the off-diagonal entries of ``matrix`` with ``reference`` in each rebuilt space.

    The rebuilt space holds entry ``(a, b)`` ``c_a c_b`` times; ρ is the weighted Pearson correlation of
    the mid-ranks of both multisets, which is exactly Spearman's ρ on the rebuilt entries. Both matrices
    must be finite off the diagonal (select complete tasks first).
    """
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    rows, cols = np.nonzero(~np.eye(n, dtype=bool))
    x = m[rows, cols]
    y = np.asarray(reference, dtype=float)[rows, cols]
    tx, ty = _sorted_ties(x), _sorted_ties(y)
    # a reference of two values (H) has mid-ranks affine in its values: Pearson needs no ranking of it
    binary = np.unique(y).size <= 2
    out = np.full(counts.shape[0], np.nan)
    for i in range(0, counts.shape[0], 64):                       # 64 resamples at a time: bounded memory
        c = counts[i:i + 64]
        w = c[:, rows] * c[:, cols]                                # (B, m) weight of each entry
        rx = _multiset_ranks(w, *tx)
        ry = np.broadcast_to(y, w.shape) if binary else _multiset_ranks(w, *ty)
        tot = w.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            dx = rx - (w * rx).sum(1, keepdims=True) / tot
            dy = ry - (w * ry).sum(1, keepdims=True) / tot
            vx, vy = (w * dx * dx).sum(1), (w * dy * dy).sum(1)
            rho = (w * dx * dy).sum(1) / np.sqrt(vx * vy)
        out[i:i + 64] = np.where((vx > 0) & (vy > 0), rho, np.nan)
    return out


def cut_maxclust(z: np.ndarray, k: int) -> np.ndarray:
    """Flat clusters of a monotone linkage ``z`` cut into at most ``k`` clusters: scipy's
    ``fcluster(z, k, "maxclust")`` partition (labels may differ), without its per-call validation
    (a thousand cuts per space)."""
    n = z.shape[0] + 1
    k = max(1, min(int(k), n))
    parent = np.arange(2 * n - 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if k < n:
        # every merge at or below the height of merge n − k (ties at that height merge too, as in scipy)
        height = z[n - k - 1, 2]
        for j in range(n - 1):
            if z[j, 2] > height:
                break
            a, c = int(z[j, 0]), int(z[j, 1])
            parent[find(a)] = n + j
            parent[find(c)] = n + j
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def rho_max_draws(groups: Sequence[str], counts: np.ndarray) -> np.ndarray:
    """The attainable Spearman ρ with the hypothesis space in each rebuilt space (``counts``: one row per
    draw): ρ of a tie-free, perfectly grouped matrix (every within-group entry above every between-group
    one) with H, rebuilt the same way. Row ``[1, …, 1]`` gives :func:`~taskspace.analysis.inference.rho_max`."""
    n = len(groups)
    h = hypothesis_space(groups)
    perfect = 2.0 * h + np.arange(n * n, dtype=float).reshape(n, n) / (n * n)     # distinct, grouped
    with np.errstate(invalid="ignore", divide="ignore"):
        return rho_draws(perfect, h, counts)


def group_mean_draws(matrix: np.ndarray, groups: Sequence[str], counts: np.ndarray, *,
                     absolute: bool = False) -> dict[str, np.ndarray]:
    """Per group, the mean of ``S[a, b]`` over a ≠ b inside it in each rebuilt space (both directions;
    NaN where fewer than two distinct tasks of the group were drawn)."""
    m = np.abs(np.asarray(matrix, dtype=float)) if absolute else np.asarray(matrix, dtype=float)
    g = np.asarray([str(x) for x in groups])
    out = {}
    for grp in dict.fromkeys(g.tolist()):
        idx = np.flatnonzero(g == grp)
        sub = m[np.ix_(idx, idx)]
        out[grp] = _weighted_mean(sub, ~np.eye(idx.size, dtype=bool), counts[:, idx])
    return out


def bootstrap_space(space, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL,
                    sign: float = 1.0, declared: str = "signed") -> dict:
    """Intervals for :func:`~taskspace.analysis.compare.summarize_space`'s numbers, on the space read as
    "higher = related" (``sign``; the absolute reading is ``|S|``): ``signed`` / ``absolute`` →
    ``within_ci``, ``between_ci``, ``difference_ci``, ``rho_ci``, ``rho_ratio_ci`` (and ``auc_ci`` for the
    ``declared`` reading); and how they were made (``resamples``, ``level``, ``seed``, ``scheme``).

    Means use every finite entry (as the point values do); ρ and the AUC use the complete tasks
    (:func:`~taskspace.analysis.stats.complete_tasks`), as the point values do. Where the groups are too
    small for a task resample to vary (:func:`~taskspace.analysis.inference.interval_design`) every
    interval is NaN and ``withheld`` says why.
    """
    out: dict = {"resamples": int(resamples), "level": level, "seed": int(seed), "scheme": SCHEME}
    groups = list(space.groups)
    ok, why = interval_design(groups)
    nan2 = [float("nan")] * 2
    if not ok:
        out["withheld"] = why
        for name in ("signed", "absolute"):
            out[name] = {k: nan2 for k in ("within_ci", "between_ci", "difference_ci", "rho_ci", "rho_ratio_ci",
                                           "auc_ci")}
        return out
    raw = np.asarray(space.matrix, dtype=float)
    idx = resample_tasks(groups, resamples, seed)
    counts = task_counts(idx, len(groups))
    keep = complete_tasks(raw)
    sub_groups = [g for g, k in zip(groups, keep) if k]
    sub_idx = resample_tasks(sub_groups, resamples, seed)
    sub_counts = task_counts(sub_idx, len(sub_groups))
    h = hypothesis_space(sub_groups)
    for name, absolute in (("signed", False), ("absolute", True)):
        m = read(raw, sign, absolute)
        sub = m[np.ix_(keep, keep)]
        wb = within_between_draws(m, groups, counts)
        entry = {f"{k}_ci": percentile_ci(v, level) for k, v in wb.items()}
        if len(sub_groups) >= 3:
            # each rebuilt space drops a drawn copy's entry with itself, so it has fewer within-group
            # entries and a lower attainable ρ: the draws are read as shares of their own ρ_max, and the
            # ρ interval is that share's interval times the data's ρ_max (else the point falls above it)
            ratio = rho_draws(sub, h, sub_counts) / rho_max_draws(sub_groups, sub_counts)
            entry["rho_ratio_ci"] = percentile_ci(ratio, level)
            entry["rho_ci"] = [rho_max(sub_groups) * v for v in entry["rho_ratio_ci"]]
        else:
            entry["rho_ci"] = entry["rho_ratio_ci"] = nan2
        if name == declared:
            entry["auc_ci"] = (percentile_ci(auc_draws(sub, sub_groups, sub_counts), level)
                               if len(sub_groups) >= 3 else nan2)
        out[name] = entry
    return out


def paired_delta(a, b, *, statistic: str = "difference", resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL, sign: float = 1.0, absolute: bool = False) -> dict:
    """``b − a`` of a within/between statistic (``within``, ``between`` or ``difference``) for two spaces
    over their common tasks, with a paired interval: the same resampled tasks in both spaces (a model's
    size or checkpoint changes; the paradigms stay). Groups are ``a``'s; both spaces are read through
    ``sign`` / ``absolute`` (:func:`~taskspace.analysis.inference.read`). Returns ``delta``, ``ci``
    (NaN and ``withheld`` where the groups are too small for an interval), ``n_tasks``."""
    tb = set(b.tasks)
    tasks = [t for t in a.tasks if t in tb]
    sa, sb = a.select(tasks), b.select(tasks)
    ma, mb = read(sa.matrix, sign, absolute), read(sb.matrix, sign, absolute)
    point = within_between(mb, sa.groups)[statistic] - within_between(ma, sa.groups)[statistic]
    ok, why = interval_design(sa.groups)
    if len(tasks) < 2 or resamples < 1 or not ok:
        return {"delta": point, "ci": [float("nan")] * 2, "n_tasks": len(tasks), "withheld": why or None}
    counts = task_counts(resample_tasks(sa.groups, resamples, seed), len(tasks))
    da = within_between_draws(ma, sa.groups, counts)[statistic]
    db = within_between_draws(mb, sa.groups, counts)[statistic]
    return {"delta": point, "ci": percentile_ci(db - da, level), "n_tasks": len(tasks)}


def excludes_zero(ci) -> int:
    """+1 when the interval lies above 0, −1 below, 0 when it holds 0 or is missing."""
    if ci is None or len(ci) != 2:
        return 0
    lo, hi = ci
    if not all(isinstance(x, (int, float)) and np.isfinite(x) for x in (lo, hi)):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0
