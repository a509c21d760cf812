"""The ``taskspace`` command line (typer). One module per command family; heavy imports stay inside
the commands so ``taskspace --help`` is instant.

Every :class:`~taskspace.errors.TaskspaceError` reaches the user as one line on stderr and exit code 2
— never a traceback.
"""
from __future__ import annotations

import sys

import typer

from ..errors import TaskspaceError

app = typer.Typer(
    name="taskspace",
    help="Linguistic task spaces of language models: score minimal pairs, probe how tasks share "
         "parameters and transfer (FTGD), compare with linguistic theory, follow sizes and checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Linguistic task spaces of language models."""


def _register() -> None:
    # Imported here, not at the top, so each module can `from . import app` without a cycle.
    from . import analysis, corpus, demo, pretrain, probe, score, suite  # noqa: F401


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print ``error: message`` on stderr and return an Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except TaskspaceError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


_register()
