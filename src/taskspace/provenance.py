"""What every output records about how it was computed: versions, data hashes, timestamps."""
from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Iterable

_PACKAGES = ("taskspace", "torch", "transformers", "tokenizers", "numpy", "pandas", "scipy")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages whose behaviour can change a number."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hash_records(records: Iterable[Any]) -> str:
    """A stable sha256 over JSON-serialisable records (order matters)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
