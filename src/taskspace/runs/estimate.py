"""What a plan's jobs will cost: a documented model of seconds and peak memory per job, for dry runs.

**The model.** One *unit* is one minimal pair (two sentences of BLiMP length, ~8 tokens each) through
the forward pass of a model of ``n_params`` parameters; a forward + backward pass counts 3 units (the
backward costs about twice the forward). A job's seconds are ``C_FORWARD × n_params × units``, and its
units follow from what the job does, read from the probe's registry entry, never from its name:

- ``score``: every pair of the suite once (1 unit a pair);
- a probe that reads mask settings takes a gradient pass: 3 units per training pair per task; one that
  does not, a forward pass: 1 unit per training pair per task;
- a probe that reads fine-tuning ``steps`` fine-tunes once per source task: 3 × steps × batch_pairs
  units, plus its dev evaluations (steps / eval_every × dev pairs);
- a probe that computes per source task (``per_task``) scores every task's eval pairs once per source
  task (T × eval pairs units per row); its ``base`` stage scores them once; its assembly is ~free;
- a probe that trains subspaces (an option ``rotation_steps``: das, mdas) trains one per task and layer
  swept: 3 × rotation_steps × batch_pairs units each (a sweep of every layer counted as 4 layers, the
  toy and gutenberg models' depth), then scores every task's eval pairs 2T + 2 times;
- ``pretrain``: steps × batch_size sequences, forward + backward + AdamW (3 units each);
- ``compare`` and ``report``: fixed guesses (5 s and 30 s: the quick demo's jobs, benchmarks/README "Demo").

``C_FORWARD = 4.35e-10`` s per parameter per pair comes from ``benchmarks/README.md``, "Probes" (an idle
machine): gutenberg-gpt2-5m (5,289,472 parameters) scored 6,700 BLiMP pairs in 15.4 s
on 2 CPU threads. Checked against two other figures there: the `small` preset's pretraining
(51 CPU ms a step measured; the model gives 53 ms) and the 67 × 67 BLiMP transfer space at the
defaults (25.9 min measured, "The 67 × 67 BLiMP transfer space"; the model gives 25 min). It assumes
2 CPU cores, float32, that sentences are BLiMP-short, and it leaves out what a probe does beyond these
passes (a lookahead's eval backward, an ablation's second scoring, model loading): expect it within
about 2× on 2 CPU cores for jobs of more than a few seconds; below that, the fixed costs it leaves out
(imports, loading) dominate (the quick demo's ablation: < 1 s estimated, 1.7 s measured). **On a GPU
it is an upper bound** (often by 10× or more); more cores shorten it.

Peak memory: a process with torch, transformers and a suite loaded (``BASE_BYTES``, 0.45 GB: "after
loading RSS 423 MiB" in "Probes") plus multiples of the model's bytes (``n_params × dtype bytes``):
forward-only jobs 1.5× (weights + activations); gradient passes 2.5× plus one float32 copy of every
parameter per task while ``tasks × parameters × 4 bytes`` fits 4 GiB (the exact mode of
``gradient_mode = "auto"``), else 2 bytes a parameter of hash codes and 4.7 MB a task of sketches
(benchmarks/README "Scale" (a): 3.45 GB at 210M × 67 tasks; the model gives 3.3); masked fine-tuning
2.5× (2.59 GB measured for a 210M transfer row, "Scale" (d)); fine-tuning every parameter 7× (weights,
gradient, two Adam moments, the saved θ₀: 6.16 GB measured for the 210M baseline row); pretraining 6×.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..probes.registry import SCORE

#: seconds per parameter per minimal pair through the forward pass, 2 CPU threads (see the module doc)
C_FORWARD = 4.35e-10
#: a forward + backward pass, in forward units
BACKWARD = 3.0
#: a process with torch, transformers and a suite loaded
BASE_BYTES = 0.45e9
#: the exact-gradient budget of gradient_mode "auto" (tasks × parameters × 4 bytes)
EXACT_BUDGET = 4 * 2**30
#: what a task keeps in sketch mode (k = 32,768 sketches of the whole model and its modules)
SKETCH_TASK_BYTES = 4.7e6
#: fixed guesses for the closing jobs (seconds)
FIXED_SECONDS = {"compare": 5.0, "report": 30.0}
DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
#: mask settings: a probe that reads one takes gradients; fine-tuning settings: it fine-tunes
_GRADIENT_READS = ("mask_threshold", "mask_fraction")
_FINETUNE_READS = ("steps",)


@dataclass(frozen=True)
class Cost:
    """The estimate of one job: seconds and peak bytes (None when the model's size is unknown)."""

    seconds: float | None
    peak_bytes: float | None


@dataclass(frozen=True)
class Workload:
    """What the cost of a probe job depends on: tasks, pairs per task after the plan's limits, settings."""

    n_tasks: int
    pairs_per_task: float          # mean pairs per task after limit_per_task
    settings: Mapping[str, Any]

    def split(self) -> tuple[float, float, float]:
        """Mean (train, dev, eval) pairs per task, as the seeded splits take them (train first)."""
        n = self.pairs_per_task
        tr = min(self.settings["train_pairs"], n)
        dv = min(self.settings["dev_pairs"], n - tr)
        ev = min(self.settings["eval_pairs"], n - tr - dv)
        return tr, dv, ev


#: layers a subspace probe's dev sweep is counted as when no layer is given (see the module doc)
SWEPT_LAYERS = 4


def job_cost(kind: str, n_params: int | None, dtype: str, work: Workload | None, *, reads: tuple[str, ...] = (),
             per_task: bool = False, staged: bool = False, pretrain: Mapping[str, Any] | None = None,
             subspace_steps: float = 0.0) -> Cost:
    """The estimated :class:`Cost` of one job of ``kind`` (``score``, ``P``, ``P:base``, ``P:row``,
    ``pretrain``, ``compare``, ``report``). ``reads`` / ``per_task`` come from the probe's registry
    entry; ``staged``: the probe splits into base / row / assembly jobs (``P`` is then the assembly).
    ``subspace_steps``: training steps of one task's subspaces (rotation_steps × layers swept, summed over
    the job's subspace probes; 0 for the other probes)."""
    if kind in FIXED_SECONDS:
        return Cost(FIXED_SECONDS[kind], BASE_BYTES)
    if n_params is None:
        return Cost(None, None)
    model_bytes = n_params * DTYPE_BYTES.get(dtype, 4)
    if kind == "pretrain":
        p = pretrain or {}
        units = BACKWARD * p.get("steps", 0) * p.get("batch_size", 64)
        return Cost(C_FORWARD * n_params * units, BASE_BYTES + 6 * n_params * 4)
    if work is None:
        return Cost(None, None)
    T = work.n_tasks
    train, dev, ev = work.split()
    s = work.settings
    stage = kind.partition(":")[2]
    gradient = any(r in reads for r in _GRADIENT_READS)
    finetunes = any(r in reads for r in _FINETUNE_READS)
    if kind == SCORE:
        return Cost(C_FORWARD * n_params * T * work.pairs_per_task, BASE_BYTES + 1.5 * model_bytes)
    if stage == "base":
        return Cost(C_FORWARD * n_params * T * ev, BASE_BYTES + 1.5 * model_bytes)
    if stage == "" and staged:
        return Cost(1.0, BASE_BYTES)
    rows = 1 if stage == "row" else (T if per_task else 0)
    units = 0.0
    if stage != "row":
        units += (BACKWARD if gradient else 1.0) * T * train
    else:
        units += BACKWARD * train if gradient else 0.0          # the source task's own gradient and mask
    if finetunes:
        ft_steps = s["steps"]
        units += rows * (BACKWARD * ft_steps * s["batch_pairs"] + ft_steps / max(1, s["eval_every"]) * dev)
    if per_task:
        units += rows * T * ev
    if subspace_steps:
        units += T * BACKWARD * subspace_steps * s["batch_pairs"] + (2 * T + 2) * T * ev
    peak = BASE_BYTES + 1.5 * model_bytes
    if finetunes:
        peak = BASE_BYTES + (2.5 if gradient else 7.0) * model_bytes
    elif gradient:
        peak = BASE_BYTES + 2.5 * model_bytes
        if stage != "row":
            exact = T * n_params * 4
            peak += exact if exact <= EXACT_BUDGET else 2 * n_params + T * SKETCH_TASK_BYTES
    return Cost(C_FORWARD * n_params * units, peak)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 90:
        return f"{s:.0f} s" if s >= 1 else "<1 s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "unknown"
    return f"{b / 1e9:.2f} GB" if b >= 1e8 else f"{b / 1e6:.0f} MB"
