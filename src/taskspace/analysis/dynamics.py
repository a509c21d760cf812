"""Task spaces across training checkpoints: correlation with the next and the final space, the
within − between gap per step, and a "sudden stage" indicator (DESIGN §2)."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..spaces import TaskSpace
from .stats import spearman_offdiagonal, within_between

# A step-to-step change this many times the median of the other changes counts as a sudden stage.
SUDDEN_RATIO = 3.0
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
                   untrained: Sequence[bool] | None = None) -> dict:
    """Dynamics of one probe's spaces over checkpoints given in training order.

    Returns ``revisions``, ``steps``, ``rho_next`` (Spearman of each space with the next one),
    ``rho_final`` (with the last one), ``change`` (``1 − rho_next``), the signed and absolute
    ``within``/``between``/``difference`` per checkpoint, and ``sudden``: the largest change, where it
    happens, and its ratio to the median of the other changes (``ratio > SUDDEN_RATIO`` flags a sudden
    stage). When the largest change starts at an untrained checkpoint (``untrained[i]``, e.g. step0),
    the onset of training is expected to be the largest and ``sudden["trained_only"]`` repeats the test
    over the later transitions.
    """
    revisions = list(revisions)
    n = len(spaces)
    rho_next = [space_correlation(spaces[i], spaces[i + 1]) for i in range(n - 1)]
    rho_final = [space_correlation(s, spaces[-1]) for s in spaces] if n else []
    wb = [within_between(s.matrix, s.groups) for s in spaces]
    wba = [within_between(s.matrix, s.groups, absolute=True) for s in spaces]
    change = [1.0 - r if np.isfinite(r) else float("nan") for r in rho_next]
    untrained = list(untrained) if untrained is not None else [step_of(r) == 0 for r in revisions]
    sudden = sudden_stage(change, [f"{revisions[i]}→{revisions[i + 1]}" for i in range(n - 1)])
    if sudden.get("at_index") == 0 and untrained and untrained[0] and len(change) >= 3:
        sudden["trained_only"] = sudden_stage(change[1:], [f"{revisions[i]}→{revisions[i + 1]}"
                                                           for i in range(1, n - 1)])
    return {"revisions": revisions, "steps": [step_of(r) for r in revisions],
            "rho_next": rho_next, "rho_final": rho_final, "change": change,
            "within": [w["within"] for w in wb], "between": [w["between"] for w in wb],
            "difference": [w["difference"] for w in wb],
            "se_difference": [w["se_difference"] for w in wb],
            "difference_abs": [w["difference"] for w in wba],
            "sudden": sudden}


def sudden_stage(change: Sequence[float], labels: Sequence[str]) -> dict:
    """The largest step-to-step change and its ratio to the median of the other changes.

    Needs at least two transitions (``ratio`` is NaN otherwise). ``sudden`` is True when the ratio
    exceeds :data:`SUDDEN_RATIO`.
    """
    c = np.asarray(change, dtype=float)
    ok = np.flatnonzero(np.isfinite(c))
    out = {"largest": None, "at": None, "at_index": None, "ratio": float("nan"), "sudden": None,
           "threshold": SUDDEN_RATIO, "n_transitions": int(ok.size)}
    if ok.size == 0:
        return out
    i = int(ok[np.argmax(c[ok])])
    out.update(largest=float(c[i]), at=labels[i], at_index=i)
    if ok.size >= 2:
        others = np.delete(c[ok], int(np.argmax(c[ok])))
        med = float(np.median(others))
        ratio = float(c[i] / med) if med > 0 else (float("inf") if c[i] > 0 else 1.0)
        out.update(ratio=ratio, sudden=bool(ratio > SUDDEN_RATIO))
    return out
