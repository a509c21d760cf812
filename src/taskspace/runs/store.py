"""The job store of a run: staging folders, publishing, done-records and the event log.

Layout inside ``RUN/.jobs/``::

    <key>.json          done-record, written LAST: kind, label, slot, files (relative to RUN), summary
    staging/<key>/      a job's private working folder; a killed job resumes here (same key, same folder)
    log.jsonl           one line per event (start / done / skip / fail) with pid, for humans and tests
    .publish.lock       serialises publishing between concurrent workers

A job computes into its staging folder; *publishing* hard-links each file into its place under RUN
(each link is an atomic rename, so a reader never sees half a file), removes what an older version of
the same *slot* (one kind of job on one model checkpoint) left behind, and only then writes the
done-record. A kill at any moment therefore leaves either no done-record (the job is redone, resuming in
its staging folder) or a complete, published result (never redone).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..faults import crash_point
from ..io import read_json, write_json
from ..provenance import timestamp


class JobStore:
    """Done-records and staging folders of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.jobs_dir = self.run_dir / ".jobs"
        self.staging_root = self.jobs_dir / "staging"
        self.log_path = self.jobs_dir / "log.jsonl"

    # -- records ---------------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        return self.jobs_dir / f"{key}.json"

    def record(self, key: str) -> dict | None:
        """The done-record of ``key``, or None (absent or unreadable: the job is not done)."""
        p = self.record_path(key)
        if not p.exists():
            return None
        try:
            return read_json(p)
        except (OSError, ValueError):
            return None

    def is_done(self, key: str) -> bool:
        """True when ``key`` has a done-record and every file it published is still there."""
        rec = self.record(key)
        if rec is None:
            return False
        return all((self.run_dir / f).exists() for f in rec.get("files", []))

    def records(self) -> list[dict]:
        """Every done-record of the run."""
        out = []
        if self.jobs_dir.is_dir():
            for p in sorted(self.jobs_dir.glob("*.json")):
                try:
                    out.append(read_json(p))
                except (OSError, ValueError):
                    continue
        return out

    # -- staging ---------------------------------------------------------------------------------
    def staging_dir(self, key: str) -> Path:
        """The private working folder of job ``key`` (kept across kills until the job is done)."""
        d = self.staging_root / key
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clean_staging(self) -> None:
        """Remove staging folders of finished jobs (left behind when a kill came just after the record)."""
        if not self.staging_root.is_dir():
            return
        for d in self.staging_root.iterdir():
            if d.is_dir() and self.record_path(d.name).exists():
                shutil.rmtree(d, ignore_errors=True)

    # -- publishing ------------------------------------------------------------------------------
    @contextmanager
    def _publish_lock(self) -> Iterator[None]:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.jobs_dir / ".publish.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def publish(self, key: str, staging: Path, dest: str, record: dict[str, Any]) -> list[str]:
        """Move the results of job ``key`` from ``staging`` into ``RUN/dest`` and mark it done.

        Every file under ``staging`` lands at the same relative path under ``RUN/dest``. Files that an
        older job of the same slot published and this one does not are removed (a changed task list
        must not leave stale task files behind), unless another current job published them too.
        Returns the published paths, relative to RUN.
        """
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")
                       if p.is_file() and not p.name.startswith("."))
        published = [(Path(dest) / f).as_posix() for f in files]
        with self._publish_lock():
            self._retire_slot(record["slot"], keep=set(published), key=key)
            crash_point("publish_retired")
            for i, (f, rel) in enumerate(zip(files, published)):
                _link_into_place(staging / f, self.run_dir / rel)
                if i == len(files) // 2:
                    crash_point("publish_half")
            crash_point("publish_linked")
            self._write_record(key, dict(record, files=published))
        crash_point("after_record")
        shutil.rmtree(staging, ignore_errors=True)
        return published

    def mark_done(self, key: str, files: list[str], record: dict[str, Any]) -> None:
        """Done-record for a job that wrote its results in place (pretraining, compare, report)."""
        with self._publish_lock():
            self._retire_slot(record["slot"], keep=set(files), key=key)
            self._write_record(key, dict(record, files=sorted(files)))

    def _retire_slot(self, slot: str, keep: set[str], key: str) -> None:
        """Drop the done-records (and stale files) of older jobs that filled ``slot``."""
        records = self.records()
        others = [r for r in records if r.get("slot") != slot]
        still_used = {f for r in others for f in r.get("files", [])}
        for rec in records:
            if rec.get("slot") != slot or rec.get("key") == key:
                continue
            # the record goes first: a kill after this line leaves files without a record (redone),
            # never a record whose files were removed
            self.record_path(rec["key"]).unlink(missing_ok=True)
            for f in rec.get("files", []):
                if f not in keep and f not in still_used:
                    (self.run_dir / f).unlink(missing_ok=True)

    def _write_record(self, key: str, record: dict[str, Any]) -> None:
        record = dict(record, key=key, finished=timestamp(), pid=os.getpid(), host=socket.gethostname())
        write_json(self.record_path(key), record)

    # -- log -------------------------------------------------------------------------------------
    def log(self, event: str, key: str, label: str, **extra: Any) -> None:
        """Append one event line (``start``, ``done``, ``skip``, ``fail``) to ``log.jsonl``."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        # milliseconds: a run's timeline (which job waited for which) is read from this log
        line = json.dumps({"time": timestamp("milliseconds"), "event": event, "key": key, "label": label,
                           "pid": os.getpid(), **extra}, ensure_ascii=False, default=str)
        # one write() of a short line with O_APPEND is atomic enough for a log that humans read
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def events(self) -> list[dict]:
        """Every complete line of the log (a line cut by a kill is skipped)."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def _link_into_place(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` atomically: hard link (or copy) to a temporary name, then rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.publish")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or links not supported
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
