"""One entry point that turns a suite specification into a :class:`Suite`.

``SPEC`` may be:
- ``toy`` (optionally ``toy:SEED``): the built-in toy-English suite;
- ``blimp``: BLiMP from the Hugging Face hub (``nyu-mll/blimp``, through ``datasets``);
- a folder: BLiMP release files ``<UID>.jsonl`` (e.g. ``../shared/data/blimp``);
- a ``.jsonl`` / ``.csv`` / ``.tsv`` file of pairs with a column mapping.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import InputError
from ..io import user_path
from .schema import Suite

# each reader (BLiMP, files, the toy grammar) is imported when its kind of suite is loaded: the command line
# starts without them


def toy_seed(spec: str) -> int:
    """The seed of ``toy`` (0) or ``toy:SEED``; anything after ``toy:`` but a non-negative integer
    (``toy:``, ``toy:abc``, ``toy:1.5``, ``toy:-1``) is an :class:`InputError`."""
    if spec == "toy":
        return 0
    tail = spec.split(":", 1)[1]
    # isdecimal, not int(): int() also takes " 7", "+7", "1_0" and would raise ValueError on the rest
    if not (tail.isascii() and tail.isdecimal()):
        raise InputError(f"the toy suite's seed must be a non-negative integer (toy:SEED), got {tail!r}",
                         file=spec)
    return int(tail)


def load_suite(spec: str | Path, *, columns: Mapping[str, str] | None = None) -> Suite:
    """Load a suite from ``spec`` (see module docstring). ``columns`` maps our field names
    (``good``, ``bad``, ``task``, ``group``, ``pair_id``) to the file's column names."""
    s = str(spec)
    p = user_path(s)
    if columns and not p.is_file():
        raise InputError("a column mapping applies only to a .jsonl/.csv/.tsv file of pairs",
                         file=s, field="columns")
    if s == "toy" or s.startswith("toy:"):
        from .toy import toy_suite

        return toy_suite(seed=toy_seed(s))
    if s == "blimp":
        from .blimp import load_blimp_hub

        return load_blimp_hub()
    if p.is_dir():
        from .blimp import load_blimp_folder

        return load_blimp_folder(p)
    if p.is_file():
        from .files import load_pairs_file

        return load_pairs_file(p, columns=columns)
    raise InputError("no such suite: not 'toy', 'blimp', a folder or a file", file=s)
