"""``taskspace probe transfer|baseline``: FTGD transfer spaces and the entangled baseline.

Both commands fine-tune on each task in turn, score every task's held-out pairs, and write
``DIR/spaces/<probe>*.csv|.json``, ``DIR/ftgd/<task>.json`` (or ``DIR/baseline/``), ``DIR/deltas/``,
``DIR/scores/`` and ``DIR/stats/<probe>_tasks.csv``; with ``--control`` the same under ``DIR/control/``.
A killed run resumes: run the same command again.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

from .options import LR, BatchPairs, Bootstrap, EvalEvery, Heldout, Objective, Patience, Steps, Workers
from .probe import build_settings, load_with_control, option, print_summary, probe_command

#: The fine-tuning options of ``transfer`` and ``baseline`` (after the mask options in ``--help``).
FTGD_OPTIONS: tuple[inspect.Parameter, ...] = (
    option("objective", Objective, "difference"),
    option("steps", Steps, 50),
    option("lr", LR, 1e-3),
    option("batch_pairs", BatchPairs, 16),
    option("patience", Patience, 5),
    option("eval_every", EvalEvery, 10),
    option("bootstrap", Bootstrap, 1000),
)
#: ``transfer`` and ``baseline`` only, at the end of ``--help``.
RUN_OPTIONS: tuple[inspect.Parameter, ...] = (
    option("heldout", Heldout, None),
    option("workers", Workers, 1),
)


def _run(probe: str, *, model: str, suite: str, out: Path, revision: Optional[str], tasks: Optional[str],
         train_pairs: int, dev_pairs: int, eval_pairs: int, mask_fraction: Optional[float],
         mask_threshold: Optional[float], mask_kind: str, objective: str, steps: int, lr: float,
         batch_pairs: int, patience: int, eval_every: int, bootstrap: int, seed: int,
         control: Optional[str], device: str, dtype: str, batch_tokens: int, reduction: str, prefix: str,
         trust_remote_code: bool, heldout: Optional[Path], workers: int) -> None:
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
                              patience=patience, eval_every=eval_every, bootstrap=bootstrap,
                              workers=workers)
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


@probe_command("transfer", middle=FTGD_OPTIONS, extra=RUN_OPTIONS)
def transfer(**options: Any) -> None:
    """Transfer probe: FTGD on each task (its gradient mask), then every task scored on held-out pairs.

    T[a,b] = perf_b(θ_a) − perf_b(θ_0) (mean margin and accuracy), raw and normalised by
    self-transfer, with 95% bootstrap CIs; LM damage per task. Resumes a killed run.
    """
    _run("transfer", **options)


@probe_command("baseline", middle=FTGD_OPTIONS, extra=RUN_OPTIONS)
def baseline(**options: Any) -> None:
    """Entangled baseline: plain fine-tuning on each task's good sentences (all parameters), then every
    task scored on held-out pairs — the comparison that shows what FTGD's disentanglement buys.

    Mask and objective options are accepted for symmetry with `transfer` and ignored.
    """
    _run("baseline", **options)
