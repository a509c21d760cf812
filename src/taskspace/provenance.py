"""What every output records about how it was computed: versions, data hashes, timestamps."""
from __future__ import annotations

import functools
import hashlib
import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Iterable

# torch is imported where its thread count is read: `import taskspace` starts without it

_PACKAGES = ("taskspace", "torch", "transformers", "tokenizers", "numpy", "pandas", "scipy")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages whose behaviour can change a number."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    # read once per process: each lookup scans the installed distributions (~40 ms for the set, and a
    # run records them in every job's outputs)
    out = [("python", platform.python_version())]
    for name in _PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return tuple(out)


def torch_threads() -> int | None:
    """torch's intra-op thread count, or None without torch.

    Recorded beside the versions because it can move the last bits of a float: a matmul or a sum split
    over another number of threads adds in another order.
    """
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def usable_cpus(at_most: int | None = None) -> int:
    """The CPUs this process may run on (its affinity mask on Linux, else the machine's count), at least one
    and at most ``at_most``: how many worker processes to start."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:               # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, at_most) if at_most is not None else n)


def environment_line(versions_: dict[str, str] | None = None, threads: int | None = None) -> str:
    """One line naming the package versions and torch thread count a result was computed with, e.g.
    ``python 3.11.7 · taskspace 0.1.0 · torch 2.13.0+cpu · … · 2 torch threads``; the current process's
    when called without arguments."""
    if versions_ is None:
        versions_, threads = versions(), torch_threads()
    parts = [f"{k} {v}" for k, v in versions_.items()]
    if threads is not None:
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    return " · ".join(parts)


def timestamp(timespec: str = "seconds") -> str:
    """The current UTC time in ISO 8601 (``timespec`` as for :meth:`datetime.isoformat`)."""
    return datetime.now(UTC).isoformat(timespec=timespec)


def hash_records(records: Iterable[Any]) -> str:
    """A stable sha256 over JSON-serialisable records (order matters)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
