"""Write a suite as BLiMP-style JSONL, so any tool that reads BLiMP reads it.

One pair per line with BLiMP's keys: ``sentence_good``, ``sentence_bad``, ``UID`` (task),
``linguistics_term`` (group), ``pairID`` (pair id), plus BLiMP's ``field`` when the suite knows it
(``suite.meta["blimp_fields"]``). Two layouts, chosen by the path:

- ``pairs.jsonl`` (suffix ``.jsonl`` or ``.ndjson``): one file holding every task, read back by
  :func:`~taskspace.suites.files.load_pairs_file`;
- ``folder`` (no suffix): BLiMP's release layout, one ``<task>.jsonl`` per task, read back by
  :func:`~taskspace.suites.blimp.load_blimp_folder`.

Both are written atomically: a reader never sees half a suite.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError
from ..io import atomic_path, user_path
from .files import FORMATS
from .schema import Pair, Suite


def pair_record(pair: Pair, blimp_field: str | None = None) -> dict:
    """The BLiMP-keyed JSON object of one pair."""
    rec = {"sentence_good": pair.good, "sentence_bad": pair.bad, "UID": pair.task,
           "linguistics_term": pair.group, "pairID": pair.pair_id}
    if blimp_field is not None:
        rec["field"] = blimp_field
    return rec


def _lines(pairs: list[Pair], fields: dict) -> str:
    return "".join(json.dumps(pair_record(p, fields.get(p.task)), ensure_ascii=False) + "\n" for p in pairs)


def write_suite(suite: Suite, path: str | Path) -> Path:
    """Write ``suite`` to ``path`` (a ``.jsonl`` file, or a folder of ``<task>.jsonl`` files; see the
    module docstring) and return the path. A folder must not exist yet or be empty; its files come
    back from :func:`~taskspace.suites.blimp.load_blimp_folder` with the tasks sorted by name."""
    out = user_path(path)
    fields = suite.meta.get("blimp_fields") or {}
    if out.suffix:
        if FORMATS.get(out.suffix.lower()) != "jsonl":
            raise InputError(f"write_suite writes JSONL: give a .jsonl file or a folder (no suffix), not "
                             f"{out.suffix!r}", file=str(path))
        with atomic_path(out) as tmp:
            tmp.write_text(_lines(suite.pairs, fields), encoding="utf-8")
        return out
    return _write_folder(suite, out, fields, str(path))


def _write_folder(suite: Suite, out: Path, fields: dict, shown: str) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not an empty folder; the tasks of two suites would mix", file=shown)
    for task in suite.tasks:
        # the task becomes a file name: refuse what would escape the folder or hide the file
        if os.sep in task or (os.altsep and os.altsep in task) or task.startswith(".") or "\x00" in task:
            raise InputError(f"task {task!r} cannot be a file name; write a .jsonl file instead",
                             file=shown, field="task")
    folded: dict[str, str] = {}
    for task in suite.tasks:
        # case-insensitive file systems (macOS, Windows) would merge these two files
        other = folded.setdefault(task.casefold(), task)
        if other != task:
            raise InputError(f"tasks {other!r} and {task!r} differ only in case and cannot be two files "
                             "everywhere; write a .jsonl file instead", file=shown, field="task")
    out.parent.mkdir(parents=True, exist_ok=True)
    # build the whole folder beside the target and rename it in one step
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix="." + out.name + ".", suffix=".tmp"))
    try:
        for task, pairs in suite.by_task().items():
            (tmp / f"{task}.jsonl").write_text(_lines(pairs, fields), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
