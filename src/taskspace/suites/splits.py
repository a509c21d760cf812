"""Seeded per-task train / dev / test splits.

A pair's place in its task's split depends only on (seed, task, pair_id), never on the other tasks of
the suite, so adding or removing tasks leaves every other task's split unchanged.

*Halves* (:func:`split_halves`, ``ProbeSettings(halves=True)``): every task ``t`` becomes two pseudo-tasks
``t~1`` and ``t~2`` (:func:`half_name`, :func:`parse_half`; ``~`` is reserved for them) holding alternate
pairs of each of t's train / dev / test parts in t's seeded order — disjoint by construction, equal in
size up to one pair, and, like the split itself, a function of (seed, task, pair_id) only. A probe run on
them gives a 2T × 2T space whose two diagonal blocks are the two half spaces and whose cross block's
diagonal is each task's self-similarity (:mod:`taskspace.analysis.reliability`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Sequence

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


# -- halves ------------------------------------------------------------------------------------------
#: the one character that joins a task and its half (``t~1``, ``t~2``); reserved: a task whose name holds
#: it cannot be split into halves (no BLiMP paradigm or toy task does)
HALF_SEP = "~"
HALVES = (1, 2)


def half_name(task: str, k: int) -> str:
    """The name of half ``k`` (1 or 2) of ``task``: ``task~k``."""
    if k not in HALVES:
        raise ValueError(f"a half is 1 or 2, got {k!r}")
    if HALF_SEP in task:
        raise InputError(f"task {task!r} holds {HALF_SEP!r}, which names the halves of a task (t{HALF_SEP}1, "
                         f"t{HALF_SEP}2); rename the task to split it into halves", field="task")
    return f"{task}{HALF_SEP}{k}"


def parse_half(name: str) -> tuple[str, int] | None:
    """``"t~1"`` → ``("t", 1)``; None for a name that is not a half (no ``~``, or not ``~1`` / ``~2``)."""
    base, sep, k = str(name).rpartition(HALF_SEP)
    if not sep or not base or HALF_SEP in base or k not in ("1", "2"):
        return None
    return base, int(k)


def halve(pairs: Sequence[Pair]) -> tuple[list[Pair], list[Pair]]:
    """Alternate pairs of ``pairs`` (one split part of one task, in its seeded order): ``[0::2]``, ``[1::2]``.

    The halves are disjoint (checked, by pair id) and differ in size by at most one pair.
    """
    first, second = list(pairs[0::2]), list(pairs[1::2])
    ids = {p.pair_id for p in first}
    if any(p.pair_id in ids for p in second) or len(ids) != len(first):
        raise InputError("the halves of a task share a pair (duplicate pair ids)", field="pair_id")
    return first, second


def _base_pairs(suite: Suite) -> tuple[Suite, bool]:
    """``suite`` with its tasks as written, or, for a suite of halves (:func:`halve_suite`), the tasks they
    were cut from (``t~1`` and ``t~2`` merged back into ``t``; both must be there)."""
    halves = [parse_half(t) for t in suite.tasks]
    if not any(h is not None for h in halves):
        for t in suite.tasks:
            if HALF_SEP in t:
                half_name(t, 1)  # the one error message for a reserved character
        return suite, False
    odd = [t for t, h in zip(suite.tasks, halves) if h is None]
    if odd:
        raise InputError(f"the suite mixes halves (t{HALF_SEP}1, t{HALF_SEP}2) with whole tasks ({', '.join(odd[:3])})",
                         field="task")
    present = set(suite.tasks)
    lone = [t for t, (b, k) in zip(suite.tasks, halves) if half_name(b, 3 - k) not in present]
    if lone:
        raise InputError(f"half {lone[0]!r} without its other half: a suite of halves holds both halves of each "
                         "task", field="task")
    order = list(dict.fromkeys(b for b, _ in halves))
    by_base: dict[str, list[Pair]] = {b: [] for b in order}
    for p in suite.pairs:
        b, _ = parse_half(p.task)  # type: ignore[misc]
        by_base[b].append(replace(p, task=b))
    pairs = [p for b in order for p in by_base[b]]
    return Suite(pairs, name=suite.name, source=suite.source, meta=dict(suite.meta)), True


def split_halves(suite: Suite, sizes: SplitSizes = SplitSizes(), seed: int = 0,
                 tasks: Sequence[str] | None = None) -> dict[str, Suite]:
    """Like :func:`split_suite`, but every task ``t`` becomes ``t~1`` and ``t~2``: alternate pairs of
    each of t's train / dev / test parts (:func:`halve`). Task order: every ``t~1``, then every ``t~2``
    (so a space over them has the two half spaces as its diagonal blocks); groups as t's.

    ``suite`` may be a plain suite or a suite of halves (:func:`halve_suite`): the halves are always
    recomputed from (seed, task, pair_id), so both give the same splits. ``tasks`` selects whole tasks
    (``t``) or single halves (``t~1``); None: all.
    """
    base, _ = _base_pairs(suite)
    wanted: set[str] | None = None
    if tasks is not None:
        wanted, bases = set(), []
        for t in tasks:
            h = parse_half(t)
            b = h[0] if h else t
            wanted |= {t} if h else {half_name(t, 1), half_name(t, 2)}
            bases.append(b)
        base = base.select(list(dict.fromkeys(bases)))
    for t in base.tasks:
        half_name(t, 1)  # refuses a reserved character
    parts: dict[str, tuple[list[Pair], list[Pair]]] = {s: ([], []) for s in SPLITS}
    for task, pairs in base.by_task().items():
        names = (half_name(task, 1), half_name(task, 2))
        for split, ps in split_task(pairs, sizes, seed).items():
            for k, half in enumerate(halve(ps)):
                if wanted is None or names[k] in wanted:
                    parts[split][k].extend(replace(p, task=names[k]) for p in half)
    meta = dict(suite.meta, split_seed=seed, split_sizes=[sizes.train, sizes.dev, sizes.test], halves=True)
    return {name: Suite(h1 + h2, name=suite.name, source=suite.source, meta=meta)
            for name, (h1, h2) in parts.items()}


def halve_suite(suite: Suite, sizes: SplitSizes = SplitSizes(), seed: int = 0,
                tasks: Sequence[str] | None = None) -> Suite:
    """A suite whose tasks are the halves ``t~1``, ``t~2`` of ``suite``'s (``tasks`` or all), for probes
    that take their task list from the suite rather than from its splits: with
    ``ProbeSettings(halves=True, tasks=None)`` their splits are exactly :func:`split_halves` of ``suite``.

    Each pair goes to the half :func:`split_halves` puts it in; pairs outside the train / dev / test
    parts (a task larger than the three counts) alternate too, so the two halves together hold every pair
    of the task and merging them gives the task back.
    """
    base, _ = _base_pairs(suite)
    base = base.select(list(tasks) if tasks is not None else None)
    first: list[Pair] = []
    second: list[Pair] = []
    for task, pairs in base.by_task().items():
        names = (half_name(task, 1), half_name(task, 2))
        if len(pairs) < 2:
            raise InputError(f"task {task!r} has {len(pairs)} pair(s): halves need at least 2", field="task")
        order = sorted(pairs, key=lambda p: _key(seed, p.task, p.pair_id))
        tr, dv, te = sizes.counts(len(order))
        for a, b in ((0, tr), (tr, tr + dv), (tr + dv, tr + dv + te), (tr + dv + te, len(order))):
            h1, h2 = halve(order[a:b])
            first += [replace(p, task=names[0]) for p in h1]
            second += [replace(p, task=names[1]) for p in h2]
    return Suite(first + second, name=suite.name, source=suite.source, meta=dict(suite.meta, halved=True))
