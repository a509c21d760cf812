"""``taskspace compare`` and ``taskspace report``: a run's task spaces against theory, controls,
checkpoints and sizes; the figures and the self-contained HTML report."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..probes.settings import BOOTSTRAP, LEVEL
from . import app

# the analysis, the report and rich are imported inside the commands: the command line starts without them

RunArg = typer.Argument(..., help="A run directory (RUN/<model>/<revision>/spaces/…) or one probe output folder.")
Permutations = typer.Option(999, "--permutations", min=1, help="Mantel permutations (exact below n! ≤ N+1).")
SeedOpt = typer.Option(0, "--seed", help="Seed of the permutation test and the bootstrap.")
BootstrapOpt = typer.Option(BOOTSTRAP, "--bootstrap", min=0,
                            help=f"Resamples over tasks for the {LEVEL:.0%} intervals of every summary (0: none).")
AboveChanceOpt = typer.Option(False, "--above-chance",
                              help="Also the whole comparison over the tasks above chance at every trained "
                                   "checkpoint, beside the full one.")


def _console():
    from rich.console import Console

    # Piped output (logs, CI) gets a width that fits the tables instead of rich's 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=150)


@app.command()
def compare(
    run: Path = RunArg,
    permutations: int = Permutations,
    seed: int = SeedOpt,
    bootstrap: int = BootstrapOpt,
    all_spaces: bool = typer.Option(False, "--all-spaces", help="Print every space, not only the main ones."),
    above_chance: bool = AboveChanceOpt,
) -> None:
    """Compare every task space of RUN with linguistic theory, its control, checkpoints and sizes;
    write RUN/comparison.json and print the tables."""
    from ..analysis.compare import compare_run
    from ..analysis.printing import print_comparison
    from ..provenance import usable_cpus

    cmp = compare_run(run, permutations=permutations, seed=seed, progress=True, bootstrap=bootstrap,
                      above_chance=above_chance, workers=usable_cpus(at_most=4))
    console = _console()
    print_comparison(console, cmp, all_spaces=all_spaces)
    console.print(f"wrote {Path(cmp['run']) / 'comparison.json'}", highlight=False)


@app.command()
def report(
    run: Path = RunArg,
    permutations: int = Permutations,
    seed: int = SeedOpt,
    bootstrap: int = BootstrapOpt,
) -> None:
    """Write RUN/figures/ (PNG + SVG) and RUN/report.html, one self-contained page; print its path."""
    from ..report import build_report, save_workers

    path = build_report(run, permutations=permutations, seed=seed, bootstrap=bootstrap, workers=save_workers())
    _console().print(f"wrote {path.parent / 'figures'}/ and {path}", highlight=False)
    typer.echo(str(path))
