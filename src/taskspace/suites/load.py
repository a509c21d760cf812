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
from .schema import Suite


def load_suite(spec: str | Path, *, columns: Mapping[str, str] | None = None) -> Suite:
    """Load a suite from ``spec`` (see module docstring). ``columns`` maps our field names
    (``good``, ``bad``, ``task``, ``group``, ``pair_id``) to the file's column names."""
    s = str(spec)
    p = Path(s).expanduser()
    if columns and not p.is_file():
        raise InputError("a column mapping applies only to a .jsonl/.csv/.tsv file of pairs",
                         file=s, field="columns")
    if s == "toy" or s.startswith("toy:"):
        from .toy import toy_suite

        seed = int(s.split(":", 1)[1]) if ":" in s else 0
        return toy_suite(seed=seed)
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
