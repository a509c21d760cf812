"""``taskspace corpus``: write pretraining corpora (``corpus toy``: the toy grammar's sentences)."""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import typer

from ..errors import InputError
from ..io import atomic_path
from . import app

# the toy corpus and the progress bar are imported inside the command: the command line starts without them

corpus_app = typer.Typer(name="corpus", help="Write pretraining corpora, one sentence per line.",
                         no_args_is_help=True)
app.add_typer(corpus_app)


@corpus_app.command("toy")
def corpus_toy(
    out: Path = typer.Option(..., "--out", help="Text file to write, one sentence per line."),
    sentences: int = typer.Option(100_000, "--sentences", "-n", min=1, help="Number of sentences."),
    seed: int = typer.Option(0, "--seed", help="Seed of the grammar's generator (and of the suite it "
                                               "excludes: no sentence equals a good sentence of "
                                               "`toy:SEED`)."),
) -> None:
    """Grammatical sentences of the toy language; none equals a good sentence of the toy suite."""
    from ..progress import progress_bar
    from ..suites.toy.corpus import iter_toy_corpus

    if out.exists() and out.is_dir():
        raise InputError("is a folder, expected a file path", file=out, field="--out")
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f, \
            progress_bar("toy corpus", sentences) as advance:
        chunk = 10_000
        for i, sentence in enumerate(islice(iter_toy_corpus(seed), sentences), 1):
            f.write(sentence + "\n")
            if i % chunk == 0:
                advance(chunk)
        advance(sentences % chunk)
    typer.echo(f"wrote {sentences} sentences to {out}")
