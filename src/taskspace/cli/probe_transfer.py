"""``taskspace probe transfer|baseline``: FTGD transfer spaces and the entangled baseline.

Both commands fine-tune on each task in turn, score every task's held-out pairs, and write
``DIR/spaces/<probe>*.csv|.json``, ``DIR/ftgd/<task>.json`` (or ``DIR/baseline/``), ``DIR/deltas/``,
``DIR/scores/`` and ``DIR/stats/<probe>_tasks.csv``; with ``--control`` the same under ``DIR/control/``.
A killed run resumes: run the same command again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .options import (LR, BatchTokens, Control, Device, DevPairs, DType, EvalPairs, MaskFraction, MaskKind,
                      MaskThreshold, ModelOpt, Objective, Prefix, Reduction, Revision, Seed, Steps, SuiteOpt,
                      Tasks, TrainPairs, TrustRemote)
from .probe import Out, build_settings, load_with_control, print_summary, probe_app

BatchPairs = typer.Option(16, "--batch-pairs", min=1, help="Training pairs per fine-tuning step.")
Patience = typer.Option(5, "--patience", min=1, help="Dev evaluations without improvement before stopping.")
EvalEvery = typer.Option(10, "--eval-every", min=1, help="Steps between dev evaluations (early stopping).")
Bootstrap = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% CIs (0: none).")
Heldout = typer.Option(None, "--heldout", help="Text file (one sentence a line) for LM damage; default: "
                                               "the good sentences of all eval pairs.")


def _run(probe: str, *, model: str, suite: str, out: Path, revision: Optional[str], tasks: Optional[str],
         train_pairs: int, dev_pairs: int, eval_pairs: int, mask_fraction: Optional[float],
         mask_threshold: Optional[float], mask_kind: str, objective: str, steps: int, lr: float,
         batch_pairs: int, patience: int, eval_every: int, bootstrap: int, seed: int,
         control: Optional[str], device: str, dtype: str, batch_tokens: int, reduction: str, prefix: str,
         trust_remote_code: bool, heldout: Optional[Path]) -> None:
    import torch
    from rich.console import Console

    from ..errors import InputError
    from ..io import write_json
    from ..probes.controls import summarize_with_control
    from ..probes.output import probe_dir
    from ..probes.transfer import summary, transfer_probe
    from ..suites import load_suite

    settings = build_settings(tasks=tasks, train_pairs=train_pairs, dev_pairs=dev_pairs,
                              eval_pairs=eval_pairs, mask_fraction=mask_fraction,
                              mask_threshold=mask_threshold, mask_kind=mask_kind, seed=seed,
                              reduction=reduction, prefix=prefix, batch_tokens=batch_tokens,
                              objective=objective, steps=steps, lr=lr, batch_pairs=batch_pairs,
                              patience=patience, eval_every=eval_every, bootstrap=bootstrap)
    if not lr > 0:
        raise InputError(f"learning rate must be > 0, got {lr}", field="lr")
    sentences = None
    if heldout is not None:
        if not heldout.is_file():
            raise InputError("file not found", file=heldout)
        sentences = [s.strip() for s in heldout.read_text(encoding="utf-8").splitlines() if s.strip()]
        if not sentences:
            raise InputError("no sentences in the held-out text", file=heldout)
    suite_obj = load_suite(suite)
    suite_obj.select(list(settings.tasks) if settings.tasks else None)  # unknown tasks fail here
    lm, lm_ctl = load_with_control(model, revision, control, device=device, dtype=dtype,
                                   trust_remote_code=trust_remote_code)
    torch.manual_seed(seed)
    baseline = probe == "baseline"
    spaces = transfer_probe(lm, suite_obj, settings, out, baseline=baseline, heldout=sentences)
    spaces_ctl = None
    if lm_ctl is not None:
        spaces_ctl = transfer_probe(lm_ctl, suite_obj, settings, probe_dir(out, control=True),
                                    baseline=baseline, heldout=sentences)
    info = summary(spaces, probe, Path(out) / "stats" / f"{probe}_tasks.csv")
    name = probe + "_normalized"
    wb = summarize_with_control(spaces[name], spaces_ctl[name] if spaces_ctl else None)
    write_json(Path(out) / "stats" / f"{probe}_summary.json",
               dict(wb, **info, model=lm.describe(), control_model=lm_ctl.describe() if lm_ctl else None,
                    control_kind=control, settings=settings.to_dict()))

    console = Console()
    n = info["n_tasks"]
    title = (f"{probe}: {lm.name}" + (f" @ {lm.revision}" if lm.revision else "") +
             f" — {n} tasks; T̃ = T / |T[a,a]|" + (f"; control {lm_ctl.revision}" if lm_ctl else ""))
    print_summary(console, title, wb)
    console.print(f"diagonal mean of T (self-transfer, margin): {info['diagonal_mean']:.4g}")
    if "lm_damage_mean" in info:
        console.print(f"LM damage (mean change of held-out NLL, nats/token): {info['lm_damage_mean']:.4g}")
    failed = info["failed"]
    if failed:
        console.print(f"[bold red]{len(failed)} task(s) failed[/]: " +
                      "; ".join(f"{t} ({why})" for t, why in failed.items()))
    else:
        console.print("failed tasks: none")
    console.print(f"wrote {Path(out) / 'spaces' / probe}*.csv|.json and per-task results under {out}")


@probe_app.command("transfer")
def transfer(
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
    objective: Objective = "difference",
    steps: Steps = 50,
    lr: LR = 1e-3,
    batch_pairs: int = BatchPairs,
    patience: int = Patience,
    eval_every: int = EvalEvery,
    bootstrap: int = Bootstrap,
    seed: Seed = 0,
    control: Control = None,
    device: Device = "cpu",
    dtype: DType = "float32",
    batch_tokens: BatchTokens = 4096,
    reduction: Reduction = "sum",
    prefix: Prefix = "bos",
    trust_remote_code: TrustRemote = False,
    heldout: Optional[Path] = Heldout,
) -> None:
    """Transfer probe: FTGD on each task (its gradient mask), then every task scored on held-out pairs.

    T[a,b] = perf_b(θ_a) − perf_b(θ_0) (mean margin and accuracy), raw and normalised by
    self-transfer, with 95% bootstrap CIs; LM damage per task. Resumes a killed run.
    """
    _run("transfer", **locals())


@probe_app.command("baseline")
def baseline(
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
    objective: Objective = "difference",
    steps: Steps = 50,
    lr: LR = 1e-3,
    batch_pairs: int = BatchPairs,
    patience: int = Patience,
    eval_every: int = EvalEvery,
    bootstrap: int = Bootstrap,
    seed: Seed = 0,
    control: Control = None,
    device: Device = "cpu",
    dtype: DType = "float32",
    batch_tokens: BatchTokens = 4096,
    reduction: Reduction = "sum",
    prefix: Prefix = "bos",
    trust_remote_code: TrustRemote = False,
    heldout: Optional[Path] = Heldout,
) -> None:
    """Entangled baseline: plain fine-tuning on each task's good sentences (all parameters), then every
    task scored on held-out pairs — the comparison that shows what FTGD's disentanglement buys.

    Mask and objective options are accepted for symmetry with `transfer` and ignored.
    """
    _run("baseline", **locals())
