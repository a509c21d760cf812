"""What a run — or a dry run — did: :class:`RunResult`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .executors import Outcome
from .jobs import Job


@dataclass
class RunResult:
    """What a run did: the outcome of every job it executed, and the jobs it found done."""

    run_dir: Path
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    seconds: float = 0.0
    #: a dry run's view (:class:`taskspace.runs.dryrun.DryRun`): states, costs, what was not checked
    dry: Any = None

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "blocked")]

    @property
    def report_path(self) -> Path | None:
        p = self.run_dir / "report.html"
        return p if p.exists() else None
