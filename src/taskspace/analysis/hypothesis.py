"""The hypothesis space of linguistic theory and group-ordered views of a task space (docs/design.md, "Comparing with theory")."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def hypothesis_space(groups: Sequence[str]) -> np.ndarray:
    """``H[a, b] = 1`` iff tasks a ≠ b share a group, else 0 (the diagonal is 0)."""
    g = np.asarray([str(x) for x in groups])
    h = (g[:, None] == g[None, :]).astype(float)
    np.fill_diagonal(h, 0.0)
    return h


def group_order(groups: Sequence[str]) -> list[int]:
    """Task indices ordered so each group is contiguous.

    Groups keep the order of their first appearance and tasks keep their order inside a group, so
    a suite that is already grouped (BLiMP, the toy suite) keeps its own order.
    """
    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(str(g), i)
    return sorted(range(len(groups)), key=lambda i: (first[str(groups[i])], i))


def group_blocks(groups: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(group, start, stop)`` runs of equal consecutive groups (use on group-ordered labels)."""
    out: list[tuple[str, int, int]] = []
    for i, g in enumerate(groups):
        g = str(g)
        if out and out[-1][0] == g:
            out[-1] = (g, out[-1][1], i + 1)
        else:
            out.append((g, i, i + 1))
    return out
