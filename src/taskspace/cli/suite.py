"""``taskspace suite``: inspect a suite (``info``) and write the built-in toy suite (``toy``)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..suites import load_suite
from . import app, fail
from .options import Columns, Seed

# the suite readers and writers and rich are imported inside the commands: the command line starts without
# them

suite_app = typer.Typer(name="suite", help="Inspect suites of minimal pairs; write the toy suite.",
                        no_args_is_help=True)
app.add_typer(suite_app, name="suite")

_MAX_LISTED = 20  # identical pairs listed by id; beyond that only counted


@suite_app.command("info")
def info(
    suite: str = typer.Argument(..., help="'toy', 'blimp' (hub), a BLiMP folder, or a .jsonl/.csv/.tsv file."),
    columns: Columns = None,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
) -> None:
    """Groups, tasks and pair counts of SUITE; identical pairs (scored as ties) and the data hash."""
    from ..suites.files import parse_columns

    s = load_suite(suite, columns=parse_columns(columns, file=suite) or None)
    counts = s.counts()
    identical = [(p.task, p.pair_id) for p in s.pairs if p.identical]
    n_identical = {t: 0 for t in counts}
    for t, _ in identical:
        n_identical[t] += 1
    if as_json:
        fields = s.meta.get("blimp_fields") or {}
        summary = dict(s.describe(),
                       tasks=[{"task": t, "group": s.group_of(t), "n_pairs": counts[t],
                               "n_identical": n_identical[t],
                               **({"blimp_field": fields[t]} if t in fields else {})} for t in s.tasks],
                       identical=[{"task": t, "pair_id": i} for t, i in identical])
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    _print_info(s, counts, n_identical, identical)


def _print_info(s, counts: dict, n_identical: dict, identical: list) -> None:
    """One table: a bold row per group (its task and pair totals), its tasks indented below."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = f"suite {s.name}" + (f" ({s.source})" if s.source and s.source != s.name else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    # one task column, not group | task side by side: BLiMP's longest ids would not fit 80 columns
    table.add_column("group / task", no_wrap=True)
    table.add_column("pairs", justify="right")
    table.add_column("identical", justify="right")
    by_group: dict[str, list[str]] = {}
    for t in s.tasks:
        by_group.setdefault(s.group_of(t), []).append(t)
    for gi, (group, tasks) in enumerate(by_group.items()):
        n_pairs = sum(counts[t] for t in tasks)
        n_same = sum(n_identical[t] for t in tasks)
        label = f"{group} ({len(tasks)} task{'s' if len(tasks) != 1 else ''})"
        table.add_row(label, f"{n_pairs:,}", str(n_same) if n_same else "", style="bold",
                      end_section=False)
        for ti, t in enumerate(tasks):
            table.add_row("  " + t, f"{counts[t]:,}", str(n_identical[t]) if n_identical[t] else "",
                          end_section=ti == len(tasks) - 1 and gi < len(by_group) - 1)
    console.print(table)
    out = {"highlight": False, "soft_wrap": True}  # long lines stay whole when piped to a file
    console.print(f"{len(s.tasks)} tasks in {len(s.groups)} groups, {len(s.pairs):,} pairs", **out)
    if identical:
        listed = ", ".join(f"{t}/{i}" for t, i in identical[:_MAX_LISTED])
        more = f", and {len(identical) - _MAX_LISTED} more" if len(identical) > _MAX_LISTED else ""
        console.print(f"{len(identical)} identical pairs (good == bad; kept, scored as ties, never "
                      f"correct): {listed}{more}", **out)
    else:
        console.print("0 identical pairs", **out)
    console.print(f"data hash (sha256): {s.data_hash}", **out)


@suite_app.command("toy")
def toy(
    out: Path = typer.Option(..., "--out", help="A .jsonl file, or a folder (no suffix) of <task>.jsonl files."),
    seed: Seed = 0,
    pairs_per_task: int = typer.Option(200, "--pairs-per-task", min=1, help="Pairs generated per task."),
) -> None:
    """Write the built-in toy-English suite as BLiMP-style JSONL (readable by any BLiMP tool)."""
    from rich.console import Console

    from ..suites.write import write_suite

    try:
        from ..suites.toy import toy_suite
    except ModuleNotFoundError as e:
        if e.name != "taskspace.suites.toy":
            raise
        raise fail("the toy suite (taskspace.suites.toy) is not part of this installation") from None
    s = toy_suite(seed=seed, pairs_per_task=pairs_per_task)
    path = write_suite(s, out)
    Console().print(f"wrote {len(s.pairs):,} pairs ({len(s.tasks)} tasks, {len(s.groups)} groups, "
                    f"{s.n_identical()} identical) of the toy suite, seed {seed}, to {path}", highlight=False)
