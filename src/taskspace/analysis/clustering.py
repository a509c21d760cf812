"""Hierarchical clustering of a task space and its agreement with the groups (docs/design.md, "Comparing with theory")."""
from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import adjusted_rand_score

from ..probes.registry import space_reading
from ..spaces import TaskSpace
from .inference import read
from .stats import complete_tasks


def cluster_space(space: TaskSpace, n_clusters: int | None = None, *, absolute: bool = False,
                  sign: float | None = None) -> dict:
    """Average-linkage clustering on ``1 − S`` of the symmetrised space ``(S + Sᵀ)/2``, cut into
    ``n_clusters`` (default: the number of groups), and its adjusted Rand index against the groups.

    With ``absolute=True`` the distance is ``1 − |S|`` (opposite-signed paradigms of one group count as
    close). Tasks with missing entries are left out (``tasks`` lists those used). Distances are shifted
    up when some are negative (normalised transfer can exceed 1); average linkage merges in the same
    order under a constant shift, so this changes the heights of the dendrogram, never its shape.

    ``sign``: −1 for a space whose related tasks are lower (erasure, ablation: clustered on ``1 + S``);
    default: what the space's registry entry declares (:func:`~taskspace.probes.registry.space_reading`).

    Returns ``tasks``, ``groups``, ``labels`` (cluster per task), ``order`` (dendrogram leaf order, as
    indices into ``tasks``), ``linkage`` (scipy's matrix), ``ari``, ``n_clusters``, ``shift``.
    """
    keep = complete_tasks(space.matrix)
    tasks = [t for t, k in zip(space.tasks, keep) if k]
    groups = [g for g, k in zip(space.groups, keep) if k]
    n = len(tasks)
    k = n_clusters if n_clusters is not None else len(set(groups))
    out = {"tasks": tasks, "groups": groups, "labels": [], "order": list(range(n)), "linkage": [],
           "ari": float("nan"), "n_clusters": int(k), "shift": 0.0, "absolute": absolute}
    if n < 2:
        return out
    if sign is None:
        sign = space_reading(space.kind)[0]
    s = read(space.matrix[np.ix_(keep, keep)], sign, absolute)
    s = (s + s.T) / 2
    d = 1.0 - s
    np.fill_diagonal(d, 0.0)
    off = d[~np.eye(n, dtype=bool)]
    shift = float(max(0.0, -off.min()))
    d = d + shift
    np.fill_diagonal(d, 0.0)
    z = linkage(squareform(d, checks=False), method="average")
    labels = fcluster(z, t=max(1, min(k, n)), criterion="maxclust")
    out.update(labels=[int(x) for x in labels], order=[int(i) for i in leaves_list(z)],
               linkage=z.tolist(), ari=float(adjusted_rand_score(groups, labels)), shift=shift)
    return out
