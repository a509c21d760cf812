"""The TaskSpace: a tasks × tasks matrix from one probe on one model checkpoint (docs/design.md, "Vocabulary", "Files").

On disk a task space is a square CSV (task ids as header and index) plus a JSON sidecar with kind,
groups, model, revision, probe settings, convention and versions. Optional confidence bounds and
per-module matrices travel in the sidecar. No pickle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError
from .io import atomic_path, read_json, write_json

# pandas is imported where a space is read or written as CSV: `import taskspace` starts without it


@dataclass
class TaskSpace:
    """A square matrix over tasks with labels and provenance.

    Attributes
    ----------
    matrix : (n, n) float array; ``matrix[a, b]`` is the probe's value for task a (row) and b (column).
        Transfer spaces are not symmetric: row = the task fine-tuned on, column = the task evaluated.
    tasks : task ids, in the order of the rows.
    groups : the group of each task.
    kind : what the entries are, e.g. ``gradients``, ``overlap``, ``transfer_margin``,
        ``transfer_margin_normalized``, ``baseline_margin``.
    provenance : model, revision, probe settings, convention, seed, versions, …
    ci_low, ci_high : optional (n, n) arrays, a confidence interval per entry (NaN where none).
    """

    matrix: np.ndarray
    tasks: list[str]
    groups: list[str]
    kind: str
    provenance: dict = field(default_factory=dict)
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        self.tasks = [str(t) for t in self.tasks]
        self.groups = [str(g) for g in self.groups]
        n = len(self.tasks)
        if self.matrix.shape != (n, n):
            raise ValueError(f"matrix shape {self.matrix.shape} does not match {n} tasks")
        if len(self.groups) != n:
            raise ValueError(f"{len(self.groups)} groups for {n} tasks")
        if len(set(self.tasks)) != n:
            raise ValueError("task ids must be unique")
        for name in ("ci_low", "ci_high"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64)
                if v.shape != (n, n):
                    raise ValueError(f"{name} shape {v.shape} does not match {n} tasks")
                setattr(self, name, v)

    # -- views -----------------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def to_pandas(self):
        """The matrix as a DataFrame, task ids as index and columns."""
        import pandas as pd

        return pd.DataFrame(self.matrix, index=pd.Index(self.tasks, name="task"), columns=self.tasks)

    def hypothesis(self) -> np.ndarray:
        """The hypothesis space H: 1 where a ≠ b share a group, 0 elsewhere (diagonal 0)."""
        g = np.asarray(self.groups)
        h = (g[:, None] == g[None, :]).astype(float)
        np.fill_diagonal(h, 0.0)
        return h

    def within_between(self) -> dict:
        """Within- and between-group means and their difference as the mean of per-group contrasts
        (:func:`within_between`; the entries as given, whatever direction the space reads)."""
        return within_between(self.matrix, self.groups)

    def select(self, tasks: Sequence[str]) -> "TaskSpace":
        """The sub-space over ``tasks`` (in that order)."""
        idx = [self.tasks.index(t) for t in tasks]
        sub = np.ix_(idx, idx)
        return TaskSpace(self.matrix[sub], [self.tasks[i] for i in idx], [self.groups[i] for i in idx],
                         self.kind, dict(self.provenance),
                         None if self.ci_low is None else self.ci_low[sub],
                         None if self.ci_high is None else self.ci_high[sub])

    def symmetrized(self) -> "TaskSpace":
        """``(S + Sᵀ) / 2`` (for clustering a transfer space)."""
        return TaskSpace((self.matrix + self.matrix.T) / 2, self.tasks, self.groups,
                         self.kind + "_symmetric", dict(self.provenance))

    # -- I/O -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.csv`` and ``<path>.json`` (``path`` may end in .csv or .json), atomically.

        Values are written with 17 significant digits so ``load`` gives back the same floats.
        """
        csv = _csv_path(path)
        df = self.to_pandas()
        with atomic_path(csv) as tmp:
            df.to_csv(tmp, float_format="%.17g")
        side = {"kind": self.kind, "tasks": self.tasks, "groups": self.groups,
                "provenance": self.provenance}
        if self.ci_low is not None:
            side["ci_low"] = _nan_to_none(self.ci_low)
        if self.ci_high is not None:
            side["ci_high"] = _nan_to_none(self.ci_high)
        write_json(csv.with_suffix(".json"), side)
        return csv

    @classmethod
    def load(cls, path: str | Path) -> "TaskSpace":
        """Read a task space written by :meth:`save` (give the .csv, the .json or the stem)."""
        import pandas as pd


        csv = _csv_path(path)
        side_path = csv.with_suffix(".json")
        for p in (csv, side_path):
            if not p.exists():
                raise InputError("file not found", file=p)
        # cells as text, then Python's exact float parsing: pandas < 3's fast parser can miss the last bit
        # of a %.17g float, and pandas 3 deprecates asking for its exact one (float_precision)
        df = pd.read_csv(csv, index_col=0, dtype=str)
        try:
            side = read_json(side_path)
        except ValueError as e:
            raise InputError(f"malformed JSON ({e})", file=side_path) from None
        tasks = [str(t) for t in df.index]
        if [str(c) for c in df.columns] != tasks:
            raise InputError("header and index list different tasks", file=csv)
        if side.get("tasks", tasks) != tasks:
            raise InputError("tasks differ from the CSV's", file=side_path, field="tasks")
        ci = {k: (np.array(side[k], dtype=float) if k in side else None) for k in ("ci_low", "ci_high")}
        return cls(df.to_numpy(dtype=object).astype(np.float64), tasks, side["groups"], side["kind"],
                   side.get("provenance", {}), ci["ci_low"], ci["ci_high"])

    def __repr__(self) -> str:
        wb = self.within_between()
        return (f"TaskSpace(kind={self.kind!r}, tasks={self.n_tasks}, groups={len(set(self.groups))}, "
                f"within={wb['within']:.3g}, between={wb['between']:.3g})")


def _nan_to_none(a: np.ndarray) -> list:
    return [[None if not np.isfinite(x) else float(x) for x in row] for row in a]


def _csv_path(path: str | Path) -> Path:
    """``x``, ``x.csv`` or ``x.json`` → ``x.csv``; dots inside names (``block0.attn``) are kept."""
    p = Path(path)
    if p.suffix in (".csv", ".json"):
        return p.with_suffix(".csv")
    return p.with_name(p.name + ".csv")


def group_contrasts(matrix: np.ndarray, groups: Sequence[str], *, absolute: bool = False) -> dict[str, dict]:
    """Per group with at least two tasks: ``within`` (mean of ``S[a, b]``, a ≠ b both in the group),
    ``between`` (mean of ``S[a, b]`` and ``S[b, a]``, a in the group, b outside it), ``gap`` (their
    difference) and ``n_tasks``. NaN entries are ignored."""
    m = np.abs(np.asarray(matrix, dtype=float)) if absolute else np.asarray(matrix, dtype=float)
    g = np.asarray([str(x) for x in groups])
    out: dict[str, dict] = {}
    for grp in dict.fromkeys(g.tolist()):
        inside = g == grp
        if inside.sum() < 2:
            continue
        block = m[np.ix_(inside, inside)]
        w = block[~np.eye(int(inside.sum()), dtype=bool)]
        b = np.concatenate([m[np.ix_(inside, ~inside)].ravel(), m[np.ix_(~inside, inside)].ravel()])
        w, b = w[np.isfinite(w)], b[np.isfinite(b)]
        wm = float(w.mean()) if w.size else float("nan")
        bm = float(b.mean()) if b.size else float("nan")
        out[grp] = {"within": wm, "between": bm, "gap": wm - bm, "n_tasks": int(inside.sum())}
    return out


def within_between(matrix: np.ndarray, groups: Sequence[str], *, absolute: bool = False) -> dict:
    """Within- and between-group means of a space's off-diagonal entries and their difference, as the
    mean of per-group contrasts (docs/reliability.md, "The gap").

    Each group with at least two tasks gives one contrast, ``within_g − between_g`` (its within-group
    entries against its entries with tasks outside it), and ``difference`` is their unweighted mean:
    every group counts once, whatever its size (pooling all within-group entries would weight a group
    of n tasks by n(n − 1), so one large group would decide). ``within`` and ``between`` are the means
    of the groups' ``within_g`` and ``between_g``; ``groups`` lists each group's numbers.

    With ``absolute=True`` the means are of ``|S|``. The entries are read as given: orient a space first
    (:func:`taskspace.analysis.inference.read`). ``se_difference``: the standard error of the mean over
    groups (NaN with one group), a rough guide where no interval was computed.
    """
    per = group_contrasts(matrix, groups, absolute=absolute)
    gaps = np.array([v["gap"] for v in per.values()], dtype=float)
    ok = np.isfinite(gaps)
    wm = _nanmean([v["within"] for v, k in zip(per.values(), ok) if k])
    bm = _nanmean([v["between"] for v, k in zip(per.values(), ok) if k])
    gap_mean, gap_se = _mean_se(gaps[ok])
    return {"within": wm, "between": bm, "difference": gap_mean, "se_difference": gap_se,
            "n_groups": int(ok.sum()), "groups": per}


def _nanmean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(np.mean(x)), se
