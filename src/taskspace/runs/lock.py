"""One process per run directory: an exclusive ``fcntl.flock`` on ``RUN/.lock``.

The operating system releases a flock when its process dies, even on ``kill -9``, so a crashed run never
leaves a stale lock behind; the pid, host and start time written into the file only serve the message
that refuses a second process.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

from ..errors import RunLockedError
from ..provenance import timestamp


class RunLock:
    """Hold ``RUN/.lock`` exclusively while the block runs; a second holder gets :class:`RunLockedError`.

    >>> with RunLock(run_dir):
    ...     ...  # only this process writes into run_dir
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting; raise :class:`RunLockedError` naming the holder if it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = (f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"
                   if holder else "another process")
            raise RunLockedError(f"run directory {self.path.parent} is in use by {who}; wait for it to "
                                 f"finish or stop it, then run again") from None
        # truncate only once we hold the lock, so the holder's record is never erased by a loser
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": timestamp()}
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (the file stays; an unlocked file means a free run directory)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}
