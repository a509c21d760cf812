"""The built-in probe kinds, as data: one :class:`~taskspace.probes.spec.ProbeSpec` each.

Nothing here runs a probe: ``runner`` and ``stages`` name the code (in :mod:`taskspace.probes.kinds`)
that is imported only when the probe runs, so loading the registry never imports torch. Adding a
built-in probe is its module under ``kinds/``, its entry here, its test and its docs section.
"""
from __future__ import annotations

from .settings import SCORING_SETTINGS as SCORING
from .settings import SPLIT_SETTINGS as SPLITS
from .spec import Option, ProbeSpec, SpaceSpec

MASKS = ("mask_fraction", "mask_threshold", "mask_kind")
FINETUNING = ("objective", "steps", "lr", "batch_pairs", "patience", "eval_every", "bootstrap", "autocast")
#: how the gradient probes hold ḡ (exact or a count sketch) and run the model
GRADIENT_MODES = ("gradient_mode", "sketch_dim", "autocast")

#: held-out text for the LM damage of a fine-tuning (transfer, baseline, transfer-estimate's reuse key)
HELDOUT = Option("heldout", str, None, "Text file (one sentence a line) for LM damage; default: the good "
                 "sentences of all eval pairs.", kind="sentences")
GRADIENT_OPTIONS = (
    Option("save_masks", bool, False, "Also write masks/<task>.npy (packed bits) with masks/index.json."),
    Option("gradients_dir", str, None, "Stream each task's ḡ_t to this folder (bounded memory for large "
           "models; exact mode; the split-half pass's halves in its halves/ folder).", kind="folder", key=False),
    Option("storage_dtype", str, "float32", "Storage precision of ḡ_t (exact mode).",
           choices=("float32", "bfloat16", "float16")),
)
#: the causal probes' own options (steering, erasure, steering-estimate)
CAUSAL_ALPHA = Option("alpha", float, 0.5, "Steering strength α, relative to the layer's RMS residual norm s_ℓ "
                      "(the added vector is α·s_ℓ·d̂_a).", min=0.0)
CAUSAL_RANDOM = Option("random_directions", int, 19, "Random unit directions in the control pool (seeded, one "
                       "pool per layer shared by every row; averaged for the control, ranked against each row's "
                       "own effect for its p-value: 19 is the fewest that can reach p = 0.05).", min=1)
CAUSAL_RANDOM_KIND = Option("random_kind", str, "covariance", "How the control pool is drawn: 'covariance' "
                            "(from N(0, Σ_ℓ), the residual stream's covariance at the layer, then normalised: "
                            "directions where the stream varies, like a task's own) or 'isotropic'.",
                            choices=("covariance", "isotropic"))
CAUSAL_LAYER = Option("layer", int, None, "Layer of the main spaces (block index; the last is read after the "
                      "final norm); default: chosen on the dev pairs.", min=0)
CAUSAL_LAYERS = Option("layers", str, "chosen", "Layers with a full tasks × tasks map: 'chosen' (the main "
                       "layer only; every layer's diagonal is swept on dev pairs) or 'all'.",
                       choices=("chosen", "all"))
_TRANSFER_ROWS, _TRANSFER_COLS = "task fine-tuned on", "task evaluated"


def _transfer_spaces(probe: str, label: str) -> tuple[SpaceSpec, ...]:
    rows, cols = _TRANSFER_ROWS, _TRANSFER_COLS
    return (
        SpaceSpec(probe, f"margin {label} T", rows=rows, columns=cols),
        SpaceSpec(f"{probe}_normalized", f"normalised {label} T̃", main=True, generalization=1,
                  rows=rows, columns=cols, normalizes=probe),
        SpaceSpec(f"{probe}_accuracy", f"accuracy {label}", rows=rows, columns=cols),
        SpaceSpec(f"{probe}_accuracy_normalized", f"normalised accuracy {label}", generalization=2,
                  rows=rows, columns=cols, normalizes=f"{probe}_accuracy"),
    )


#: the trained-subspace probes' own options (das, mdas: one pass, one job)
DAS_OPTIONS = (
    Option("rank", int, 1, "Rank k of each trained subspace R (k × width, orthonormal rows).", min=1),
    Option("layer", int, None, "Layer of the interchange (block index; the last is read after the final norm); "
           "default: chosen on the dev pairs (a subspace is trained at every layer).", min=0),
    Option("rotation_steps", int, 100, "Adam steps of each subspace's interchange-intervention training "
           "(batch_pairs pairs a step).", min=1),
    Option("rotation_lr", float, 0.01, "Adam learning rate of the subspace training.", min=1e-12),
    Option("random_subspaces", int, 19, "Random rank-k subspaces in the control pool (seeded, one pool per "
           "layer shared by every row; 19 is the fewest that can reach p = 0.05).", min=1),
    Option("min_pairs", int, 3, "Skip a task (with the reason) that has fewer alignable train or eval pairs.",
           min=1),
)
#: the demo's das / mdas (one job, so the same options): one layer (the second block; every toy size has it)
#: and 20 rotation steps, not a dev sweep of every layer at 100 — on the quick demo's toy-base that is ≈ 5 s
#: of CPU for both instead of ≈ 35 s for das alone (benchmarks/README.md, "DAS", demo)
DAS_DEMO = (("layer", 1), ("rotation_steps", 20))
MDAS_WEIGHT = Option("isolate_weight", float, 1.0, "MDAS: weight λ of the isolate term (other groups' recovery "
                     "pushed to 0) beside the cause term.", min=0.0)


BUILTIN: tuple[ProbeSpec, ...] = (
    ProbeSpec(
        name="gradients",
        help="Gradient probe: cosine of the tasks' gradient differentials ḡ_t, overall and per module.",
        reads=SPLITS + MASKS + SCORING + GRADIENT_MODES,
        spaces=(SpaceSpec("gradients", "gradient cosine", main=True, by="module"),),
        runner="taskspace.probes.kinds.gradients:run",
        cost="one backward pass per task over its training pairs",
        job="gradients", options=GRADIENT_OPTIONS, files=(("distributedness", "stats/distributedness.csv"),),
        method="gradient-cosine", default=True, joint_halves=True,
        demo="every",
    ),
    ProbeSpec(
        name="overlap",
        help="Overlap probe: Jaccard overlap of the tasks' masks M_t (top fraction of |ḡ_t|).",
        reads=SPLITS + MASKS + SCORING + GRADIENT_MODES,
        spaces=(SpaceSpec("overlap", "mask overlap (Jaccard)", signed=False, main=True, sharing=True),),
        runner="taskspace.probes.kinds.gradients:run",
        cost="as gradients (computed in the same pass)",
        job="gradients", options=GRADIENT_OPTIONS, files=(("distributedness", "stats/distributedness.csv"),),
        method="mask-jaccard", default=True, joint_halves=True,
        demo="every",
    ),
    ProbeSpec(
        name="transfer",
        help="Transfer probe: FTGD on each task (its gradient mask), then every task scored on held-out pairs.",
        reads=SPLITS + MASKS + FINETUNING + SCORING, uses=("workers",),
        spaces=_transfer_spaces("transfer", "transfer"),
        runner="taskspace.probes.kinds.transfer:run",
        cost="a fine-tuning and an evaluation of every task per task (the costliest)",
        per_task=True, options=(HELDOUT,), stages="taskspace.probes.kinds.transfer:TransferStages",
        files=(("deltas", "deltas"), ("status", "ftgd")), method="ftgd", halves=False, default=True,
        demo="last",
    ),
    ProbeSpec(
        name="baseline",
        help="Entangled baseline: plain fine-tuning on each task's good sentences (all parameters), then "
             "every task scored on held-out pairs.",
        reads=SPLITS + tuple(f for f in FINETUNING if f != "objective") + SCORING, uses=("workers",),
        spaces=_transfer_spaces("baseline", "baseline transfer"),
        runner="taskspace.probes.kinds.transfer:run",
        cost="as transfer, all parameters trained",
        per_task=True, options=(HELDOUT,), stages="taskspace.probes.kinds.transfer:TransferStages",
        files=(("status", "baseline"), ("deltas", "deltas/baseline")), method="full-finetune", halves=False,
        demo="largest",
    ),
    ProbeSpec(
        name="activations",
        help="Activation probe: cosine of the tasks' mean good−bad residual-stream differences, per layer "
             "and over all layers (Zhou et al. 2024).",
        reads=SPLITS + ("prefix", "batch_tokens", "seed"),
        spaces=(SpaceSpec("activations", "activation-difference cosine", main=True, by="layer"),),
        runner="taskspace.probes.kinds.activations:run",
        cost="one forward pass per unique training sentence (no gradients)",
        provides=("differences",),
        demo="ends",
    ),
    ProbeSpec(
        name="latent",
        help="Latent probe: cosine of the tasks' latent gradients h̄_t (∇ of the margin w.r.t. the final hidden "
             "states), and a vocabulary task card per task (cards/latent.csv).",
        reads=SPLITS + SCORING,
        spaces=(SpaceSpec("latent", "latent-gradient cosine", main=True),),
        runner="taskspace.probes.kinds.latent:run",
        cost="one forward pass per unique training sentence, a backward through the head only; one pinv of W_U",
        options=(Option("card_tokens", int, 15, "Tokens per direction on each task card.", min=1),),
        files=(("cards", "cards/latent.csv"),),
        demo="ends",
    ),
    ProbeSpec(
        name="lookahead",
        help="Lookahead probe: one masked gradient step on task a read on task b to first order, "
             "⟨ḡ_b^eval, M_a ⊙ ḡ_a⟩ / |diagonal|; no fine-tuning.",
        reads=SPLITS + MASKS + SCORING + ("autocast",),
        spaces=(SpaceSpec("lookahead", "lookahead L̃ (normalised)", main=True,
                          rows="task stepped on", columns="task evaluated"),
                SpaceSpec("lookahead_raw", "lookahead L (raw)", rows="task stepped on", columns="task evaluated")),
        runner="taskspace.probes.kinds.lookahead:run",
        cost="as gradients, plus one backward pass per task over its eval pairs",
        demo="last",
    ),
    ProbeSpec(
        name="transfer-estimate",
        help="Transfer estimate: the first-order term −⟨ḡ_b^eval, Δ_a⟩ of FTGD transfer from the deltas "
             "(a transfer run's, when present), without evaluating any fine-tuned model.",
        reads=SPLITS + MASKS + tuple(f for f in FINETUNING if f != "bootstrap") + SCORING,
        spaces=(SpaceSpec("transfer_estimate", "first-order transfer estimate T̂",
                          rows=_TRANSFER_ROWS, columns=_TRANSFER_COLS),
                SpaceSpec("transfer_estimate_normalized", "normalised transfer estimate", main=True,
                          rows=_TRANSFER_ROWS, columns=_TRANSFER_COLS)),
        runner="taskspace.probes.kinds.transfer_estimate:run", needs=("transfer",),
        cost="FTGD per task unless a transfer run's deltas are reused, plus one backward pass per task over "
             "its eval pairs; no evaluation of fine-tuned models",
        options=(HELDOUT,), per_task=True, halves=False,
        demo="last",
    ),
    ProbeSpec(
        name="ablation",
        help="Ablation probe: every task's mean-margin change when task a's mask M_a is zeroed (or set to a "
             "reference model's values), beside a random mask of the same size per row.",
        reads=SPLITS + ("ablation_fraction", "mask_threshold") + SCORING + ("bootstrap", "autocast"),
        spaces=(SpaceSpec("ablation", "mask ablation Δmargin", main=True, related="lower",
                          rows="task whose mask is ablated", columns="task evaluated"),
                SpaceSpec("ablation_random", "random-mask ablation Δmargin", related="lower",
                          rows="task whose random mask is ablated", columns="task evaluated")),
        runner="taskspace.probes.kinds.ablation:run",
        cost="the gradient pass, then two scorings of every task's eval pairs per row",
        options=(Option("reference", str, None, "Set ablated entries to this revision's values (e.g. step0, or "
                        "first / init for the control's) instead of zero.", kind="revision"),),
        per_task=True, halves=False,
        demo="largest",
    ),
    ProbeSpec(
        name="steering",
        help="Steering probe: every task's mean-margin change when task a's unit activation difference is added "
             "to the residual stream at one layer, beside random directions.",
        reads=SPLITS + SCORING + ("bootstrap",),
        spaces=(SpaceSpec("steering", "steering Δmargin S", main=True, by="layer",
                          rows="task whose direction is added", columns="task evaluated"),
                SpaceSpec("steering_normalized", "normalised steering S̃", by="layer",
                          rows="task whose direction is added", columns="task evaluated"),
                SpaceSpec("steering_random", "random-direction steering Δmargin R", by="layer",
                          rows="task whose random direction is added", columns="task evaluated")),
        runner="taskspace.probes.kinds.steering:run",
        cost="the activations pass, a dev sweep of every layer's diagonal (L·(1+k) scorings of the dev pairs), "
             "then T·(1+k) scorings of all eval pairs at the chosen layer (forward only)",
        options=(CAUSAL_ALPHA, CAUSAL_RANDOM, CAUSAL_RANDOM_KIND, CAUSAL_LAYER, CAUSAL_LAYERS),
        files=(("table", "stats/causal_steering.csv"),), method="add-direction", halves=False,
    ),
    ProbeSpec(
        name="erasure",
        help="Erasure probe: every task's mean-margin change when task a's unit activation difference is "
             "projected out of the residual stream, beside random directions.",
        reads=SPLITS + SCORING + ("bootstrap",),
        spaces=(SpaceSpec("erasure", "erasure Δmargin E", main=True, by="layer", related="lower",
                          rows="task whose direction is erased", columns="task evaluated"),
                SpaceSpec("erasure_random", "random-direction erasure Δmargin", by="layer", related="lower",
                          rows="task whose random direction is erased", columns="task evaluated")),
        runner="taskspace.probes.kinds.steering:run_erasure",
        cost="as steering (forward only)",
        options=(CAUSAL_RANDOM, CAUSAL_RANDOM_KIND, CAUSAL_LAYER, CAUSAL_LAYERS),
        files=(("table", "stats/causal_erasure.csv"),), method="erase-direction", halves=False,
    ),
    ProbeSpec(
        name="steering-estimate",
        help="Steering estimate: the first-order steering effect ∂m_b/∂α at every layer, from one backward pass "
             "per eval sentence (no intervened scoring).",
        reads=SPLITS + SCORING + ("bootstrap",),
        spaces=(SpaceSpec("steering_estimate", "first-order steering estimate Ŝ", main=True, by="layer",
                          rows="task whose direction is added", columns="task evaluated"),
                SpaceSpec("steering_estimate_normalized", "normalised steering estimate", by="layer",
                          rows="task whose direction is added", columns="task evaluated"),
                SpaceSpec("steering_estimate_random", "random-direction steering estimate", by="layer",
                          rows="task whose random direction is added", columns="task evaluated")),
        runner="taskspace.probes.kinds.steering_estimate:run",
        cost="the activations pass, then one forward and backward pass (no parameter gradients) per unique dev "
             "and eval sentence, for all rows and layers at once",
        options=(CAUSAL_RANDOM, CAUSAL_RANDOM_KIND, CAUSAL_LAYER),
        demo="largest",
    ),
    ProbeSpec(
        name="das",
        help="DAS probe: per task, a rank-k residual subspace trained by interchange intervention; the share of every "
             "task's margin it recovers, beside random, mean-difference and full-patch controls.",
        reads=SPLITS + ("prefix", "batch_tokens", "seed", "batch_pairs", "bootstrap"),
        spaces=(SpaceSpec("das", "DAS recovery D (fraction of margin)", main=True,
                          rows="task whose subspace is interchanged", columns="task evaluated"),
                SpaceSpec("das_mean_difference", "mean-difference interchange recovery",
                          rows="task whose direction is interchanged", columns="task evaluated"),
                SpaceSpec("das_random", "random-subspace interchange recovery",
                          rows="random pool (every row the same)", columns="task evaluated")),
        runner="taskspace.probes.kinds.das:run", job="das",
        cost="a subspace training per task and layer swept (rotation_steps forward+backward passes of batch_pairs "
             "pairs; dev scorings under it and the random pool), then 2T + k + 1 forward scorings of every task's "
             "alignable eval pairs at the chosen layer",
        options=DAS_OPTIONS, files=(("table", "stats/das_tasks.csv"),), method="task-subspaces", halves=False,
        demo="largest", demo_options=DAS_DEMO,
    ),
    ProbeSpec(
        name="mdas",
        help="Multi-task DAS probe (RAVEL): one subspace per group, trained to recover its tasks' margins (cause) "
             "and leave other groups' alone (isolate); every task's recovery under its group's subspace.",
        reads=SPLITS + ("prefix", "batch_tokens", "seed", "batch_pairs", "bootstrap"),
        spaces=(SpaceSpec("mdas", "MDAS recovery (group subspace, fraction of margin)", main=True,
                          rows="task whose group's subspace is interchanged", columns="task evaluated"),),
        runner="taskspace.probes.kinds.das:run", job="das",
        cost="as das (its per-task subspaces are the comparison), plus one training per group on cause and isolate "
             "pairs and G·T forward scorings of the alignable eval pairs",
        options=DAS_OPTIONS + (MDAS_WEIGHT,), files=(("table", "stats/mdas_tasks.csv"),), method="group-subspaces",
        halves=False,
        demo="largest", demo_options=DAS_DEMO,
    ),
)
