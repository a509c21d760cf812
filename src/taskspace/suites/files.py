"""Suites from a user's file of minimal pairs: JSONL, CSV or TSV (chosen by the file's suffix).

Our fields are ``good``, ``bad``, ``task`` (required), ``group`` and ``pair_id`` (optional). A field is
read from the column named like the field, else from its BLiMP alias (``sentence_good``,
``sentence_bad``, ``UID``, ``linguistics_term``, ``pairID``), so a BLiMP file or one written by
:func:`~taskspace.suites.write.write_suite` loads as it is; ``columns`` (``{field: column}``, on the
command line ``--columns good=s1,bad=s2``) overrides that.

- no group column: each task is its own group (the hypothesis space then has no within-group pairs);
- no pair_id column: a pair's id is the line of the file where it starts (counting the header of a
  CSV/TSV), so an id points at its line;
- sentences are kept exactly as written and must be non-empty strings; task, group and pair ids are
  strings (JSONL also accepts integers);
- a sentence, task, group or pair id must hold a visible character and no control character or lone
  surrogate (one definition for every text field: :func:`~taskspace.suites.schema.text_problem`);
- a task belongs to one group; a pair_id is unique within its task; blank lines (and CSV rows of as
  many empty cells as the header has columns, as spreadsheets export an empty row) are skipped; any
  other row must have as many cells as the header has columns, so a row of stray delimiters is an
  error naming its line, never skipped unseen;
- CSV cells may be quoted (``"a, b"``); TSV has no quoting (``csv.QUOTE_NONE``): a cell is everything
  between two tabs, so a sentence may start with a quote (``"Hi," she said.``) and cannot hold a tab;
- a CSV/TSV cell may hold up to :data:`MAX_CELL_CHARS` (1 Mi) characters, as a JSONL value may.

Every problem is an :class:`~taskspace.errors.InputError` naming the file, the line (1-based, of the
physical file, the header included) and the field, e.g. ``pairs.csv, line 7, field 'bad': empty
sentence``.
"""
from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..errors import InputError
from ..io import user_path
from .schema import Pair, Suite, text_problem

#: Our fields, in the order they are documented.
FIELDS: tuple[str, ...] = ("good", "bad", "task", "group", "pair_id")
REQUIRED: tuple[str, ...] = ("good", "bad", "task")
#: Column names tried for each field when no mapping is given, first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "good": ("good", "sentence_good"),
    "bad": ("bad", "sentence_bad"),
    "task": ("task", "UID"),
    "group": ("group", "linguistics_term"),
    "pair_id": ("pair_id", "pairID"),
}
FORMATS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
_EXAMPLE = "e.g. good=sentence1,bad=sentence2,task=paradigm"
#: the largest CSV/TSV cell read (csv's own default, 128 KiB, would refuse a valid long cell); the one
#: place this limit is set.
MAX_CELL_CHARS = 1 << 20


# -- value checks shared with the BLiMP loader ---------------------------------------------------
def kind_of(value: Any) -> str:
    """A JSON-flavoured name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_sentence(value: Any, *, file: str, line: int, field: str) -> str:
    """``value`` if it is a non-empty, not whitespace-only string, else :class:`InputError`."""
    if not isinstance(value, str):
        raise InputError(f"expected a string sentence, got {kind_of(value)}", file=file, line=line, field=field)
    if not value.strip():
        raise InputError("empty sentence", file=file, line=line, field=field)
    problem = text_problem(value, "sentence")
    if problem is not None:
        raise InputError(problem, file=file, line=line, field=field)
    return value


def check_id(value: Any, *, file: str, line: int, field: str) -> str:
    """An id (task, group, pair id) as a string: a non-empty string or an integer (not a bool), checked
    like a sentence (:func:`~taskspace.suites.schema.text_problem`)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"expected a string or an integer, got {kind_of(value)}", file=file, line=line,
                         field=field)
    text = str(value)
    if not text.strip():
        raise InputError("empty value", file=file, line=line, field=field)
    problem = text_problem(text, "value")
    if problem is not None:
        raise InputError(problem, file=file, line=line, field=field)
    return text


def decode_utf8(data: bytes, *, file: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped); a bad byte is reported with its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"not UTF-8 text (byte {data[e.start]:#04x})", file=file, line=line) from None


def read_text(path: Path, *, file: str) -> str:
    """The UTF-8 text of a regular file; anything else is an :class:`InputError` naming ``file``."""
    try:
        # a FIFO, socket or device (e.g. a pipe named x.jsonl in a BLiMP folder) would block
        # read_bytes() forever or never end: refuse it before opening
        if not stat.S_ISREG(path.stat().st_mode):
            raise InputError("not a regular file (a pipe, socket or device)", file=file)
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", file=file) from None
    return decode_utf8(data, file=file)


def read_jsonl(path: Path, *, file: str | None = None) -> Iterator[tuple[int, Any]]:
    """``(line, parsed JSON)`` for every non-blank line of ``path``; errors name the file and line."""
    file = file if file is not None else str(path)
    # split on "\n" only: str.splitlines would also split inside JSON strings holding U+2028 etc.,
    # and the line numbers would no longer be an editor's.
    for n, raw in enumerate(read_text(path, file=file).split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON at column {e.colno}: {e.msg}", file=file, line=n) from None
        except ValueError as e:  # json raises a plain ValueError for an integer of > 4300 digits
            raise InputError(f"malformed JSON: {str(e).splitlines()[0]}", file=file, line=n) from None
        except RecursionError:  # e.g. 100,000 nested '['
            raise InputError("malformed JSON: nested too deeply", file=file, line=n) from None
        yield n, obj


# -- column mapping ------------------------------------------------------------------------------
def parse_columns(spec: str | None, *, file: str | Path | None = None) -> dict[str, str]:
    """``"good=s1,bad=s2"`` → ``{"good": "s1", "bad": "s2"}``; malformed items and unknown field names
    raise :class:`InputError` (field ``columns``, naming ``file``, the suite the mapping is for).
    ``None`` or ``""`` gives ``{}``."""
    try:
        return _parse_columns(spec)
    except InputError as e:
        raise InputError(e.message, file=file, field=e.field) from None


def _parse_columns(spec: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if spec is None:
        return out
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise InputError(f"malformed column mapping {item!r}: expected FIELD=COLUMN, {_EXAMPLE}",
                             field="columns")
        key, col = (x.strip() for x in item.split("=", 1))
        if key in out:
            raise InputError(f"field {key!r} is mapped twice", field="columns")
        out[key] = col
    return check_columns(out)


def check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """A validated copy of a ``{field: column}`` mapping (our field names, non-empty column names)."""
    out: dict[str, str] = {}
    for key, col in (columns or {}).items():
        if key not in FIELDS:
            raise InputError(f"unknown field {key!r} in the column mapping; the fields are "
                             f"{', '.join(FIELDS)} ({_EXAMPLE})", field="columns")
        if not isinstance(col, str) or not col.strip():
            raise InputError(f"no column name given for field {key!r} ({_EXAMPLE})", field="columns")
        out[key] = col.strip()
    if "good" in out and out.get("bad") == out["good"]:
        raise InputError(f"good and bad are both mapped to column {out['good']!r}", field="columns")
    return out


def resolve_columns(available: Iterable[str], columns: Mapping[str, str] | None, *, file: str,
                    line: int) -> dict[str, str]:
    """``{field: column}`` for every field the file provides; ``line`` locates a missing column (the
    header of a CSV, the first record of a JSONL)."""
    have = list(dict.fromkeys(available))
    try:
        mapping = check_columns(columns)
    except InputError as e:
        raise InputError(e.message, file=file, field=e.field) from None
    out: dict[str, str] = {}
    for fld in FIELDS:
        if fld in mapping:
            if mapping[fld] not in have:
                raise InputError(f"column {mapping[fld]!r} (mapped to {fld}) not found; the file has: "
                                 f"{', '.join(have)}", file=file, line=line, field=mapping[fld])
            out[fld] = mapping[fld]
            continue
        found = next((a for a in ALIASES[fld] if a in have), None)
        if found is not None:
            out[fld] = found
        elif fld in REQUIRED:
            tried = " or ".join(repr(a) for a in ALIASES[fld])
            raise InputError(f"no column for {fld} (looked for {tried}; the file has: {', '.join(have)}); "
                             f"name it with --columns {fld}=COLUMN", file=file, line=line, field=fld)
    return out


# -- records -------------------------------------------------------------------------------------
def _jsonl_records(path: Path, file: str) -> list[tuple[int, dict]]:
    records = []
    for line, obj in read_jsonl(path, file=file):
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {kind_of(obj)}", file=file, line=line)
        records.append((line, obj))
    return records


def _csv_records(path: Path, file: str, delimiter: str) -> tuple[int, list[str], list[tuple[int, dict]]]:
    """``(header line, header, [(start line, {column: cell})])``; ragged rows are errors."""
    text = read_text(path, file=file)
    if csv.field_size_limit() < MAX_CELL_CHARS:  # process-wide; only ever raised, never lowered
        csv.field_size_limit(MAX_CELL_CHARS)
    tsv = delimiter == "\t"
    # strict: a stray quote is an error with its line, not a silently merged or split sentence.
    # TSV has no quoting: a quote is text, so a sentence may start with one.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True,
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header: list[str] | None = None
    header_line = 0
    records: list[tuple[int, dict]] = []
    prev = 0
    try:
        for row in reader:
            start, prev = prev + 1, reader.line_num
            if not any(cell.strip() for cell in row) and (
                    len(row) <= 1 or (header is not None and len(row) == len(header))):
                continue  # a blank line, or a spreadsheet's empty row; stray delimiters are ragged rows
            if header is None:
                header, header_line = [c.strip() for c in row], start
                for i, name in enumerate(header):
                    if not name:
                        raise InputError(f"column {i + 1} of the header has no name", file=file,
                                         line=start, field=f"column {i + 1}")
                    if name in header[:i]:
                        raise InputError("duplicate column name in the header", file=file, line=start,
                                         field=name)
                continue
            if len(row) != len(header):
                fld = header[len(row)] if len(row) < len(header) else f"column {len(header) + 1}"
                raise InputError(f"the row has {len(row)} cells, the header {len(header)} columns "
                                 "(an unquoted delimiter inside a sentence?)", file=file, line=start, field=fld)
            records.append((start, dict(zip(header, row))))
    except csv.Error as e:
        kind = "TSV" if tsv else "CSV"
        if "end of data" in str(e):
            # the reader ran to the end of the file inside a quoted cell: the record that opened the
            # quote starts on the line after the last complete one
            raise InputError(f"malformed {kind}: a quoted cell is never closed (unclosed \")",
                             file=file, line=prev + 1) from None
        raise InputError(f"malformed {kind}: {e}", file=file, line=reader.line_num) from None
    if header is None:
        raise InputError("empty file: no header and no pairs", file=file)
    return header_line, header, records


def _pairs(records: list[tuple[int, dict]], cols: dict[str, str], file: str) -> list[Pair]:
    pairs: list[Pair] = []
    task_group: dict[str, tuple[str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for line, rec in records:
        values: dict[str, Any] = {}
        for fld, col in cols.items():
            if col not in rec:
                raise InputError("missing field", file=file, line=line, field=col)
            values[fld] = rec[col]
        good = check_sentence(values["good"], file=file, line=line, field=cols["good"])
        bad = check_sentence(values["bad"], file=file, line=line, field=cols["bad"])
        task = check_id(values["task"], file=file, line=line, field=cols["task"])
        group = check_id(values["group"], file=file, line=line, field=cols["group"]) if "group" in cols else task
        pair_id = (check_id(values["pair_id"], file=file, line=line, field=cols["pair_id"])
                   if "pair_id" in cols else str(line))
        g, g_line = task_group.setdefault(task, (group, line))
        if g != group:
            raise InputError(f"task {task!r} is in group {g!r} on line {g_line} and in {group!r} here; "
                             "a task belongs to one group", file=file, line=line, field=cols.get("group", "group"))
        if (task, pair_id) in seen:
            raise InputError(f"duplicate pair id {pair_id!r} in task {task!r} (first on line "
                             f"{seen[task, pair_id]})", file=file, line=line, field=cols.get("pair_id", "pair_id"))
        seen[task, pair_id] = line
        pairs.append(Pair(task=task, group=group, pair_id=pair_id, good=good, bad=bad))
    return pairs


def load_pairs_file(path: str | Path, columns: Mapping[str, str] | None = None) -> Suite:
    """A suite from a ``.jsonl`` / ``.csv`` / ``.tsv`` file of minimal pairs (see the module docstring).

    >>> load_pairs_file("pairs.csv", columns={"good": "grammatical", "bad": "ungrammatical"})
    """
    p = user_path(path)
    file = str(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"unsupported file type {p.suffix or '(none)'!r}; use .jsonl, .csv or .tsv", file=file)
    if not p.is_file():
        raise InputError("no such file", file=file)
    if fmt == "jsonl":
        records = _jsonl_records(p, file)
        if not records:
            raise InputError("no pairs in this file", file=file)
        available = [k for _, rec in records for k in rec]
        cols = resolve_columns(available, columns, file=file, line=records[0][0])
    else:
        header_line, header, records = _csv_records(p, file, "\t" if fmt == "tsv" else ",")
        cols = resolve_columns(header, columns, file=file, line=header_line)
        if not records:
            raise InputError("no pairs in this file (only a header)", file=file)
    pairs = _pairs(records, cols, file)
    meta = {"format": fmt, "columns": cols, "groups_from": "group" if "group" in cols else "task",
            "pair_ids_from": "pair_id" if "pair_id" in cols else "line"}
    return Suite(pairs, name=file, source=str(p.resolve()), meta=meta)
