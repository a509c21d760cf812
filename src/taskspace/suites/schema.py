"""Pairs, tasks, groups and suites (docs/design.md, "Vocabulary").

A *pair* is one minimal pair (a grammatical ``good`` and an ungrammatical ``bad`` sentence); a *task*
is the set of pairs of one paradigm; a *group* is the phenomenon a task belongs to; a *suite* holds
tasks with their groups.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from ..errors import InputError
from ..provenance import hash_records

#: characters no text field (sentence, task, group, pair id) may hold anywhere: C0/C1 control
#: characters (NUL, ESC, DEL, …) other than tab, line feed and carriage return (white space a quoted CSV
#: cell may hold), and lone UTF-16 surrogates (not encodable as UTF-8: the data hash, the outputs, file
#: names and the tokenizer would fail later).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: a visible ASCII character (``!`` … ``~``): a text holding one needs no character-by-character look
#: (loading BLiMP checks 335,000 texts; the look per character was half of the load)
_VISIBLE_ASCII = re.compile("[!-~]")


def is_visible(ch: str) -> bool:
    """True for a character that shows as ink: printable and not white space. Format characters
    (zero-width space, byte-order mark, bidi marks: category Cf), separators, controls, surrogates,
    private-use and unassigned code points are not visible."""
    return ch.isprintable() and not ch.isspace()


def text_problem(text: str, what: str = "sentence") -> str | None:
    """Why ``text`` cannot be a ``what`` (a sentence, a task name, a group, a pair id), or None when it
    can. The one definition every loader checks every text field with: the text holds at least one
    visible character (:func:`is_visible`) and no control character or lone surrogate."""
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        ch = bad.group()
        kind = "a lone surrogate" if "\ud800" <= ch <= "\udfff" else "a control character"
        return f"the {what} holds {kind} (U+{ord(ch):04X}) at character {bad.start() + 1}"
    if _VISIBLE_ASCII.search(text) is None and not any(is_visible(ch) for ch in text):
        return f"the {what} has no visible character (only white space or invisible characters)"
    return None


@dataclass(frozen=True, slots=True)
class Pair:
    """One minimal pair. ``pair_id`` is unique within its task."""

    task: str
    group: str
    pair_id: str
    good: str
    bad: str

    @property
    def identical(self) -> bool:
        """True when good and bad are the same sentence (BLiMP has 7 such pairs): never correct."""
        return self.good == self.bad


@dataclass
class Suite:
    """An ordered collection of pairs. Tasks keep the order in which they first appear.

    ``name`` says where the suite came from (``blimp``, ``toy``, a file path), ``source`` is the
    resolved location. ``data_hash`` is a sha256 over every pair, recorded in every output.
    """

    pairs: list[Pair]
    name: str = "suite"
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._task_groups: dict[str, str] = {}
        for p in self.pairs:
            g = self._task_groups.setdefault(p.task, p.group)
            if g != p.group:
                raise InputError(
                    f"task {p.task!r} has pairs in two groups ({g!r} and {p.group!r})",
                    file=self.source or self.name, field="group",
                )

    # -- structure -------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        """Task ids in suite order."""
        return list(self._task_groups)

    @property
    def groups(self) -> list[str]:
        """Group ids, in order of first appearance."""
        return list(dict.fromkeys(self._task_groups.values()))

    def group_of(self, task: str) -> str:
        return self._task_groups[task]

    def task_groups(self) -> dict[str, str]:
        """``{task: group}`` in suite order."""
        return dict(self._task_groups)

    def pairs_of(self, task: str) -> list[Pair]:
        return [p for p in self.pairs if p.task == task]

    def by_task(self) -> dict[str, list[Pair]]:
        out: dict[str, list[Pair]] = {t: [] for t in self._task_groups}
        for p in self.pairs:
            out[p.task].append(p)
        return out

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.task for p in self.pairs))

    def n_identical(self) -> int:
        return sum(p.identical for p in self.pairs)

    # -- selection -------------------------------------------------------------------------------
    def select(self, tasks: Sequence[str] | None = None, limit_per_task: int | None = None) -> "Suite":
        """A new suite with only ``tasks`` (in the given order) and at most ``limit_per_task`` pairs
        each (the first ones, in file order). Unknown task ids raise :class:`InputError`."""
        by_task = self.by_task()
        if tasks is None:
            tasks = list(by_task)
        unknown = [t for t in tasks if t not in by_task]
        if unknown:
            raise InputError(
                f"unknown task(s) {', '.join(unknown)}; the suite has {len(by_task)} tasks "
                f"(see `taskspace suite info {self.name}`)", field="tasks",
            )
        pairs: list[Pair] = []
        for t in tasks:
            ps = by_task[t]
            pairs.extend(ps if limit_per_task is None else ps[:limit_per_task])
        return Suite(pairs, name=self.name, source=self.source, meta=dict(self.meta))

    @property
    def data_hash(self) -> str:
        return hash_records((p.task, p.group, p.pair_id, p.good, p.bad) for p in self.pairs)

    def describe(self) -> dict:
        """Provenance of this suite for output metadata."""
        return {
            "name": self.name,
            "source": self.source,
            "n_tasks": len(self.tasks),
            "n_groups": len(self.groups),
            "n_pairs": len(self.pairs),
            "n_identical": self.n_identical(),
            "data_hash": self.data_hash,
        }

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    def __repr__(self) -> str:
        return (f"Suite(name={self.name!r}, tasks={len(self.tasks)}, groups={len(self.groups)}, "
                f"pairs={len(self.pairs)})")


def sentences_of(pairs: Iterable[Pair]) -> list[str]:
    """Unique sentences of ``pairs`` in first-seen order (each is scored once)."""
    return list(dict.fromkeys(s for p in pairs for s in (p.good, p.bad)))
