"""Fault injection for the kill-and-resume tests: a process kills itself at a named point when asked.

``TASKSPACE_CRASH_AT=<name>[:<n>]`` sends the process SIGKILL the n-th time (default the 1st) it reaches
:func:`crash_point` ``name``. Off unless the variable is set. A leaf: pretraining and the run store both
call it, and it imports nothing of taskspace.
"""
from __future__ import annotations

import os
import signal

_CRASH_COUNTS: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``TASKSPACE_CRASH_AT`` names ``name`` and this is its n-th arrival here."""
    spec = os.environ.get("TASKSPACE_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _CRASH_COUNTS[name] = _CRASH_COUNTS.get(name, 0) + 1
    if _CRASH_COUNTS[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
