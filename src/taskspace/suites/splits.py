"""Seeded per-task train / dev / test splits.

A pair's place in its task's split depends only on (seed, task, pair_id), never on the other tasks of
the suite, so adding or removing tasks leaves every other task's split unchanged.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import InputError
from .schema import Pair, Suite

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SplitSizes:
    """Per-task sizes: an int is a number of pairs, a float in (0, 1] a fraction of the task.

    The parts are taken in order train, dev, test from one seeded shuffle of the task, so they never
    overlap; a task too small for the counts asked gets what is left (test may come out short).
    """

    train: int | float = 0.5
    dev: int | float = 0.1
    test: int | float = 0.4

    def counts(self, n: int) -> tuple[int, int, int]:
        def c(x: int | float, name: str) -> int:
            if isinstance(x, float):
                if not 0.0 <= x <= 1.0:
                    raise InputError(f"split fraction must be in [0, 1], got {x}", field=name)
                return int(round(x * n))
            if x < 0:
                raise InputError(f"split size must be >= 0, got {x}", field=name)
            return int(x)

        tr, dv, te = c(self.train, "train"), c(self.dev, "dev"), c(self.test, "test")
        tr = min(tr, n)
        dv = min(dv, n - tr)
        te = min(te, n - tr - dv)
        return tr, dv, te


def _key(seed: int, task: str, pair_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{task}\x00{pair_id}".encode()).digest()


def split_task(pairs: list[Pair], sizes: SplitSizes = SplitSizes(), seed: int = 0) -> dict[str, list[Pair]]:
    """Split the pairs of one task into ``{"train": [...], "dev": [...], "test": [...]}``."""
    if not pairs:
        return {s: [] for s in SPLITS}
    order = sorted(pairs, key=lambda p: _key(seed, p.task, p.pair_id))
    tr, dv, te = sizes.counts(len(order))
    return {"train": order[:tr], "dev": order[tr:tr + dv], "test": order[tr + dv:tr + dv + te]}


def split_suite(suite: Suite, sizes: SplitSizes = SplitSizes(), seed: int = 0) -> dict[str, Suite]:
    """Split every task of ``suite``; returns one :class:`Suite` per split, tasks in suite order."""
    parts: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for pairs in suite.by_task().values():
        for name, ps in split_task(pairs, sizes, seed).items():
            parts[name].extend(ps)
    meta = dict(suite.meta, split_seed=seed, split_sizes=[sizes.train, sizes.dev, sizes.test])
    return {name: Suite(ps, name=suite.name, source=suite.source, meta=meta) for name, ps in parts.items()}
