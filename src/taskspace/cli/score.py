"""``taskspace score``: score a suite's pairs with a model and write the per-task / per-pair tables."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..scoring import score as run_score
from ..scoring.convention import BATCH_TOKENS, convention_rules
from ..suites import load_suite
from . import app
from .options import (
    AttnImplementation,
    BatchTokens,
    Columns,
    ConventionOpt,
    Device,
    DType,
    ModelOpt,
    Prefix,
    Reduction,
    Revision,
    SuiteOpt,
    Threads,
    TrustRemote,
)

# the suite writers, the tables and rich are imported inside the command: the command line starts without them


@app.command()
def score(
    model: ModelOpt,
    suite: SuiteOpt,
    out: Path = typer.Option(..., "--out", help="Folder for tasks.csv, pairs.parquet, run.json and lm-eval/ "
                                                "(lm-evaluation-harness's results.json and samples_<task>.jsonl)."),
    revision: Revision = None,
    limit_per_task: Optional[int] = typer.Option(None, "--limit-per-task", min=1,
                                                 help="Score only the first N pairs of each task."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated task ids (default: all)."),
    batch_tokens: BatchTokens = BATCH_TOKENS,
    reduction: Reduction = "sum",
    prefix: Prefix = "bos",
    convention: ConventionOpt = "taskspace",
    device: Device = "auto",
    dtype: DType = "float32",
    attn_implementation: AttnImplementation = None,
    threads: Threads = None,
    trust_remote_code: TrustRemote = False,
    seed: int = typer.Option(0, "--seed", help="Recorded; scoring itself is deterministic."),
    columns: Columns = None,
    share_prefix: Optional[bool] = typer.Option(
        None, "--share-prefix/--no-share-prefix",
        help="Score the tokens a pair's two sentences share at the start once (default: on when exact for "
             "the model; --no-share-prefix: every sentence whole)."),
) -> None:
    """Score every pair of SUITE with MODEL: accuracy (95% CI), mean margin and ties per task."""
    from rich.console import Console

    from ..suites.files import parse_columns
    from .tables import print_scores

    convention_rules(convention, reduction, prefix)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    # the suite first: bad input is refused before a model is loaded
    suite_obj = load_suite(suite, columns=parse_columns(columns, file=suite) or None)
    res = run_score(model, suite_obj, revision=revision, reduction=reduction, prefix=prefix,
                    batch_tokens=batch_tokens, limit_per_task=limit_per_task, tasks=task_list,
                    device=device, dtype=dtype, trust_remote_code=trust_remote_code, progress=True,
                    seed=seed, share_prefix=share_prefix, convention=convention,
                    attn_implementation=attn_implementation, threads=threads)
    res.save(out)
    res.save_lm_eval(out / "lm-eval")
    console = Console()
    print_scores(console, res)
    console.print(f"wrote {out / 'tasks.csv'}, {out / 'pairs.parquet'}, {out / 'run.json'}, "
                  f"{out / 'lm-eval'}/ (results.json, samples_<task>.jsonl)")
