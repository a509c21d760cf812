"""Atomic file output: a reader (or a resumed run) never sees half a file; and user paths."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    >>> with atomic_path("out/tasks.csv") as tmp:
    ...     df.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should read like any file
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temps(folder: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when its process was killed
    (``kill -9`` skips the cleanup), only those for ``names`` when given; return what was removed.

    Call it only where one writer at a time owns the files (a report build rebuilding its figures):
    another live writer's temporary file would be removed under it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [f".{n}.*.tmp" for n in names] if names is not None else [".*.tmp"]
    removed = []
    for pattern in patterns:
        for f in folder.glob(pattern):
            if f.is_file():
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def user_path(path: str | Path) -> Path:
    """``path`` with a leading ``~`` / ``~user`` expanded. A ``~user`` with no home folder stays as
    written (``Path.expanduser`` raises RuntimeError there), so the caller reports it as a missing
    file in its own one-line error instead of a traceback."""
    p = Path(path)
    try:
        return p.expanduser()
    except RuntimeError:
        return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically. Numpy scalars and arrays are converted."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, default=_json_default)
            f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
