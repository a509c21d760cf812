"""Statistics of a task space against theory: within- vs between-group means, Spearman correlation
with the hypothesis space and its Mantel permutation test (docs/design.md, "Comparing with theory").

Everything works on plain ``(n, n)`` arrays; the diagonal (a task with itself) never counts.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from ..spaces import group_contrasts, within_between  # noqa: F401  (the rule lives with TaskSpace)

# Permutation statistics equal to the observed one up to float rounding count as "at least as large".
_TIE_EPS = 1e-12


def offdiagonal(n: int) -> np.ndarray:
    """Boolean mask of the off-diagonal entries of an ``n × n`` matrix."""
    return ~np.eye(n, dtype=bool)


def complete_tasks(matrix: np.ndarray) -> np.ndarray:
    """Boolean mask of the tasks whose off-diagonal row and column are finite everywhere.

    A failed fine-tuning leaves a row of NaN in a transfer space; dropping such tasks (rather than
    single entries) keeps a permutation test valid, since it permutes whole tasks.
    """
    m = np.asarray(matrix, dtype=float)
    keep = np.ones(m.shape[0], dtype=bool)
    # Drop the task with the most missing entries first, until what is left is complete.
    while keep.sum() > 0:
        sub = m[np.ix_(keep, keep)]
        bad = ~np.isfinite(sub) & offdiagonal(sub.shape[0])
        if not bad.any():
            break
        counts = bad.sum(0) + bad.sum(1)
        idx = np.flatnonzero(keep)[int(np.argmax(counts))]
        keep[idx] = False
    return keep


def coverage(matrix: np.ndarray, tasks: Sequence[str] | None = None, masked: Sequence[str] = ()) -> dict:
    """How much of a task space a figure rests on: the one helper compare, report and headline use.

    ``rows``: tasks whose row holds at least one finite entry (a failed fine-tuning, or one that never
    beat step 0, leaves a row of NaN), ``of``: tasks; ``cells``/``cells_of``: finite off-diagonal
    entries and their number; ``missing``: the tasks without a row; ``complete``: nothing missing.
    """
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    finite = np.isfinite(m)
    present = finite.any(axis=1) if n else np.zeros(0, dtype=bool)
    names = list(tasks) if tasks is not None else [str(i) for i in range(n)]
    cells = int((finite & offdiagonal(n)).sum())
    masked = [t for t in masked if t in names]
    expected = n * (n - 1) - len(masked) * (n - 1)
    return {"rows": int(present.sum()), "of": n, "cells": cells, "cells_of": n * (n - 1),
            "missing": [t for t, ok in zip(names, present) if not ok and t not in masked],
            "masked": masked, "complete": cells >= expected}


def coverage_note(cov: dict | None) -> str:
    """``"6/6 rows"``, or ``"3/6 rows, incomplete: missing a, b, c"`` (empty for no coverage)."""
    if not cov:
        return ""
    text = f"{cov['rows']}/{cov['of']} rows"
    if not cov.get("complete", True):
        missing = cov.get("missing") or []
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        text += (f", incomplete: {cov['cells']}/{cov['cells_of']} cells"
                 + (f"; missing {shown}" if missing else ""))
    if cov.get("masked"):
        text += f" ({len(cov['masked'])} left out: self-transfer not measurably positive)"
    return text


def remove_task_effects(matrix: np.ndarray, *, tol: float = 1e-12, max_iter: int = 200) -> np.ndarray:
    """The off-diagonal entries without each task's main effects: ``S_ab − μ − u_a − v_b``, fitted by least
    squares on the off-diagonal entries (alternating row and column centring; the diagonal never counts
    and is returned as 0).

    Why: a permutation test over task labels assumes the entries are exchangeable under relabelling, and
    a task that is similar to everything (a large row or column mean) breaks that. With ``S_ab = u_a +
    u_b + noise`` and no relatedness at all, a group of "loud" tasks would look related to each other
    (simulated on BLiMP's design: Mantel rejects at 0.14–0.17 instead of 0.05). Removing the main effects
    is permutation-equivariant, so the tests stay exact and reject at their level under that null.
    """
    m = np.array(matrix, dtype=float)
    n = m.shape[0]
    off = offdiagonal(n)
    if n < 3:
        return np.where(off, m - m[off].mean() if off.any() else m, 0.0)
    m[~off] = 0.0
    m[off] -= m[off].mean()
    for _ in range(max_iter):
        r = m.sum(1) / (n - 1)
        m[off] -= np.broadcast_to(r[:, None], (n, n))[off]
        c = m.sum(0) / (n - 1)
        m[off] -= np.broadcast_to(c[None, :], (n, n))[off]
        if max(float(np.abs(r).max()), float(np.abs(c).max())) < tol:
            break
    m[~off] = 0.0
    return m


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(np.mean(x)), se


def _offdiag_ranks(matrix: np.ndarray) -> np.ndarray:
    """A matrix holding the average ranks of the off-diagonal entries (diagonal 0)."""
    n = matrix.shape[0]
    off = offdiagonal(n)
    r = np.zeros((n, n))
    r[off] = rankdata(matrix[off])
    return r


def spearman_offdiagonal(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation between the off-diagonal entries of two square matrices (NaN pairs dropped)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    off = offdiagonal(a.shape[0])
    x, y = a[off], b[off]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def mantel(matrix: np.ndarray, reference: np.ndarray, *, permutations: int = 999, seed: int = 0,
           chunk: int = 128) -> dict:
    """Spearman correlation of the off-diagonal entries of ``matrix`` with ``reference`` and a one-sided
    Mantel permutation test (is the correlation larger than chance?).

    Task labels are permuted jointly on rows and columns of ``matrix``. When ``n!`` is at most
    ``permutations + 1`` every permutation is enumerated and ``p`` is exact (the fraction of all
    permutations, the identity included, whose statistic is at least the observed one). Otherwise
    ``permutations`` random ones are drawn as successive ``rng.permutation(n)`` calls of
    ``numpy.random.default_rng(seed)`` and ``p = (1 + #{≥ observed}) / (1 + permutations)``.

    ``matrix`` must be finite off the diagonal (see :func:`complete_tasks`). Returns ``rho``, ``p``,
    ``permutations`` (the number used), ``exact`` and ``n_tasks``; ``rho`` and ``p`` are NaN when either
    matrix is constant off the diagonal (e.g. a single group).
    """
    s = np.asarray(matrix, dtype=float)
    h = np.asarray(reference, dtype=float)
    n = s.shape[0]
    off = offdiagonal(n)
    if not np.isfinite(s[off]).all():
        raise ValueError("matrix has non-finite off-diagonal entries; select complete tasks first")
    out = {"rho": float("nan"), "p": float("nan"), "permutations": 0, "exact": False, "n_tasks": n}
    if n < 3 or np.ptp(s[off]) == 0 or np.ptp(h[off]) == 0:
        return out
    # Spearman = Pearson of ranks. Permuting tasks permutes the off-diagonal entries among themselves,
    # so ranks, means and norms are invariant and only the cross product changes.
    a = _offdiag_ranks(s)
    b = _offdiag_ranks(h)
    a[off] -= a[off].mean()
    b[off] -= b[off].mean()
    norm = math.sqrt(float((a[off] ** 2).sum()) * float((b[off] ** 2).sum()))
    observed = float((a * b).sum()) / norm
    perms, exact = task_permutations(n, permutations, seed)
    count = 0
    for i in range(0, len(perms), chunk):
        p = perms[i:i + chunk]
        stats = (a[p[:, :, None], p[:, None, :]] * b).sum(axis=(1, 2)) / norm
        count += int((stats >= observed - _TIE_EPS).sum())
    out.update(rho=observed, p=permutation_p(count, len(perms), exact), permutations=int(len(perms)),
               exact=bool(exact))
    return out


def task_permutations(n: int, permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """The relabellings of ``n`` tasks a permutation test uses: all ``n!`` (``exact``) where that is at most
    ``permutations + 1``, else ``permutations`` successive ``rng.permutation(n)`` of
    ``numpy.random.default_rng(seed)``."""
    if math.factorial(n) <= permutations + 1:
        return np.array(list(itertools.permutations(range(n))), dtype=np.intp), True
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(permutations)]).astype(np.intp), False


def permutation_p(count: int, total: int, exact: bool) -> float:
    """``count`` statistics at least the observed among ``total`` relabellings: the exact share (the
    identity is among them), or ``(1 + count) / (1 + total)`` for random ones."""
    return float(count / total if exact else (1 + count) / (1 + total))
