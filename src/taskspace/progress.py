"""Progress bars (rich) for anything that takes more than a few seconds.

Bars go to stderr and switch themselves off when stderr is not a terminal or ``TASKSPACE_NO_PROGRESS``
is set, so logs and CI output stay clean.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

# rich is imported where a bar is drawn: `import taskspace` starts without it


def enabled() -> bool:
    return not os.environ.get("TASKSPACE_NO_PROGRESS") and sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None, *, fields: bool = False,
                 show: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; shows a rich bar with rate and ETA while the block runs
    (``show=False``: a caller whose progress is off gets the same ``advance`` that does nothing).

    With ``fields=True`` keyword arguments given to ``advance`` (e.g. ``loss=2.31``) are shown beside
    the bar; ``total=N`` is not shown but sets the bar's new total (work added while it runs).
    """
    if not (show and enabled()):
        yield lambda n=1, **kw: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn()]
    if fields:
        cols.append(TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=Console(stderr=True), transient=False) as prog:
        tid = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, **kw: object) -> None:
            total_now = kw.pop("total", None)        # the work grew (a run adds jobs while it runs)
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in kw.items())
            prog.update(tid, advance=n, **({"info": info} if kw else {}),
                        **({"total": total_now} if total_now is not None else {}))

        yield advance
