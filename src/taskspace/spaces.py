"""The TaskSpace: a tasks × tasks matrix from one probe on one model checkpoint (DESIGN §1, §3).

On disk a task space is a square CSV (task ids as header and index) plus a JSON sidecar with kind,
groups, model, revision, probe settings, convention and versions. Optional confidence bounds and
per-module matrices travel in the sidecar. No pickle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError


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

    def within_between(self) -> dict[str, float]:
        """Mean of off-diagonal entries within groups, between groups, and their difference (NaN-aware)."""
        h = self.hypothesis()
        off = ~np.eye(self.n_tasks, dtype=bool)
        m = self.matrix
        w = m[(h == 1) & off]
        b = m[(h == 0) & off]
        w_mean = float(np.nanmean(w)) if np.isfinite(w).any() else float("nan")
        b_mean = float(np.nanmean(b)) if np.isfinite(b).any() else float("nan")
        return {"within": w_mean, "between": b_mean, "difference": w_mean - b_mean,
                "n_within": int(np.isfinite(w).sum()), "n_between": int(np.isfinite(b).sum())}

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
        from .io import atomic_path, write_json

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

        from .io import read_json

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
