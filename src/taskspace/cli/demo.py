"""``taskspace run PLAN.toml --out RUN`` (resumable runs) and ``taskspace demo`` (the README's first command)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..io import read_json
from ..provenance import environment_line
from . import app

# the demo, the run system and rich are imported inside the command: the command line starts without them

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..runs import RunResult


@app.command("run")
def run(
    plan: Path = typer.Argument(..., help="Plan file (TOML): \\[suite], \\[\\[models]], probes, \\[settings], \\[executor]."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory; a killed run resumes in it."),
    executor: Optional[str] = typer.Option(None, "--executor",
                                           help="local (default) or ray; overrides the plan's \\[executor]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List every job, which are done, totals per job kind "
                                                         "and a cost estimate; offline, runs and writes nothing."),
) -> None:
    """Run a plan: models × revisions × probes, every job keyed and resumable, then compare and report."""
    from rich.console import Console

    from ..runs import load_plan, run_plan

    p = load_plan(plan)
    console = Console()
    result = run_plan(p, out, executor=executor, dry_run=dry_run, plan_text=plan.read_text(encoding="utf-8"))
    if dry_run:
        print_jobs(console, result)
    else:
        print_run(console, result)


@app.command("demo")
def demo(
    quick: bool = typer.Option(False, "--quick", help="A one-minute version (on 2 idle cores): fewer steps, "
                                                     "tasks and pairs; still three sizes and every stage."),
    out: Path = typer.Option(Path("taskspace-demo"), "--out", "-o", help="Run directory of the demo."),
) -> None:
    """The whole method on the built-in toy English: pretrain tiny / small / base with checkpoints, probe
    every checkpoint (gradients, overlap, transfer), compare with the grammar's groups, write a report."""
    from rich.console import Console

    from ..demo import run_demo

    console = Console()
    console.print(f"[bold]taskspace demo{' --quick' if quick else ''}[/bold] → {out}  "
                  f"(resumable: run the same command again after an interruption)")
    result = run_demo(out, quick=quick)
    print_run(console, result)
    from ..demo import print_headline

    print_headline(console, out)
    print_environment(console, out)


def print_environment(console: "Console", out: Path) -> None:
    """The versions and torch thread count the run recorded in ``run.json``, in one line: the demo's
    numbers can move with them (pretraining sums floats in an order that depends on both)."""
    path = Path(out) / "run.json"
    meta = read_json(path) if path.exists() else {}
    line = environment_line(meta["versions"], meta.get("torch_threads")) if "versions" in meta else environment_line()
    console.print(f"computed with: {line}", markup=False, highlight=False, soft_wrap=True)  # one line


def print_run(console: "Console", result: "RunResult") -> None:
    """One line for the jobs, one for where the results are."""
    n_done = sum(o.status == "done" for o in result.outcomes)
    console.print(f"{n_done} job(s) run, {len(result.skipped)} already done, in {result.seconds:.1f} s; "
                  f"results in {result.run_dir}")
    if result.report_path is not None:
        console.print(f"report: [bold]{result.report_path}[/bold]")


def print_jobs(console: "Console", result: "RunResult") -> None:
    """The dry run: every job of the plan with its state, key and estimated cost; totals per job kind; what
    could not be checked offline; the cost model's assumptions."""
    from rich.table import Table

    from ..runs.estimate import fmt_bytes, fmt_seconds

    view = result.dry
    t = Table(title=f"jobs of {result.run_dir}")
    for col in ("job", "state", "key", "est. time", "est. peak memory"):
        t.add_column(col, overflow="fold")           # every character of a label, never an ellipsis
    for pj in view.jobs:
        t.add_row(pj.job.label, pj.state, pj.job.key[:12] or "-", "" if pj.state == "done" else
                  fmt_seconds(pj.cost.seconds), fmt_bytes(pj.cost.peak_bytes))
    console.print(t)
    if view.models:
        m = Table(title="models")
        for col in ("model", "parameters", "read from", "device", "dtype", "revisions"):
            m.add_column(col)
        for row in view.models:
            n = row["parameters"]
            m.add_row(row["slug"], f"{n:,}" if n is not None else "unknown", row["from"], row["device"], row["dtype"],
                      ", ".join(row["revisions"]))
        console.print(m)
    tot = Table(title="totals per job kind")
    for col in ("job kind", "jobs", "done", "to run", "est. time (to run)", "est. peak memory"):
        tot.add_column(col, justify="left" if col == "job kind" else "right")
    seconds, unknown = 0.0, 0
    for r in view.totals():
        left = r["jobs"] - r["done"]
        time_ = _time_cell(r["seconds"], r["unknown"], left)
        tot.add_row(r["kind"], str(r["jobs"]), str(r["done"]), str(left), time_ if left else "-",
                    fmt_bytes(r["peak_bytes"]) if r["peak_bytes"] else "-")
        seconds += r["seconds"]
        unknown += r["unknown"]
    n_jobs = sum(r["jobs"] for r in view.totals())
    n_done = sum(r["done"] for r in view.totals())
    tot.add_row("all", str(n_jobs), str(n_done), str(n_jobs - n_done),
                _time_cell(seconds, unknown, n_jobs - n_done), "")
    console.print(tot)
    for note in view.notes:
        console.print(f"- {note}", markup=False, highlight=False)
    if any(pj.state == "pending*" for pj in view.jobs):
        console.print("- pending*: its key depends on weights or data not there yet (a model trained in the "
                      "run, a suite not read offline); found done or not once they are", markup=False)
    where = "an upper bound on a GPU; " if view.gpu else ""
    console.print("- estimates: seconds ≈ 4.35e-10 × parameters × pair passes (2 CPU cores, float32, "
                  f"BLiMP-length sentences; {where}within about 2× on 2 CPU cores), peak memory from the "
                  "model's bytes: taskspace.runs.estimate, calibrated in benchmarks/README.md", markup=False,
                  highlight=False)
    console.print("nothing was run or written (dry run)")


def _time_cell(seconds: float, unknown: int, jobs: int) -> str:
    """The estimated time of ``jobs`` jobs, ``unknown`` of them of a model whose size is not known."""
    from ..runs.estimate import fmt_seconds

    if unknown == jobs and jobs:
        return "unknown"
    return fmt_seconds(seconds) + (f" + {unknown} job(s) unknown" if unknown else "")
