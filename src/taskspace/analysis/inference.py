"""The inference rules every verdict of :mod:`taskspace.analysis` follows (docs/reliability.md, "Inference").

- **One direction per space.** A space's :class:`~taskspace.probes.spec.SpaceSpec` declares whether a
  related pair of tasks is *higher* (cosines, Jaccard, transfer, steering) or *lower* (erasure and
  ablation drops), and which reading — signed or absolute — gets the tests. :func:`read` turns a space
  into "higher = more related" once, and every statistic downstream works on that.
- **Agreement that can reach 1.** Spearman's ρ with a 1/0 hypothesis is capped below 1 by the
  hypothesis' ties; :func:`rho_max` is that cap, and :func:`auc` the probability that a within-group
  cell outranks a between-group cell (0.5 = none, 1 = perfect; for a space without ties
  ``ρ / ρ_max = 2·AUC − 1`` exactly).
- **Small designs are said.** :func:`min_p` is the smallest p-value a permutation test over task labels
  can reach for a grouping; :func:`interval_design` withholds task-bootstrap intervals where most groups
  are too small for a resample to vary.
- **Many tests:** :func:`bh` (Benjamini–Hochberg, within one table) and :func:`holm` (across models).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np
from scipy.stats import binom, rankdata

from ..multiple_testing import bh, holm  # noqa: F401  (re-exported: the corrections live in a leaf)
from .stats import permutation_p, task_permutations

#: a group needs this many tasks for a task resample to vary its within-group entries
MIN_GROUP_TASKS = 3
#: task-bootstrap intervals are withheld when more than this share of the contrasting groups is smaller
SMALL_GROUP_SHARE = 0.5
ALPHA = 0.05


def read(matrix: np.ndarray, sign: float = 1.0, absolute: bool = False) -> np.ndarray:
    """The space read as "higher = more related": ``|S|`` for the absolute reading, else ``sign · S``."""
    m = np.asarray(matrix, dtype=float)
    return np.abs(m) if absolute else (m if sign > 0 else -m)


def group_sizes(groups: Sequence[str]) -> dict[str, int]:
    return dict(Counter(str(g) for g in groups))


def interval_design(groups: Sequence[str]) -> tuple[bool, str]:
    """``(ok, reason)``: whether the groups allow a task-bootstrap interval.

    Resampling tasks within a group of two draws the same task twice half the time, and the other half
    rebuilds the very same within-group entries: the group's contrast barely varies, and the intervals of
    a design made of such groups cover the truth far less often than they claim (87% for three groups of
    two in simulation). Where more than half of the groups that have a within-group entry are smaller
    than :data:`MIN_GROUP_TASKS`, intervals are withheld, and the verdicts that need them say
    "inconclusive".
    """
    sizes = [n for n in group_sizes(groups).values() if n >= 2]
    if not sizes:
        return False, "no group has two tasks"
    small = sum(n < MIN_GROUP_TASKS for n in sizes)
    if small > SMALL_GROUP_SHARE * len(sizes):
        return False, (f"intervals withheld: {small} of {len(sizes)} groups have fewer than {MIN_GROUP_TASKS} "
                       "tasks, too few for a resample of tasks to vary")
    return True, ""


def rho_max(groups: Sequence[str]) -> float:
    """The largest Spearman ρ any space can reach with the hypothesis space of ``groups``: that of a
    space whose every within-group entry outranks every between-group entry (no ties among them)."""
    g = np.asarray([str(x) for x in groups])
    n = g.size
    off = ~np.eye(n, dtype=bool)
    y = (g[:, None] == g[None, :])[off].astype(float)
    if n < 3 or y.min() == y.max():
        return float("nan")
    x = np.empty_like(y)
    x[np.argsort(y, kind="stable")] = np.arange(y.size)        # between cells lowest, within highest
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def auc(matrix: np.ndarray, groups: Sequence[str]) -> float:
    """``P(within cell > between cell)`` over the off-diagonal entries (ties count ½; NaN entries ignored)."""
    m = np.asarray(matrix, dtype=float)
    g = np.asarray([str(x) for x in groups])
    off = ~np.eye(g.size, dtype=bool)
    same = (g[:, None] == g[None, :])[off]
    x = m[off]
    ok = np.isfinite(x)
    x, same = x[ok], same[ok]
    nw, nb = int(same.sum()), int((~same).sum())
    if nw == 0 or nb == 0:
        return float("nan")
    r = rankdata(x)
    u = float(r[same].sum()) - nw * (nw + 1) / 2.0
    return u / (nw * nb)


def auc_draws(matrix: np.ndarray, groups: Sequence[str], counts: np.ndarray) -> np.ndarray:
    """:func:`auc` of each rebuilt space of a task bootstrap (entry (a, b) weighted ``c_a c_b``)."""
    m = np.asarray(matrix, dtype=float)
    g = np.asarray([str(x) for x in groups])
    rows, cols = np.nonzero(~np.eye(g.size, dtype=bool))
    x = m[rows, cols]
    ok = np.isfinite(x)
    rows, cols, x = rows[ok], cols[ok], x[ok]
    same = g[rows] == g[cols]
    order = np.argsort(x, kind="stable")
    xs, same_s = x[order], same[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    out = np.full(counts.shape[0], np.nan)
    for i in range(0, counts.shape[0], 64):
        c = counts[i:i + 64]
        w = (c[:, rows] * c[:, cols])[:, order]
        wb = np.where(same_s, 0.0, w)
        ww = np.where(same_s, w, 0.0)
        gb = np.add.reduceat(wb, starts, axis=1)                   # between weight of each run of ties
        below = np.cumsum(gb, axis=1) - gb                          # between weight strictly below the run
        score = (below + gb / 2.0)[:, run]
        num = (ww * score).sum(1)
        den = ww.sum(1) * wb.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i:i + 64] = np.where(den > 0, num / den, np.nan)
    return out


def min_p(groups: Sequence[str], permutations: int | None = None) -> float:
    """The smallest p-value a one-sided permutation test over task labels can give for ``groups``.

    Permutations that map every group onto a group (swap tasks inside a group, swap whole groups of equal
    size) leave the hypothesis space unchanged, so they tie with the observed statistic: the exact test
    cannot go below their share of all ``n!`` permutations (6 tasks in 3 pairs: 48 / 720 = 0.067). A test
    from ``permutations`` random draws cannot go below ``1 / (1 + permutations)`` either.
    """
    sizes = list(group_sizes(groups).values())
    n = sum(sizes)
    log_aut = sum(math.lgamma(s + 1) for s in sizes)
    log_aut += sum(math.lgamma(k + 1) for k in Counter(sizes).values())
    p = math.exp(log_aut - math.lgamma(n + 1)) if n else float("nan")
    if permutations:
        p = max(p, 1.0 / (1 + permutations))
    return float(p)


def gap_permutation_p(matrix: np.ndarray, groups: Sequence[str], *, permutations: int = 999,
                      seed: int = 0) -> dict:
    """One-sided permutation test of the gap (mean of per-group contrasts, as
    :func:`~taskspace.spaces.within_between`) of an oriented, complete matrix: is it larger than under a
    random relabelling of the tasks?

    Its use is the **trained − control** test: the gap is linear in the matrix, so ``gap(T) − gap(C)`` is
    the gap of ``D = T − C``, and relabelling the tasks of ``D`` asks whether training added more
    within-group than between-group structure than chance would (H0: the change has no group structure).
    Task labels are permuted jointly on rows and columns; the exact test enumerates all ``n!``
    permutations where that is at most ``permutations + 1``, else ``p = (1 + #{≥ observed}) / (1 + P)``.
    Returns ``gap``, ``p``, ``permutations``, ``exact``; ``p`` is NaN with fewer than 3 tasks or no group
    of two.
    """
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    out = {"gap": float("nan"), "p": float("nan"), "permutations": 0, "exact": False}
    if n < 3:
        return out
    _, gid = np.unique(np.asarray([str(x) for x in groups]), return_inverse=True)
    onehot = np.eye(int(gid.max()) + 1)[gid]                 # (n, k) group memberships
    sizes = onehot.sum(0)
    contrasting = sizes >= 2
    if not contrasting.any() or (sizes == n).all():
        return out
    if not np.isfinite(m[~np.eye(n, dtype=bool)]).all():
        raise ValueError("matrix has non-finite off-diagonal entries; select complete tasks first")
    mz = np.where(np.eye(n, dtype=bool), 0.0, m)
    wc = sizes * (sizes - 1)
    bc = 2 * sizes * (n - sizes)

    def gaps(g: np.ndarray) -> np.ndarray:        # g: (P, n, k) one-hot group memberships
        inside = np.einsum("pik,ij,pjk->pk", g, mz, g)
        rows = np.einsum("pik,ij->pk", g, mz)
        cols = np.einsum("ij,pjk->pk", mz, g)
        with np.errstate(invalid="ignore", divide="ignore"):
            per = inside / wc - (rows + cols - 2 * inside) / bc
        return per[:, contrasting].mean(axis=1)

    observed = float(gaps(onehot[None])[0])
    perms, exact = task_permutations(n, permutations, seed)
    count = 0
    for i in range(0, len(perms), 64):
        count += int((gaps(onehot[perms[i:i + 64]]) >= observed - 1e-12).sum())
    out.update(gap=observed, p=permutation_p(count, len(perms), exact), permutations=int(len(perms)),
               exact=bool(exact))
    return out


def sign_test(k: int, m: int) -> float:
    """One-sided p of ``k`` or more successes out of ``m`` when each is a coin flip (``m = 0``: NaN)."""
    return float(binom.sf(k - 1, m, 0.5)) if m > 0 else float("nan")


def ari_permutation_p(labels: Sequence[int], groups: Sequence[str], ari: float, *, permutations: int = 999,
                      seed: int = 0) -> float:
    """One-sided p of the clustering's ARI against the groups: the share of random relabellings of the
    tasks' groups (group sizes kept) whose ARI is at least the observed one, ``(1 + #) / (1 + P)``."""
    if not (isinstance(ari, float) and math.isfinite(ari)) or len(labels) < 3:
        return float("nan")
    _, gid = np.unique(np.asarray([str(x) for x in groups]), return_inverse=True)
    lab = np.asarray(labels, dtype=np.intp)
    lab = np.unique(lab, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    count = sum(adjusted_rand(rng.permutation(gid), lab) >= ari - 1e-12 for _ in range(permutations))
    return float((1 + count) / (1 + permutations))


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings of non-negative integers (sklearn's ``adjusted_rand_score``,
    without its overhead)."""
    ai, bi = np.asarray(a, dtype=np.intp), np.asarray(b, dtype=np.intp)
    kb = int(bi.max()) + 1
    table = np.bincount(ai * kb + bi, minlength=(int(ai.max()) + 1) * kb).reshape(-1, kb).astype(float)
    comb = lambda x: x * (x - 1) / 2.0  # noqa: E731
    n = float(ai.size)
    sum_ij = comb(table).sum()
    sum_a = comb(table.sum(1)).sum()
    sum_b = comb(table.sum(0)).sum()
    expected = sum_a * sum_b / comb(n) if n > 1 else 0.0
    top = (sum_a + sum_b) / 2.0
    if top == expected:          # sklearn's convention for the degenerate cases (one cluster each, …)
        return 1.0
    return float((sum_ij - expected) / (top - expected))
