"""Errors that reach the user as one clear line (never a traceback)."""
from __future__ import annotations

from pathlib import Path


class TaskspaceError(Exception):
    """Base class of every error taskspace reports to a user as one line."""


class InputError(TaskspaceError):
    """Bad input: names the file, the line (1-based) and the field where it was found.

    ``str(err)`` is the one line the CLI prints, e.g.
    ``data.jsonl, line 12, field 'sentence_good': empty sentence``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.message = message
        where = []
        if self.file is not None:
            where.append(self.file)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(", ".join(where) + ": " + message if where else message)


class ModelLoadError(TaskspaceError):
    """A model or tokenizer could not be loaded (missing folder, no network, bad revision)."""


class RunLockedError(TaskspaceError):
    """Another process holds the run directory."""
