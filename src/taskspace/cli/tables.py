"""Readable terminal tables (rich)."""
from __future__ import annotations

from typing import TYPE_CHECKING

# rich is imported where a table is built: the command line starts without it

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..scoring import ScoreResult


def print_scores(console: "Console", res: "ScoreResult") -> None:
    """Per-group table of a scoring, then the overall line."""
    from rich.table import Table

    groups = res.groups
    tasks = res.tasks
    t = Table(title=f"{res.provenance['model']['model']}"
                    + (f" @ {res.provenance['model']['revision']}" if res.provenance['model'].get('revision') else "")
                    + f" on {res.provenance['suite']['name']}")
    for col, just in (("group", "left"), ("tasks", "right"), ("pairs", "right"), ("accuracy", "right"),
                      ("task range", "right"), ("mean margin", "right"), ("ties", "right")):
        t.add_column(col, justify=just)
    for _, g in groups.iterrows():
        sub = tasks[tasks["group"] == g["group"]]
        t.add_row(str(g["group"]), str(g["n_tasks"]), str(g["n_pairs"]), f"{g['accuracy']:.1%}",
                  f"{sub['accuracy'].min():.0%}–{sub['accuracy'].max():.0%}",
                  f"{g['mean_margin']:+.3f}", str(int(g["n_ties"])))
    console.print(t)
    n_ties = int(tasks["n_ties"].sum())
    conv = res.provenance.get("convention", {})
    judged = "correct" if conv.get("ties_correct") else "not correct"
    console.print(f"mean accuracy over {len(tasks)} tasks: [bold]{res.accuracy:.1%}[/bold]"
                  f"   ({int(tasks['n_pairs'].sum())} pairs, {n_ties} ties counted as {judged}; "
                  f"convention {conv.get('name', 'taskspace')})")
