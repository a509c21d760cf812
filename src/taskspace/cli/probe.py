"""``taskspace probe``: task spaces from a model's learning signals.

``gradients`` and ``overlap`` live here; ``transfer`` and ``baseline`` (FTGD) are added to the same
``probe_app`` by :mod:`taskspace.cli.probe_transfer`. The options every probe command takes are listed
once (:data:`PROBE_HEAD`, :data:`PROBE_TAIL`) and given to each command by :func:`probe_command`. The
helpers :func:`build_settings`, :func:`load_with_control` and :func:`print_summary` are shared with
those commands.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import typer

from . import app
from .options import (BatchTokens, Control, Device, DevPairs, DType, EvalPairs, GradientsDir, MaskFraction,
                      MaskKind, MaskThreshold, ModelOpt, Prefix, ProbeOut, Reduction, Revision, SaveMasks, Seed,
                      StorageDType, SuiteOpt, Tasks, TrainPairs, TrustRemote)

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..probes.settings import ProbeSettings

probe_app = typer.Typer(
    name="probe",
    help="Probe how tasks interact inside a model: gradients, overlap, transfer, baseline.",
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")

Command = Callable[..., None]


def option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """One command-line option as a keyword-only parameter: ``annotation`` is an ``Annotated`` alias
    of :mod:`taskspace.cli.options`; no ``default`` makes it required."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


#: Options of every probe command, first in ``--help``: model, data, splits and masks.
PROBE_HEAD: tuple[inspect.Parameter, ...] = (
    option("model", ModelOpt),
    option("suite", SuiteOpt),
    option("out", ProbeOut),
    option("revision", Revision, None),
    option("tasks", Tasks, None),
    option("train_pairs", TrainPairs, 100),
    option("dev_pairs", DevPairs, 50),
    option("eval_pairs", EvalPairs, 100),
    option("mask_fraction", MaskFraction, None),
    option("mask_threshold", MaskThreshold, None),
    option("mask_kind", MaskKind, "gradient"),
)
#: Options of every probe command, after the command's own probe options: seed, control and how the
#: model is loaded and scored.
PROBE_TAIL: tuple[inspect.Parameter, ...] = (
    option("seed", Seed, 0),
    option("control", Control, None),
    option("device", Device, "cpu"),
    option("dtype", DType, "float32"),
    option("batch_tokens", BatchTokens, 4096),
    option("reduction", Reduction, "sum"),
    option("prefix", Prefix, "bos"),
    option("trust_remote_code", TrustRemote, False),
)
#: ``gradients`` and ``overlap`` only (at the end of ``--help``).
GRADIENT_OPTIONS: tuple[inspect.Parameter, ...] = (
    option("save_masks", SaveMasks, False),
    option("gradients_dir", GradientsDir, None),
    option("storage_dtype", StorageDType, "float32"),
)


def probe_command(name: str, *, middle: Sequence[inspect.Parameter] = (),
                  extra: Sequence[inspect.Parameter] = ()) -> Callable[[Command], Command]:
    """Register the decorated function as ``taskspace probe NAME`` (its docstring is the help).

    Its options are :data:`PROBE_HEAD`, then ``middle`` (the command's own probe options), then
    :data:`PROBE_TAIL`, then ``extra``; typer reads them from the ``__signature__`` set here, and
    calls the function with every option as a keyword argument.
    """
    params = [*PROBE_HEAD, *middle, *PROBE_TAIL, *extra]

    def register(func: Command) -> Command:
        func.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        return probe_app.command(name)(func)

    return register


def build_settings(*, tasks: str | None, train_pairs: int, dev_pairs: int, eval_pairs: int,
                   mask_fraction: float | None, mask_threshold: float | None, mask_kind: str = "gradient",
                   seed: int = 0, reduction: str = "sum", prefix: str = "bos", batch_tokens: int = 4096,
                   **extra: Any) -> "ProbeSettings":
    """ProbeSettings from CLI options. ``--mask-fraction`` and ``--mask-threshold`` exclude each other."""
    from ..errors import InputError
    from ..probes.settings import ProbeSettings, parse_tasks

    if mask_fraction is not None and mask_threshold is not None:
        raise InputError("give --mask-fraction or --mask-threshold, not both", field="mask")
    return ProbeSettings(tasks=parse_tasks(tasks), train_pairs=train_pairs, dev_pairs=dev_pairs,
                         eval_pairs=eval_pairs,
                         mask_fraction=0.05 if mask_fraction is None else mask_fraction,
                         mask_threshold=mask_threshold, mask_kind=mask_kind, seed=seed, reduction=reduction,
                         prefix=prefix, batch_tokens=batch_tokens, **extra)


def load_with_control(model: str, revision: str | None, control: str | None, *, device: str, dtype: str,
                      trust_remote_code: bool = False):
    """The model to probe and, with ``control``, its control (``first`` / ``init``); the control's
    revision is resolved before anything heavy is loaded, so a bad ``--control`` fails at once."""
    from ..models.loading import load_model
    from ..probes.controls import control_revision

    ctl_rev = control_revision(model, revision, control) if control else None
    lm = load_model(model, revision, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    lm_ctl = (load_model(model, ctl_rev, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
              if ctl_rev is not None else None)
    return lm, lm_ctl


def print_summary(console: "Console", title: str, summary: dict) -> None:
    """Within-group vs between-group mean: trained, control and their difference (a rich table)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("", "within", "between", "within − between"):
        table.add_column(col, justify="right" if col else "left")
    rows = [("trained", summary["trained"]), ("control", summary.get("control")),
            ("trained − control", summary.get("trained_minus_control"))]
    for label, wb in rows:
        if wb is not None:
            table.add_row(label, f"{wb['within']:.4f}", f"{wb['between']:.4f}", f"{wb['difference']:.4f}")
    console.print(table)


def _run(probe: str, *, model: str, suite: str, out: Path, revision: str | None, tasks: str | None,
         train_pairs: int, dev_pairs: int, eval_pairs: int, mask_fraction: float | None,
         mask_threshold: float | None, mask_kind: str, seed: int, control: str | None, device: str,
         dtype: str, batch_tokens: int, reduction: str, prefix: str, trust_remote_code: bool,
         save_masks: bool, gradients_dir: Path | None, storage_dtype: str) -> None:
    from ..probes.controls import control_revision, summarize_with_control
    from ..suites import load_suite

    # cheap checks first (no torch yet), so bad input fails in a moment
    settings = build_settings(tasks=tasks, train_pairs=train_pairs, dev_pairs=dev_pairs,
                              eval_pairs=eval_pairs, mask_fraction=mask_fraction,
                              mask_threshold=mask_threshold, mask_kind=mask_kind, seed=seed,
                              reduction=reduction, prefix=prefix, batch_tokens=batch_tokens)
    if control:
        control_revision(model, revision, control)
    suite_obj = load_suite(suite)
    suite_obj.select(list(settings.tasks) if settings.tasks else None)   # unknown tasks fail here

    import torch
    from rich.console import Console

    from ..probes.output import write_summary
    from ..probes.similarity import run_gradient_probes

    lm, lm_ctl = load_with_control(model, revision, control, device=device, dtype=dtype,
                                   trust_remote_code=trust_remote_code)
    probes = ("gradients",) if probe == "gradients" else ("overlap",)
    torch.manual_seed(seed)
    # compute everything (trained and control) before writing anything: no partial outputs
    res = run_gradient_probes(lm, suite_obj, settings, probes=probes, store=gradients_dir,
                              storage_dtype=storage_dtype)
    res_ctl = None
    if lm_ctl is not None:
        res_ctl = run_gradient_probes(lm_ctl, suite_obj, settings, probes=probes,
                                      store=None if gradients_dir is None else gradients_dir / "control",
                                      storage_dtype=storage_dtype)
    summary = summarize_with_control(res.spaces[probe], res_ctl.spaces[probe] if res_ctl else None)
    summary.update({"probe": probe, "model": lm.describe(),
                    "control_model": lm_ctl.describe() if lm_ctl is not None else None,
                    "control_kind": control, "settings": settings.to_dict(),
                    "convention": res.grads.convention})
    paths = res.write(out, save_masks=save_masks)
    if res_ctl is not None:
        paths += res_ctl.write(out, control=True, save_masks=save_masks)
    paths.append(write_summary(out, probe, summary))

    console = Console()
    n = len(res.grads.tasks)
    groups = len(set(res.grads.groups))
    title = (f"{probe}: {lm.name}" + (f" @ {lm.revision}" if lm.revision else "") +
             f" — {n} tasks, {groups} groups" + (f"; control {lm_ctl.revision}" if lm_ctl else ""))
    print_summary(console, title, summary)
    console.print(f"wrote {len(paths)} files under {out}")


@probe_command("gradients", extra=GRADIENT_OPTIONS)
def gradients(**options: Any) -> None:
    """Gradient probe: cosine of the tasks' gradient differentials ḡ_t, overall and per module.

    Writes spaces/gradients.csv|.json, spaces/gradients_by_module/<module>.csv|.json and
    stats/distributedness.csv (with --control, the same under control/), and prints within- vs
    between-group means.
    """
    _run("gradients", **options)


@probe_command("overlap", extra=GRADIENT_OPTIONS)
def overlap(**options: Any) -> None:
    """Overlap probe: Jaccard overlap of the tasks' masks M_t (top 5% of |ḡ_t| by default).

    Writes spaces/overlap.csv|.json and stats/distributedness.csv (with --save-masks also
    masks/<task>.safetensors; with --control, the same under control/), and prints within- vs
    between-group means.
    """
    _run("overlap", **options)
