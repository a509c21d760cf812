"""How much of a task space is signal: split-half reliability, self-similarity and the noise ceiling of
a theory comparison (docs/design.md, "Reliability"; docs/reliability.md).

Input: a *halves space*, what any probe writes when run with ``ProbeSettings(halves=True)``: a 2T × 2T
space over the pseudo-tasks ``t~1`` and ``t~2`` (disjoint halves of each task's pairs,
:func:`~taskspace.suites.splits.split_halves`). Its blocks are

- ``first = S[t~1, u~1]`` and ``second = S[t~2, u~2]``: the space measured twice, on independent halves;
- ``cross = S[t~1, u~2]`` (and ``S[t~2, u~1]``): across halves. Its diagonal is each task's
  *self-similarity* (cosine probes: cos of the task's two half vectors; overlap: Jaccard of its two half
  masks; transfer: fine-tuned on one half, evaluated on the other); its off-diagonal entries are the
  similarity of two different tasks measured the same way, the fair comparison for it.

Numbers (all Spearman over off-diagonal entries, both triangles, so asymmetric spaces such as transfer
need nothing special; for a symmetric space both triangles give the same ρ as one):

- split-half reliability ``r`` = ρ(first, second) over the tasks present in both halves, and its
  Spearman–Brown correction to the full sample, ``2r / (1 + r)`` (a negative ``r`` is reported
  uncorrected: the formula assumes a non-negative reliability);
- per task: the same over its row and column (``row_reliability``, corrected), its self-similarity,
  and its mean / max cross-half similarity to the other tasks; a task is *flagged* when its corrected row
  reliability is below :data:`ROW_FLAG` or its self-similarity is at most the mean cross-half similarity
  of two different tasks (its two halves are no more alike than two unrelated tasks are);
- the noise ceiling (Nili et al. 2014, as rsatoolbox computes it for Spearman with the two halves as
  two "subjects"): ``lower`` = mean over halves of ρ(half k, the other half) (leave one out: for two
  halves, ``r``), ``upper`` = mean over halves of ρ(half k, mean rank of both halves). The true ceiling of
  any hypothesis's mean ρ with a half lies between them; the hypothesis space H's mean ρ with the halves
  is given as a fraction of both bounds;
- for the full space (all pairs; reliability ``SB(r)``) the *pair-sampling ceiling*
  ``ρ_max(H) · sqrt(SB(r))``: no fixed hypothesis can correlate with a measurement better than the
  measurement's correlation with its own noise-free version (Spearman 1904), and no space can reach a
  Spearman ρ above ``ρ_max(H)`` with a 1/0 hypothesis, whose ties cap it (0.47 for BLiMP's 67 tasks in
  13 groups; :func:`~taskspace.analysis.inference.rho_max`). ``fraction = ρ(H, full) / ceiling`` is the
  theory comparison as a share of what the pairs and the hypothesis allow (1 = as grouped as the noise
  lets a perfectly grouped space look), with a bootstrap interval over tasks; it is withheld (``None``,
  with ``withheld`` saying why) where the reliability's interval reaches below :data:`MIN_RELIABILITY`,
  since dividing by the root of a reliability near 0 makes any ρ look like "all of it".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..probes.registry import space_reading
from ..probes.settings import LEVEL
from ..spaces import TaskSpace
from ..suites.splits import half_name, parse_half
from .bootstrap import percentile_ci, resample_tasks, rho_draws, rho_max_draws, task_counts
from .hypothesis import hypothesis_space
from .inference import interval_design, read, rho_max
from .stats import spearman_offdiagonal

#: a task whose Spearman–Brown-corrected row reliability is below this is flagged
ROW_FLAG = 0.2
#: the ceiling's fraction is withheld where the reliability (or its interval's lower end) is below this
MIN_RELIABILITY = 0.2
FLAG_RULE = (f"flagged: Spearman–Brown-corrected row reliability < {ROW_FLAG:g}, or self-similarity ≤ the mean "
             "cross-half similarity of two different tasks")
CEILING_METHOD = ("Nili et al. 2014 / rsatoolbox boot_noise_ceiling with method 'spearman', the two halves as "
                  "subjects: lower = mean ρ(half k, other half), upper = mean ρ(half k, mean rank of both); "
                  "full space: the pair-sampling ceiling rho_max(H) * sqrt(Spearman–Brown reliability)")


def is_halves_space(space: TaskSpace) -> bool:
    """True when every task of ``space`` is a half (``t~1`` / ``t~2``)."""
    return bool(space.tasks) and all(parse_half(t) is not None for t in space.tasks)


@dataclass
class Halves:
    """The blocks of a halves space over the tasks present in both halves (in half-1 order)."""

    tasks: list[str]
    groups: list[str]
    first: np.ndarray
    second: np.ndarray
    cross: np.ndarray        # S[t~1, u~2]
    cross_back: np.ndarray   # S[t~2, u~1]
    kind: str = ""
    provenance: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)   # tasks with only one half

    def space(self, k: int) -> TaskSpace:
        """Half ``k`` (1 or 2) as a T × T task space over the base task names."""
        return TaskSpace(self.first if k == 1 else self.second, self.tasks, self.groups, self.kind,
                         dict(self.provenance, half=k))


def split_space(space: TaskSpace) -> Halves:
    """The blocks of a 2T × 2T halves space; tasks with only one half are listed in ``missing``."""
    if not is_halves_space(space):
        odd = [t for t in space.tasks if parse_half(t) is None][:3]
        raise ValueError(f"not a halves space (tasks such as {', '.join(map(repr, odd))} are not t~1 / t~2); "
                         "run the probe with ProbeSettings(halves=True)")
    pos = {t: i for i, t in enumerate(space.tasks)}
    bases = list(dict.fromkeys(parse_half(t)[0] for t in space.tasks))  # type: ignore[index]
    both = [b for b in bases if half_name(b, 1) in pos and half_name(b, 2) in pos]
    missing = [b for b in bases if b not in both]
    i1 = [pos[half_name(b, 1)] for b in both]
    i2 = [pos[half_name(b, 2)] for b in both]
    m = space.matrix
    groups = [space.groups[i] for i in i1]
    bad = [b for b, a, c in zip(both, i1, i2) if space.groups[a] != space.groups[c]]
    if bad:
        raise ValueError(f"the halves of {bad[0]!r} are in different groups")
    return Halves(both, groups, m[np.ix_(i1, i1)], m[np.ix_(i2, i2)], m[np.ix_(i1, i2)], m[np.ix_(i2, i1)],
                  space.kind, dict(space.provenance), missing)


def spearman_brown(r: float) -> float:
    """``2r / (1 + r)``: the reliability of the full sample from the correlation of its two halves
    (``r`` itself when negative or not finite)."""
    if not (isinstance(r, (int, float)) and math.isfinite(r)) or r < 0:
        return float(r)
    return 2.0 * r / (1.0 + r)


def _offdiag_vectors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    off = ~np.eye(a.shape[0], dtype=bool)
    x, y = a[off], b[off]
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def noise_ceiling(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """Lower and upper bound of the noise ceiling of a Spearman comparison with one half (Nili et al.
    2014; rsatoolbox's ``boot_noise_ceiling(rdms, method='spearman')`` for two RDMs), over the
    off-diagonal entries finite in both halves."""
    x, y = _offdiag_vectors(np.asarray(first, float), np.asarray(second, float))
    lower = _spearman(x, y)
    if not math.isfinite(lower):
        return {"lower": float("nan"), "upper": float("nan")}
    pooled = (rankdata(x) + rankdata(y)) / 2.0      # rsatoolbox pools Spearman RDMs as their mean rank
    upper = (_spearman(pooled, x) + _spearman(pooled, y)) / 2.0
    return {"lower": lower, "upper": upper}


def _row_entries(m: np.ndarray, i: int) -> np.ndarray:
    """Row ``i`` and column ``i`` without the diagonal (a task's profile; both, for asymmetric spaces)."""
    keep = np.arange(m.shape[0]) != i
    return np.concatenate([m[i, keep], m[keep, i]])


def task_reliability(h: Halves) -> list[dict]:
    """Per task: ``row_r`` and ``row_reliability`` (Spearman–Brown), ``self_similarity`` (mean of
    ``S[t~1, t~2]`` and ``S[t~2, t~1]``), ``self_12`` / ``self_21``, ``others_mean`` / ``others_max``
    (cross-half similarity to the other tasks: ``S[t~k, u~j]``, u ≠ t, k ≠ j), ``self_rank`` (fraction of
    those below the self-similarity) and ``flagged`` (:data:`FLAG_RULE`)."""
    n = len(h.tasks)
    off = ~np.eye(n, dtype=bool)
    between = np.concatenate([h.cross[off], h.cross_back[off]])
    between = between[np.isfinite(between)]
    between_mean = float(between.mean()) if between.size else float("nan")
    rows = []
    for i, (t, g) in enumerate(zip(h.tasks, h.groups)):
        x, y = _row_entries(h.first, i), _row_entries(h.second, i)
        ok = np.isfinite(x) & np.isfinite(y)
        r = _spearman(x[ok], y[ok])
        s12, s21 = float(h.cross[i, i]), float(h.cross_back[i, i])
        selfs = [v for v in (s12, s21) if math.isfinite(v)]
        self_sim = float(np.mean(selfs)) if selfs else float("nan")
        others = np.concatenate([np.delete(h.cross[i], i), np.delete(h.cross_back[i], i)])
        others = others[np.isfinite(others)]
        rel = spearman_brown(r)
        flagged = bool((not math.isfinite(rel) or rel < ROW_FLAG)
                       or (not math.isfinite(self_sim)) or (math.isfinite(between_mean) and self_sim <= between_mean))
        rows.append({"task": t, "group": g, "row_r": r, "row_reliability": rel, "self_similarity": self_sim,
                     "self_12": s12, "self_21": s21,
                     "others_mean": float(others.mean()) if others.size else float("nan"),
                     "others_max": float(others.max()) if others.size else float("nan"),
                     "self_rank": float((others < self_sim).mean()) if others.size and math.isfinite(self_sim)
                     else float("nan"),
                     "flagged": flagged})
    return rows


def _distribution(v: np.ndarray) -> dict[str, float]:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return {k: float("nan") for k in ("mean", "min", "q10", "q25", "median", "q75", "max")} | {"n": 0}
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75])
    return {"mean": float(v.mean()), "min": float(v.min()), "q10": float(q[0]), "q25": float(q[1]),
            "median": float(q[2]), "q75": float(q[3]), "max": float(v.max()), "n": int(v.size)}


def reliability(halves: TaskSpace, full: TaskSpace | None = None, *, resamples: int = 0, seed: int = 0,
                level: float = LEVEL, per_task: bool = True, sign: float | None = None,
                absolute: bool | None = None) -> dict[str, Any]:
    """Everything this module computes, for one halves space (and the full space beside it, if any).

    Keys: ``kind``, ``n_tasks`` (present in both halves), ``missing`` (one half only), ``split_half``
    (r), ``reliability`` (Spearman–Brown), ``noise_ceiling`` (``lower``, ``upper``, ``method``),
    ``theory`` (ρ of H with each half, their mean, and that mean as a fraction of the ceiling's ``upper``
    and ``lower`` bound), ``full`` (when ``full`` is given: ρ of H with it, ``ceiling`` = sqrt of the
    reliability, ``fraction``), ``self_similarity`` and ``between`` (distributions of the cross-half
    diagonal and off-diagonal), ``flagged`` (tasks), ``rule``, and ``tasks`` (per task,
    :func:`task_reliability`) unless ``per_task=False``. With ``resamples`` > 0, ``split_half_ci`` and
    ``reliability_ci``: bootstrap intervals over tasks (:mod:`taskspace.analysis.bootstrap`).
    """
    declared = space_reading(str(halves.kind))
    sign = declared[0] if sign is None else sign
    absolute = declared[1] if absolute is None else absolute
    h = split_space(halves)
    x, y = _offdiag_vectors(h.first, h.second)
    r = _spearman(x, y)
    nc = noise_ceiling(h.first, h.second)
    hyp = hypothesis_space(h.groups)
    rho_h = [spearman_offdiagonal(read(h.first, sign, absolute), hyp),
             spearman_offdiagonal(read(h.second, sign, absolute), hyp)]
    rho_mean = float(np.mean(rho_h)) if all(math.isfinite(v) for v in rho_h) else float("nan")

    def frac(a: float, b: float) -> float:
        return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")

    rows = task_reliability(h)
    n = len(h.tasks)
    off = ~np.eye(n, dtype=bool)
    out: dict[str, Any] = {
        "kind": h.kind, "n_tasks": n, "missing": h.missing, "split_half": r, "reliability": spearman_brown(r),
        "noise_ceiling": {**nc, "method": CEILING_METHOD},
        # ρ with a 1/0 hypothesis cannot exceed ρ_max(H) (its ties), so the bounds are scaled by it
        "theory": {"rho_halves": rho_h, "rho": rho_mean,
                   "fraction_of_upper": frac(rho_mean, rho_max(h.groups) * nc["upper"]),
                   "fraction_of_lower": frac(rho_mean, rho_max(h.groups) * nc["lower"])},
        "self_similarity": _distribution(np.array([t["self_similarity"] for t in rows])),
        "between": _distribution(np.concatenate([h.cross[off], h.cross_back[off]])),
        "row_reliability": _distribution(np.array([t["row_reliability"] for t in rows])),
        "flagged": [t["task"] for t in rows if t["flagged"]],
        "rule": FLAG_RULE,
    }
    counts = split_draws = None
    design_ok, design_why = interval_design(h.groups)
    if resamples > 0 and n >= 3 and not design_ok:
        out["interval_withheld"] = design_why
    if resamples > 0 and n >= 3 and design_ok:
        counts = task_counts(resample_tasks(h.groups, resamples, seed), n)
        ok = np.isfinite(h.first) & np.isfinite(h.second)
        np.fill_diagonal(ok, True)
        if ok.all():
            split_draws = rho_draws(h.first, h.second, counts)
            out["split_half_ci"] = percentile_ci(split_draws, level)
            out["reliability_ci"] = [spearman_brown(v) for v in out["split_half_ci"]]
    out["full"] = _full_ceiling(out, h, full, sign, absolute, counts, split_draws, level)
    if per_task:
        out["tasks"] = rows
    return out


def _full_ceiling(out: dict, h: Halves, full: TaskSpace | None, sign: float, absolute: bool, counts, split_draws,
                  level: float) -> dict:
    """The full space's ρ with H against the pair-sampling ceiling ``ρ_max(H) · sqrt(reliability)``."""
    rel = out["reliability"]
    rmax = rho_max(h.groups)
    ceiling = rmax * math.sqrt(rel) if math.isfinite(rel) and rel > 0 and math.isfinite(rmax) else float("nan")
    entry: dict[str, Any] = {"rho": float("nan"), "rho_max": rmax, "ceiling": ceiling, "fraction": float("nan"),
                             "fraction_ci": [float("nan")] * 2, "n_tasks": 0, "withheld": None}
    rel_lo = (out.get("reliability_ci") or [rel])[0]
    if not (math.isfinite(rel_lo) and rel_lo >= MIN_RELIABILITY):
        entry["withheld"] = (f"the reliability's interval reaches below {MIN_RELIABILITY:g}: a fraction of so "
                             "noisy a ceiling means nothing")
    if full is None:
        return entry
    common = [t for t in h.tasks if t in set(full.tasks)]
    f = full.select(common)
    m = read(f.matrix, sign, absolute)
    hyp = hypothesis_space(f.groups)
    entry["rho"] = spearman_offdiagonal(m, hyp)
    entry["n_tasks"] = len(common)
    if entry["withheld"] is None and math.isfinite(ceiling) and ceiling > 0:
        entry["fraction"] = entry["rho"] / ceiling
        # the ceiling assumes the space's reliable structure is not all the grouping; where it is, the
        # split-half r is itself about ρ_max² and the fraction can pass 1: read that as "at the ceiling"
        entry["at_ceiling"] = bool(entry["fraction"] >= 1.0)
        if counts is not None and split_draws is not None and common == h.tasks and np.isfinite(m[
                ~np.eye(len(common), dtype=bool)]).all():
            rho_d = rho_draws(m, hyp, counts)
            sb = np.array([spearman_brown(v) for v in split_draws])
            with np.errstate(invalid="ignore", divide="ignore"):
                # each draw against its own attainable ρ (a rebuilt space has fewer within-group entries)
                rmax_d = rho_max_draws(f.groups, counts)
                frac = np.where(sb > 0, rho_d / (rmax_d * np.sqrt(np.where(sb > 0, sb, 1.0))), np.nan)
            entry["fraction_ci"] = percentile_ci(frac, level)
    return entry
