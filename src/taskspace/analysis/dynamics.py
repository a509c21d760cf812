"""Task spaces across training checkpoints: correlation with the next and the final space, the
within − between gap per step, and the stability test behind "smooth, no sudden stages"
(docs/reliability.md, "Dynamics").

Noise alone lowers the correlation of two checkpoints' spaces by ``sqrt(r_t · r_t+1)`` (their half
reliabilities), so raw consecutive ρ cannot tell a reorganisation from noise. :func:`stability` compares
checkpoints *across* halves, ``ρ̃_t = ½[ρ(S_t¹, S_t+1²) + ρ(S_t², S_t+1¹)] / sqrt(r_t · r_t+1)`` (1 = the
same space up to noise), takes the change ``1 − ρ̃`` per unit of log training step, and bootstraps tasks
(the same resampled tasks at every checkpoint) for the ratio of each change to the median of the
others. "sudden" needs that ratio's interval above :data:`SUDDEN_RATIO`; "smooth" is an equivalence
result (every ratio's interval below it, every half reliability at least :data:`MIN_HALF_R`, at least
:data:`MIN_TRANSITIONS` transitions after the onset of training); anything else is "inconclusive"."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from ..probes.settings import BOOTSTRAP as RESAMPLES
from ..spaces import TaskSpace
from .bootstrap import percentile_ci, resample_tasks, rho_draws, task_counts, within_between_draws
from .inference import interval_design, read
from .reliability import split_space
from .stats import spearman_offdiagonal, within_between

# A step-to-step change this many times the median of the other changes counts as a sudden stage.
SUDDEN_RATIO = 3.0
#: a stage must reorganise at least this much (1 − ρ̃ of one transition) to count as sudden
MIN_STAGE = 0.1
#: the median change is floored at this (per unit log step): tiny changes (0.01 vs 0.04) are no stage
CHANGE_FLOOR = 0.02
#: "smooth" needs every checkpoint's split-half r at least this (the correction divides by its root)
MIN_HALF_R = 0.5
#: transitions after the onset of training that a verdict needs
MIN_TRANSITIONS = 4
SUDDEN, SMOOTH, INCONCLUSIVE = "sudden", "smooth", "inconclusive"
_STEP = re.compile(r"^step(\d+)$")


def step_of(revision: str | None) -> int | None:
    """The training step of a ``stepN`` revision, else None."""
    m = _STEP.match(str(revision or ""))
    return int(m.group(1)) if m else None


def revision_key(revision: str | None) -> tuple:
    """Sort key: fresh initialisations (``init``, ``init:SEED``) first, ``stepN`` by N, others by name."""
    r = str(revision or "")
    if r == "init" or r.startswith("init:"):
        return (0, 0, r)
    s = step_of(r)
    return (1, s, "") if s is not None else (2, 0, r)


def common_tasks(a: TaskSpace, b: TaskSpace) -> list[str]:
    """Tasks present in both spaces, in ``a``'s order."""
    tb = set(b.tasks)
    return [t for t in a.tasks if t in tb]


def space_correlation(a: TaskSpace, b: TaskSpace) -> float:
    """Spearman correlation between the off-diagonal entries of two spaces over their common tasks."""
    tasks = common_tasks(a, b)
    if len(tasks) < 3:
        return float("nan")
    return spearman_offdiagonal(a.select(tasks).matrix, b.select(tasks).matrix)


def space_dynamics(revisions: Sequence[str], spaces: Sequence[TaskSpace], *,
                   untrained: Sequence[bool] | None = None, sign: float = 1.0, absolute: bool = False) -> dict:
    """Dynamics of one probe's spaces over checkpoints given in training order.

    Returns ``revisions``, ``steps``, ``rho_next`` (Spearman of each space with the next one),
    ``rho_final`` (with the last one), ``change`` (``1 − rho_next``), the signed and absolute
    ``within``/``between``/``difference`` per checkpoint, and ``largest_change``: the largest raw change,
    where it happens, and its ratio to the median of the others — descriptive only: noise lowers every
    raw ρ, so this ratio cannot tell a stage from noise; the verdict is :func:`stability`'s. When the
    largest change starts at an untrained checkpoint (``untrained[i]``, e.g. step0),
    ``largest_change["trained_only"]`` repeats it over the later transitions.
    """
    revisions = list(revisions)
    n = len(spaces)
    rho_next = [space_correlation(spaces[i], spaces[i + 1]) for i in range(n - 1)]
    rho_final = [space_correlation(s, spaces[-1]) for s in spaces] if n else []

    units = 1.0 if absolute or sign > 0 else -1.0       # within / between in the space's own units
    wb = [within_between(read(s.matrix, sign, absolute), s.groups) for s in spaces]
    wb = [{**w, "within": units * w["within"], "between": units * w["between"]} for w in wb]
    wba = [within_between(s.matrix, s.groups, absolute=True) for s in spaces]
    change = [1.0 - r if np.isfinite(r) else float("nan") for r in rho_next]
    untrained = list(untrained) if untrained is not None else [step_of(r) == 0 for r in revisions]
    largest = largest_change(change, [f"{revisions[i]}→{revisions[i + 1]}" for i in range(n - 1)])
    if largest.get("at_index") == 0 and untrained and untrained[0] and len(change) >= 3:
        largest["trained_only"] = largest_change(change[1:], [f"{revisions[i]}→{revisions[i + 1]}"
                                                              for i in range(1, n - 1)])
    return {"revisions": revisions, "steps": [step_of(r) for r in revisions],
            "rho_next": rho_next, "rho_final": rho_final, "change": change,
            "within": [w["within"] for w in wb], "between": [w["between"] for w in wb],
            "difference": [w["difference"] for w in wb],
            "se_difference": [w["se_difference"] for w in wb],
            "difference_abs": [w["difference"] for w in wba],
            "largest_change": largest}


def largest_change(change: Sequence[float], labels: Sequence[str]) -> dict:
    """The largest step-to-step change and its ratio to the median of the other changes (descriptive:
    no verdict — raw changes mix reorganisation with noise; :func:`stability` tests).

    Needs at least two transitions (``ratio`` is NaN otherwise).
    """
    c = np.asarray(change, dtype=float)
    ok = np.flatnonzero(np.isfinite(c))
    out = {"largest": None, "at": None, "at_index": None, "ratio": float("nan"), "n_transitions": int(ok.size)}
    if ok.size == 0:
        return out
    i = int(ok[np.argmax(c[ok])])
    out.update(largest=float(c[i]), at=labels[i], at_index=i)
    if ok.size >= 2:
        others = np.delete(c[ok], int(np.argmax(c[ok])))
        med = float(np.median(others))
        ratio = float(c[i] / med) if med > 0 else (float("inf") if c[i] > 0 else 1.0)
        out.update(ratio=ratio)
    return out


def _log_step(revision: str | None, i: int) -> float:
    step = step_of(revision)
    return math.log1p(step) if step is not None else float(i)


def stability(revisions: Sequence[str], halves: Sequence[TaskSpace | None], *, untrained: Sequence[bool],
              sign: float = 1.0, absolute: bool = False, resamples: int = RESAMPLES, seed: int = 0,
              alpha: float = 0.05) -> dict:
    """The noise-corrected stability test of one model's checkpoints (module docstring).

    ``halves``: each checkpoint's halves space (None where the probe did not run on halves). Returns
    ``verdict`` (``sudden`` / ``smooth`` / ``inconclusive``), ``reason``, ``p_sudden`` (bootstrap p of
    the most sudden transition, Bonferroni over transitions), per transition ``labels``, ``rho_corrected``,
    ``change`` (1 − ρ̃), ``change_per_logstep``, ``ratio`` with ``ratio_ci`` (the one-sided bounds at
    ``alpha / J``), ``half_r`` per checkpoint, and ``detectable``: the largest ratio the data do not
    exclude (the largest upper bound; a stage above it would have been seen).
    """
    out: dict = {"verdict": INCONCLUSIVE, "reason": "", "p_sudden": float("nan"), "labels": [],
                 "rho_corrected": [], "change": [], "change_per_logstep": [], "ratio": [], "ratio_ci": [],
                 "half_r": [], "detectable": float("nan"), "threshold": SUDDEN_RATIO, "min_stage": MIN_STAGE}
    idx, onset = _trained_checkpoints(halves, untrained)
    n_trans = len(idx) - 1 - (1 if onset else 0)
    if n_trans < MIN_TRANSITIONS:
        out["reason"] = (f"{max(n_trans, 0)} transition(s) with halves after the onset of training; a verdict needs "
                         f"{MIN_TRANSITIONS}" + ("" if len(idx) == len(halves) else
                                                 " (the probe ran on halves at too few checkpoints)"))
        return out
    parts = [split_space(halves[i]) for i in idx]
    tasks = [t for t in parts[0].tasks if all(t in set(p.tasks) for p in parts[1:])]
    if len(tasks) < 4:
        out["reason"] = "fewer than four tasks at every checkpoint"
        return out
    groups = [parts[0].groups[parts[0].tasks.index(t)] for t in tasks]
    blocks = [_half_pair(p, tasks, sign, absolute) for p in parts]
    if not all(np.isfinite(a[~np.eye(len(tasks), dtype=bool)]).all() and
               np.isfinite(b[~np.eye(len(tasks), dtype=bool)]).all() for a, b in blocks):
        out["reason"] = "a halves space has missing entries"
        return out
    counts = np.vstack([np.ones((1, len(tasks))),
                        task_counts(resample_tasks(groups, resamples, seed), len(tasks))])  # row 0: the data
    half_r = np.stack([rho_draws(a, b, counts) for a, b in blocks])                          # (C, 1 + B)
    logs = [_log_step(revisions[i], k) for k, i in enumerate(idx)]
    rho_t, change = _transitions(blocks, counts, half_r, logs)
    first = 1 if onset else 0                          # the onset of training is expected to be the largest
    rho_t, change = np.stack(rho_t[first:]), np.stack(change[first:])
    raw_change = 1.0 - rho_t
    labels = [f"{revisions[idx[k]]}→{revisions[idx[k + 1]]}" for k in range(first, len(idx) - 1)]
    J = len(labels)
    ratios = _change_ratios(change)
    q = alpha / J
    lo = [float(np.nanquantile(r[1:], q)) for r in ratios]
    hi = [float(np.nanquantile(r[1:], 1 - q)) for r in ratios]
    stage_lo = [float(np.nanquantile(c[1:], q)) for c in raw_change]
    # bootstrap p of "ratio_j ≤ threshold or the stage is too small", Bonferroni over transitions
    pj = [min(1.0, J * float(np.nanmean((r[1:] <= SUDDEN_RATIO) | (c[1:] <= MIN_STAGE)))) for r, c in zip(ratios, raw_change)]
    out.update(labels=labels, rho_corrected=rho_t[:, 0].tolist(), change=raw_change[:, 0].tolist(),
               change_per_logstep=change[:, 0].tolist(), ratio=ratios[:, 0].tolist(),
               ratio_ci=[[a, b] for a, b in zip(lo, hi)], half_r=half_r[:, 0].tolist(),
               p_sudden=float(min(pj)), detectable=float(max(hi)))
    # only the checkpoints whose transitions are tested must be reliable: the onset (an untrained
    # initialisation, often the noisiest space) is kept as a starting point, never tested
    _verdict(out, lo, hi, stage_lo, min_half_r=float(half_r[first:, 0].min()))
    return out


def _trained_checkpoints(halves: Sequence[TaskSpace | None], untrained: Sequence[bool]) -> tuple[list[int], bool]:
    """The checkpoints with halves from the onset of training on (the last untrained one kept), and
    whether the first of them is untrained."""
    idx = [i for i, h in enumerate(halves) if h is not None]
    start = next((k for k, i in enumerate(idx) if not untrained[i]), len(idx))
    if start > 0:                                     # keep the last untrained checkpoint: the onset of training
        start -= 1
    idx = idx[start:]
    return idx, bool(idx) and untrained[idx[0]]


def _half_pair(p: Any, tasks: Sequence[str], sign: float, absolute: bool) -> tuple[np.ndarray, np.ndarray]:
    """The two halves' matrices of one checkpoint over ``tasks``, read as the probe's values."""
    pos = [p.tasks.index(t) for t in tasks]
    sel = np.ix_(pos, pos)
    return read(p.first[sel], sign, absolute), read(p.second[sel], sign, absolute)


def _transitions(blocks: Sequence[tuple[np.ndarray, np.ndarray]], counts: np.ndarray, half_r: np.ndarray,
                 logs: Sequence[float]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per transition, the noise-corrected correlation ρ̃ of consecutive checkpoints (cross-half
    correlations over the geometric mean of their split-half r) and its change per log step, for the
    data and every bootstrap draw."""
    rho_t, change = [], []
    for k in range(len(blocks) - 1):
        cross = (rho_draws(blocks[k][0], blocks[k + 1][1], counts) + rho_draws(blocks[k][1], blocks[k + 1][0], counts)) / 2
        with np.errstate(invalid="ignore"):
            rt = cross / np.sqrt(half_r[k] * half_r[k + 1])
        rho_t.append(rt)
        change.append((1.0 - rt) / max(logs[k + 1] - logs[k], 1e-9))
    return rho_t, change


def _change_ratios(change: np.ndarray) -> np.ndarray:
    """Each transition's change over the median change of the others (floored at ``CHANGE_FLOOR``)."""
    ratios = np.empty_like(change)
    for j in range(len(change)):
        med = np.median(np.delete(change, j, axis=0), axis=0)
        ratios[j] = change[j] / np.maximum(med, CHANGE_FLOOR)
    return ratios


def _verdict(out: dict, lo: Sequence[float], hi: Sequence[float], stage_lo: Sequence[float], *,
             min_half_r: float) -> None:
    """``out``'s verdict and reason from the ratios' bounds, the stages' lower bounds and the smallest
    split-half r of the checkpoints whose transitions are tested."""
    labels = out["labels"]
    if any(a > SUDDEN_RATIO and s > MIN_STAGE for a, s in zip(lo, stage_lo)):
        j = int(np.argmax(lo))
        out.update(verdict=SUDDEN, reason=f"{labels[j]}: the change ratio's interval lies above {SUDDEN_RATIO:g}")
    elif min_half_r < MIN_HALF_R:
        out["reason"] = (f"a tested checkpoint's split-half r is {min_half_r:.2f}, below {MIN_HALF_R:g}: too noisy "
                         "to exclude a stage")
    elif max(hi) < SUDDEN_RATIO:
        out.update(verdict=SMOOTH, reason=f"every change ratio's interval lies below {SUDDEN_RATIO:g}")
    else:
        out["reason"] = (f"no interval lies above {SUDDEN_RATIO:g}, but the data cannot exclude a stage of "
                         f"{max(hi):.1f}× the median change")


def gap_trend(revisions: Sequence[str], spaces: Sequence[TaskSpace], *, sign: float = 1.0, absolute: bool = False,
              resamples: int = RESAMPLES, seed: int = 0, untrained: Sequence[bool] | None = None) -> dict:
    """The within − between gap's least-squares slope over ``log(1 + step)`` across every *trained*
    checkpoint, with a bootstrap over tasks (the same resampled tasks at every checkpoint): ``slope``,
    ``ci`` (95%), ``p_up`` / ``p_down`` (one-sided bootstrap p of a slope ≤ 0 / ≥ 0), ``n_checkpoints``,
    ``revisions`` (those fitted), or ``withheld`` with the reason.

    Untrained checkpoints (``untrained``) are left out: at ``log(1 + 0) = 0`` step 0 would carry most of
    the slope's leverage (0.66 with step0/1000/2577), so a gap that jumps at the onset and then falls
    would read as "grows with training". With two trained checkpoints the slope is their paired change
    over the log-step between them."""
    if untrained is not None:
        keep = [i for i, u in enumerate(untrained) if not u]
        revisions, spaces = [revisions[i] for i in keep], [spaces[i] for i in keep]
    out = {"slope": float("nan"), "ci": [float("nan")] * 2, "p_up": float("nan"), "p_down": float("nan"),
           "n_checkpoints": len(spaces), "revisions": list(revisions), "withheld": None}
    if len(spaces) < 2:
        out["withheld"] = "fewer than two trained checkpoints"
        return out
    tasks = [t for t in spaces[0].tasks if all(t in set(s.tasks) for s in spaces[1:])]
    if len(tasks) < 3:
        out["withheld"] = "fewer than three common tasks"
        return out
    subs = [s.select(tasks) for s in spaces]
    groups = subs[0].groups
    x = np.array([_log_step(r, i) for i, r in enumerate(revisions)])
    x = x - x.mean()
    counts = np.vstack([np.ones((1, len(tasks))), task_counts(resample_tasks(groups, max(resamples, 1), seed),
                                                             len(tasks))])
    gaps = np.stack([within_between_draws(read(s.matrix, sign, absolute), groups, counts)["difference"]
                     for s in subs])                                     # (C, 1 + B)
    slopes = (x[:, None] * gaps).sum(0) / (x ** 2).sum()
    out["slope"] = float(slopes[0])
    ok, why = interval_design(groups)
    if not ok or resamples < 1:
        out["withheld"] = why or "no bootstrap"
        return out
    d = slopes[1:]
    d = d[np.isfinite(d)]
    out.update(ci=percentile_ci(d), p_up=float((1 + (d <= 0).sum()) / (1 + d.size)),
               p_down=float((1 + (d >= 0).sum()) / (1 + d.size)))
    return out
