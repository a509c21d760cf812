"""The built-in probe kinds: one registry entry each (:mod:`taskspace.probes.registry`).

The runners of the four original probes are thin adapters here (their modules predate the registry);
every newer probe keeps its runner in its own module.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .registry import ProbeSpec, RunContext, SpaceSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loading import LoadedModel
    from ..suites.schema import Suite
    from .result import ProbeResult
    from .settings import ProbeSettings

#: what every probe that scores sentences reads
SCORING = ("reduction", "prefix", "batch_tokens", "seed")
#: the per-task splits (train / dev / eval sizes all shape every split)
SPLITS = ("train_pairs", "dev_pairs", "eval_pairs")
MASKS = ("mask_fraction", "mask_threshold", "mask_kind")
FINETUNING = ("objective", "steps", "lr", "batch_pairs", "patience", "eval_every", "bootstrap", "autocast")
#: how the gradient probes hold ḡ (exact or a count sketch) and run the model
GRADIENT_MODES = ("gradient_mode", "sketch_dim", "autocast")


def _transfer_spaces(probe: str, label: str) -> tuple[SpaceSpec, ...]:
    rows = "task fine-tuned on"
    cols = "task evaluated"
    return (
        SpaceSpec(probe, f"margin {label} T", rows=rows, columns=cols),
        SpaceSpec(f"{probe}_normalized", f"normalised {label} T̃", main=True, generalization=1,
                  rows=rows, columns=cols),
        SpaceSpec(f"{probe}_accuracy", f"accuracy {label}", rows=rows, columns=cols),
        SpaceSpec(f"{probe}_accuracy_normalized", f"normalised accuracy {label}", generalization=2,
                  rows=rows, columns=cols),
    )


# -- runners of the original probes --------------------------------------------------------------

def run_gradient_kinds(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: RunContext,
                       kinds: Sequence[str] = ("gradients", "overlap")) -> "ProbeResult":
    """``gradients`` and/or ``overlap`` (one pass of gradient differentials) and the distributedness
    table."""
    from .result import ProbeResult
    from .similarity import run_gradient_probes

    res = run_gradient_probes(loaded, suite, settings, probes=tuple(kinds),
                              store=ctx.options.get("gradients_dir"),
                              storage_dtype=ctx.options.get("storage_dtype") or "float32", progress=ctx.progress)
    spaces = dict(res.spaces)
    if "gradients" in kinds:
        spaces.update({f"gradients_by_module/{m}": sp for m, sp in res.by_module.items()})
    out = ProbeResult(tuple(kinds), spaces=spaces, provenance=res.provenance, extra={"gradients": res})
    if res.distributedness is not None:
        out.tables["stats/distributedness.csv"] = (res.distributedness, res.provenance)
    if ctx.options.get("save_masks"):
        from .output import write_masks

        meta = {k: str(v) for k, v in res.masks.describe().items()}
        out.writers.append(lambda d: write_masks(d, res.masks, meta))
    return out


def run_transfer_kinds(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: RunContext,
                       kinds: Sequence[str] = ("transfer",)) -> "ProbeResult":
    """FTGD transfer or the entangled baseline (each its own job): fine-tune per task, evaluate on all."""
    import tempfile

    from .result import ProbeResult
    from .transfer import transfer_probe

    from .transfer import summary

    (kind,) = kinds
    out = Path(ctx.out) if ctx.out is not None else Path(tempfile.mkdtemp(prefix=f"taskspace-{kind}-"))
    spaces = transfer_probe(loaded, suite, settings, out, baseline=kind == "baseline", progress=ctx.progress,
                            heldout=ctx.options.get("heldout"), rows=ctx.rows)
    res = ProbeResult((kind,), spaces=spaces, workdir=out,
                      provenance=next(iter(spaces.values())).provenance if spaces else {})
    if spaces:
        info = summary(spaces, kind, out / "stats" / f"{kind}_tasks.csv")
        res.records[f"stats/{kind}_info.json"] = info
        notes = [f"diagonal mean of T (self-transfer, margin): {info['diagonal_mean']:.4g}"]
        if "lm_damage_mean" in info:
            notes.append(f"LM damage (mean change of held-out NLL, nats/token): {info['lm_damage_mean']:.4g}")
        failed = info["failed"]
        notes.append(f"{len(failed)} task(s) failed: " + "; ".join(f"{t} ({why})" for t, why in failed.items())
                     if failed else "failed tasks: none")
        res.extra["notes"] = notes
    return res


class TransferStages:
    """How a run splits transfer / baseline into jobs: the base model's scores once (``base``), one
    fine-tuning per source task (``row``, reading the published base scores from ``cell``) and the
    assembly of the spaces from every row's published files (``assemble``)."""

    @staticmethod
    def base(kind: str, loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", out: Path) -> dict:
        from .transfer import score_base

        score_base(loaded, suite, settings, out, baseline=kind == "baseline", progress=True)
        return {"stage": "base"}

    @staticmethod
    def row(kind: str, loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", out: Path, row: str,
            cell: Path) -> dict:
        from .transfer import transfer_probe

        transfer_probe(loaded, suite, settings, out, baseline=kind == "baseline", progress=False, rows=[row],
                       base_from=cell)
        return {"row": row}

    @staticmethod
    def assemble(kind: str, suite: "Suite", settings: "ProbeSettings", out: Path, cell: Path) -> dict:
        from .transfer import assemble_transfer

        spaces = assemble_transfer(None, suite, settings, out, baseline=kind == "baseline", source=cell)
        return {name: sp.within_between() for name, sp in spaces.items()}


# -- the registry entries ------------------------------------------------------------------------

GRADIENT_OPTIONS = ("save_masks", "gradients_dir", "storage_dtype")

register(ProbeSpec(
    name="gradients",
    help="Gradient probe: cosine of the tasks' gradient differentials ḡ_t, overall and per module.",
    reads=SPLITS + MASKS + SCORING + GRADIENT_MODES,
    spaces=(SpaceSpec("gradients", "gradient cosine", main=True, by="module"),),
    runner="taskspace.probes.kinds:run_gradient_kinds",
    cost="one backward pass per task over its training pairs",
    job="gradients", options=GRADIENT_OPTIONS,
))
register(ProbeSpec(
    name="overlap",
    help="Overlap probe: Jaccard overlap of the tasks' masks M_t (top fraction of |ḡ_t|).",
    reads=SPLITS + MASKS + SCORING + GRADIENT_MODES,
    spaces=(SpaceSpec("overlap", "mask overlap (Jaccard)", signed=False, main=True),),
    runner="taskspace.probes.kinds:run_gradient_kinds",
    cost="as gradients (computed in the same pass)",
    job="gradients", options=GRADIENT_OPTIONS,
))
register(ProbeSpec(
    name="transfer",
    help="Transfer probe: FTGD on each task (its gradient mask), then every task scored on held-out pairs.",
    reads=SPLITS + MASKS + FINETUNING + SCORING,
    spaces=_transfer_spaces("transfer", "transfer"),
    runner="taskspace.probes.kinds:run_transfer_kinds",
    cost="a fine-tuning and an evaluation of every task per task (the costliest)",
    per_task=True, options=("heldout", "workers"), stages="taskspace.probes.kinds:TransferStages",
))
register(ProbeSpec(
    name="baseline",
    help="Entangled baseline: plain fine-tuning on each task's good sentences (all parameters), then "
         "every task scored on held-out pairs.",
    reads=SPLITS + tuple(f for f in FINETUNING if f != "objective") + SCORING,
    spaces=_transfer_spaces("baseline", "baseline transfer"),
    runner="taskspace.probes.kinds:run_transfer_kinds",
    cost="as transfer, all parameters trained",
    per_task=True, options=("heldout", "workers"), stages="taskspace.probes.kinds:TransferStages",
))

# -- the newer probes: one module each --------------------------------------------------------------

register(ProbeSpec(
    name="activations",
    help="Activation probe: cosine of the tasks' mean good−bad residual-stream differences, per layer "
         "and over all layers (Zhou et al. 2024).",
    reads=SPLITS + ("prefix", "batch_tokens", "seed"),
    spaces=(SpaceSpec("activations", "activation-difference cosine", main=True, by="layer"),),
    runner="taskspace.probes.activations:run",
    cost="one forward pass per unique training sentence (no gradients)",
))
register(ProbeSpec(
    name="latent",
    help="Latent probe: cosine of the tasks' latent gradients h̄_t (∇ of the margin w.r.t. the final hidden "
         "states), and a vocabulary task card per task (cards/latent.csv).",
    reads=SPLITS + SCORING,
    spaces=(SpaceSpec("latent", "latent-gradient cosine", main=True),),
    runner="taskspace.probes.latent:run",
    cost="one forward pass per unique training sentence, a backward through the head only; one pinv of W_U",
    options=("card_tokens",),
))
register(ProbeSpec(
    name="lookahead",
    help="Lookahead probe: one masked gradient step on task a read on task b to first order, "
         "⟨ḡ_b^eval, M_a ⊙ ḡ_a⟩ / |diagonal|; no fine-tuning.",
    reads=SPLITS + MASKS + SCORING,
    spaces=(SpaceSpec("lookahead", "lookahead L̃ (normalised)", main=True,
                      rows="task stepped on", columns="task evaluated"),
            SpaceSpec("lookahead_raw", "lookahead L (raw)", rows="task stepped on", columns="task evaluated")),
    runner="taskspace.probes.lookahead:run",
    cost="as gradients, plus one backward pass per task over its eval pairs",
))
register(ProbeSpec(
    name="transfer-estimate",
    help="Transfer estimate: the first-order term −⟨ḡ_b^eval, Δ_a⟩ of FTGD transfer from the deltas "
         "(a transfer run's, when present), without evaluating any fine-tuned model.",
    reads=SPLITS + MASKS + tuple(f for f in FINETUNING if f != "bootstrap") + SCORING,
    spaces=(SpaceSpec("transfer_estimate", "first-order transfer estimate T̂",
                      rows="task fine-tuned on", columns="task evaluated"),
            SpaceSpec("transfer_estimate_normalized", "normalised transfer estimate", main=True,
                      rows="task fine-tuned on", columns="task evaluated")),
    runner="taskspace.probes.transfer_estimate:run", needs=("transfer",),
    cost="FTGD per task unless a transfer run's deltas are reused, plus one backward pass per task over "
         "its eval pairs; no evaluation of fine-tuned models",
    options=("heldout",), per_task=True,
))
register(ProbeSpec(
    name="ablation",
    help="Ablation probe: every task's mean-margin change when task a's mask M_a is zeroed (or set to a "
         "reference model's values), beside a random mask of the same size per row.",
    reads=SPLITS + ("ablation_fraction", "mask_threshold") + SCORING + ("bootstrap",),
    spaces=(SpaceSpec("ablation", "mask ablation Δmargin", main=True,
                      rows="task whose mask is ablated", columns="task evaluated"),
            SpaceSpec("ablation_random", "random-mask ablation Δmargin",
                      rows="task whose random mask is ablated", columns="task evaluated")),
    runner="taskspace.probes.ablation:run",
    cost="the gradient pass, then two scorings of every task's eval pairs per row",
    options=("reference",), per_task=True,
))
