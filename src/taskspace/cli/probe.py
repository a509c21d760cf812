"""``taskspace probe``: task spaces from a model's learning signals.

``gradients`` and ``overlap`` live here; ``transfer`` and ``baseline`` (FTGD) are added to the same
``probe_app`` by :mod:`taskspace.cli.probe_transfer`. The helpers :func:`build_settings`,
:func:`load_with_control` and :func:`print_summary` are shared with those commands.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from . import app
from .options import (BatchTokens, Control, Device, DevPairs, DType, EvalPairs, MaskFraction, MaskKind,
                      MaskThreshold, ModelOpt, Prefix, Reduction, Revision, Seed, SuiteOpt, Tasks, TrainPairs,
                      TrustRemote)

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..probes.settings import ProbeSettings

probe_app = typer.Typer(
    name="probe",
    help="Probe how tasks interact inside a model: gradients, overlap, transfer, baseline.",
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")

Out = typer.Option(..., "--out", "-o", help="Folder for spaces/, stats/, masks/ (and control/).")
SaveMasks = typer.Option(False, "--save-masks", help="Also write masks/<task>.safetensors.")
GradStore = typer.Option(None, "--gradients-dir",
                         help="Stream each task's ḡ_t to this folder (bounded memory for large models).")
StorageDType = typer.Option("float32", "--storage-dtype",
                            help="Storage precision of ḡ_t: float32 (default), bfloat16, float16.")


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


@probe_app.command("gradients")
def gradients(
    model: ModelOpt,
    suite: SuiteOpt,
    out: Path = Out,
    revision: Revision = None,
    tasks: Tasks = None,
    train_pairs: TrainPairs = 100,
    dev_pairs: DevPairs = 50,
    eval_pairs: EvalPairs = 100,
    mask_fraction: MaskFraction = None,
    mask_threshold: MaskThreshold = None,
    mask_kind: MaskKind = "gradient",
    seed: Seed = 0,
    control: Control = None,
    device: Device = "cpu",
    dtype: DType = "float32",
    batch_tokens: BatchTokens = 4096,
    reduction: Reduction = "sum",
    prefix: Prefix = "bos",
    trust_remote_code: TrustRemote = False,
    save_masks: bool = SaveMasks,
    gradients_dir: Optional[Path] = GradStore,
    storage_dtype: str = StorageDType,
) -> None:
    """Gradient probe: cosine of the tasks' gradient differentials ḡ_t, overall and per module.

    Writes spaces/gradients.csv|.json, spaces/gradients_by_module/<module>.csv|.json and
    stats/distributedness.csv (with --control, the same under control/), and prints within- vs
    between-group means.
    """
    _run("gradients", **locals())


@probe_app.command("overlap")
def overlap(
    model: ModelOpt,
    suite: SuiteOpt,
    out: Path = Out,
    revision: Revision = None,
    tasks: Tasks = None,
    train_pairs: TrainPairs = 100,
    dev_pairs: DevPairs = 50,
    eval_pairs: EvalPairs = 100,
    mask_fraction: MaskFraction = None,
    mask_threshold: MaskThreshold = None,
    mask_kind: MaskKind = "gradient",
    seed: Seed = 0,
    control: Control = None,
    device: Device = "cpu",
    dtype: DType = "float32",
    batch_tokens: BatchTokens = 4096,
    reduction: Reduction = "sum",
    prefix: Prefix = "bos",
    trust_remote_code: TrustRemote = False,
    save_masks: bool = SaveMasks,
    gradients_dir: Optional[Path] = GradStore,
    storage_dtype: str = StorageDType,
) -> None:
    """Overlap probe: Jaccard overlap of the tasks' masks M_t (top 5% of |ḡ_t| by default).

    Writes spaces/overlap.csv|.json and stats/distributedness.csv (with --save-masks also
    masks/<task>.safetensors; with --control, the same under control/), and prints within- vs
    between-group means.
    """
    _run("overlap", **locals())

