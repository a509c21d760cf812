"""``taskspace pretrain``: train a small GPT-2 from scratch with log-spaced checkpoints ``DIR/stepN``."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from ..io import read_json
from . import app
from .options import Seed

# pretraining (torch, transformers) and rich are imported inside the command: the command line starts without
# them


@app.command()
def pretrain(
    corpus: str = typer.Option(..., "--corpus", help="'toy' (or toy:SEED) for the toy grammar's corpus, "
                                                     "or a text file with one sentence / document per line."),
    size: str = typer.Option("small", "--size", help="Model size preset: tiny, small or base."),
    out: Path = typer.Option(..., "--out", help="Output folder: stepN/ checkpoints, training.csv, pretrain.json."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (default: the preset's)."),
    seed: Seed = 0,
    sentences: Optional[int] = typer.Option(None, "--sentences", min=2,
                                            help="Toy corpus size in sentences (default 60000)."),
    tokenizer: str = typer.Option("auto", "--tokenizer",
                                  help="auto (word-level for the toy language, else byte-level BPE), word, "
                                       "bpe, or a folder with a saved tokenizer."),
    vocab_size: int = typer.Option(8192, "--vocab-size", min=258, help="BPE vocabulary size."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Sequences per step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: the preset's)."),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints",
                                              help="Comma-separated steps to save besides 0 and the last "
                                                   "(default: 5 log-spaced ones)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's)."),
) -> None:
    """Pretrain a GPT-2 from scratch; load any checkpoint with --model OUT --revision stepN.

    A killed run resumes from its latest checkpoint when the same command is run again.
    """
    from rich.console import Console

    from ..models.pretrain import pretrain as run_pretrain

    console = Console(stderr=True, soft_wrap=True)
    ckpts = None
    if checkpoints:
        try:
            ckpts = [int(s) for s in checkpoints.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--checkpoints must be comma-separated integers, got {checkpoints!r}",
                             field="checkpoints") from None
    run_pretrain(corpus, size, out, steps=steps, seed=seed, tokenizer=tokenizer, checkpoints=ckpts,
                 sentences=sentences, batch_size=batch_size, lr=lr, vocab_size=vocab_size, threads=threads,
                 progress=True, log=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    _summary(out)


def _summary(out: Path) -> None:
    from rich.console import Console
    from rich.table import Table


    meta = read_json(out / "pretrain.json")
    table = Table(title=f"{out}  ({meta['preset']['name']}, {meta['parameters']['total']:,} parameters, "
                        f"{meta['parameters']['non_embedding']:,} non-embedding)")
    for c in ("revision", "tokens seen", "train loss", "held-out loss", "elapsed s"):
        table.add_column(c, justify="right")

    with open(out / "training.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            table.add_row(f"step{r['step']}", r["tokens_seen"], r["train_loss"] or "-", r["heldout_loss"],
                          r["elapsed_s"])
    Console().print(table)
    Console().print(f"load a checkpoint with --model {out} --revision step{meta['steps']}")
