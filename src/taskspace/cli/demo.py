"""``taskspace run PLAN.toml --out RUN`` (resumable runs) and ``taskspace demo`` (the README's first command)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from . import app

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..runs import RunResult


@app.command("run")
def run(
    plan: Path = typer.Argument(..., help="Plan file (TOML): \\[suite], \\[\\[models]], probes, \\[settings], \\[executor]."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory; a killed run resumes in it."),
    executor: Optional[str] = typer.Option(None, "--executor",
                                           help="local (default) or ray; overrides the plan's \\[executor]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs and which are done; run nothing."),
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
    quick: bool = typer.Option(False, "--quick", help="A 2-minute version: fewer steps, tasks and pairs; "
                                                     "still three sizes and every stage."),
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
    numbers can move with them (issue 11)."""
    from ..io import read_json
    from ..provenance import environment_line

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
    """The dry-run table: every job of the plan and whether it is done."""
    from rich.table import Table

    t = Table(title=f"jobs of {result.run_dir}")
    for col in ("job", "state", "key"):
        t.add_column(col)
    for job in result.skipped:
        t.add_row(job.label, "done", job.key[:12])
    for o in result.outcomes:
        t.add_row(o.job.label, o.status, o.job.key[:12])
    console.print(t)
    if any(o.job.kind == "pretrain" for o in result.outcomes):
        console.print("probe jobs of models trained in the run are listed once their training is done")
