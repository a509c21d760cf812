"""Settings shared by every probe (DESIGN §2 defaults), recorded in each task space's provenance."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from ..errors import InputError
from ..suites.schema import Suite
from ..suites.splits import SplitSizes, split_halves, split_suite

OBJECTIVES = ("difference", "logistic")
#: settings that change how fast a probe runs, never what it computes: left out of every resume / job key
EXECUTION_SETTINGS = ("workers",)
CONTROLS = ("first", "init")
GRADIENT_MODES = ("exact", "sketch", "auto")
AUTOCASTS = ("none", "bf16")


@dataclass(frozen=True)
class ProbeSettings:
    """Configuration of a probe run (scikit-learn style: everything in the constructor).

    Splits are per task and seeded (:mod:`taskspace.suites.splits`): ``train_pairs`` pairs give the
    gradient differentials and the FTGD training data, ``dev_pairs`` drive early stopping,
    ``eval_pairs`` held-out pairs measure transfer. Masks keep the top ``mask_fraction`` of ``|ḡ_t|``
    unless ``mask_threshold`` (the paper's τ) is given. ``mask_kind="random"`` is the random-mask
    control of the same size. The ``ablation`` probe's masks have their own fraction,
    ``ablation_fraction`` (0.5%: top-5% masks remove too much to be specific; benchmarks/README.md).
    ``workers`` (transfer and baseline only) fine-tunes and evaluates that
    many tasks at once in separate processes; it changes how fast, not what is computed (a task's
    results depend only on its own data and the seed), so it is not part of any resume key.
    """

    tasks: tuple[str, ...] | None = None
    train_pairs: int = 100
    dev_pairs: int = 50
    eval_pairs: int = 100
    mask_fraction: float = 0.05
    mask_threshold: float | None = None
    mask_kind: str = "gradient"          # gradient | random
    # logistic at lr 1e-4, not the paper's difference at 1e-3: measured on gutenberg-gpt2-5m (8 BLiMP
    # paradigms, benchmarks/README.md "Probe validation"), the paper's setting damages the LM by 14–15
    # nats/token (each fine-tuned model is no longer a language model, and no first-order estimate can
    # follow it), while logistic at 1e-4 damages it by 0.08–0.24, keeps the group structure where there
    # is one (within − between 0.59) and lets transfer-estimate rank like measured transfer (ρ 0.87)
    objective: str = "logistic"          # logistic (bounded) | difference (the paper's)
    steps: int = 50
    lr: float = 1e-4
    batch_pairs: int = 16                # training pairs per FTGD / baseline step (seeded shuffle)
    patience: int = 5                    # dev evaluations without improvement before stopping
    eval_every: int = 10                 # steps between dev evaluations
    bootstrap: int = 1000                # resamples for confidence intervals
    reduction: str = "sum"
    prefix: str = "bos"
    batch_tokens: int = 4096
    seed: int = 0
    workers: int = 1                     # transfer / baseline: processes fine-tuning tasks side by side
    gradient_mode: str = field(default="auto", metadata={
        "help": "gradient/overlap probes: exact (one copy of ḡ per task), sketch (k numbers per task), "
                "auto (sketch when exact copies would pass the memory budget)"})
    sketch_dim: int = field(default=32768, metadata={
        "help": "dimensions k of the gradient count sketch (sketch mode); 32768: mean cosine error 0.004, "
                "Spearman 0.995 vs exact on gutenberg-gpt2-5m × 67 BLiMP tasks"})
    ablation_fraction: float = field(default=0.005, metadata={
        "help": "ablation probe: its masks keep the top fraction of |ḡ_t| (0.005: the smallest fraction at which "
                "the diagonal separates from the random-mask control on gutenberg-gpt2-5m and a toy model)"})
    autocast: str = field(default="none", metadata={
        "help": "none | bf16: forward and backward in bfloat16 autocast, ḡ accumulated in float32"})
    halves: bool = field(default=False, metadata={
        "help": "split each task t's train / dev / eval pairs into two disjoint halves, tasks t~1 and t~2 "
                "(alternate pairs of t's seeded order): a 2T × 2T space for split-half reliability, "
                "self-similarity and noise ceilings (taskspace.analysis.reliability)"})

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_fraction <= 1.0:
            raise InputError(f"mask fraction must be in (0, 1], got {self.mask_fraction}", field="mask_fraction")
        if not 0.0 < self.ablation_fraction <= 1.0:
            raise InputError(f"ablation fraction must be in (0, 1], got {self.ablation_fraction}",
                             field="ablation_fraction")
        if self.mask_threshold is not None and self.mask_threshold < 0:
            raise InputError(f"mask threshold must be >= 0, got {self.mask_threshold}", field="mask_threshold")
        if self.objective not in OBJECTIVES:
            raise InputError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}",
                             field="objective")
        if self.mask_kind not in ("gradient", "random"):
            raise InputError(f"unknown mask kind {self.mask_kind!r}; choose gradient or random", field="mask_kind")
        for name in ("train_pairs", "eval_pairs", "steps", "batch_pairs", "patience", "eval_every", "workers"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be >= 1", field=name)
        if self.dev_pairs < 0:
            raise InputError("dev pairs must be >= 0", field="dev_pairs")
        # Everything a probe job would refuse is refused here, so a plan's dry run catches it before a
        # run writes anything. The scoring conventions are imported from where they are defined
        # (scoring imports neither torch nor this module at import time: no cycle).
        import math

        from ..scoring import PREFIXES, REDUCTIONS

        if self.batch_tokens < 1:
            raise InputError("batch tokens must be >= 1", field="batch_tokens")
        if self.bootstrap < 0:
            raise InputError("bootstrap must be >= 0 (0: no confidence intervals)", field="bootstrap")
        if self.seed < 0:
            raise InputError("seed must be >= 0", field="seed")
        if self.reduction not in REDUCTIONS:
            raise InputError(f"unknown reduction {self.reduction!r}; choose one of {', '.join(REDUCTIONS)}",
                             field="reduction")
        if self.prefix not in PREFIXES:
            raise InputError(f"unknown prefix {self.prefix!r}; choose one of {', '.join(PREFIXES)}", field="prefix")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"learning rate must be a finite number > 0, got {self.lr}", field="lr")
        if self.mask_threshold is not None and not math.isfinite(self.mask_threshold):
            raise InputError(f"mask threshold must be finite, got {self.mask_threshold}", field="mask_threshold")
        if self.gradient_mode not in GRADIENT_MODES:
            raise InputError(f"unknown gradient mode {self.gradient_mode!r}; choose one of "
                             f"{', '.join(GRADIENT_MODES)}", field="gradient_mode")
        if self.sketch_dim < 1:
            raise InputError("sketch dim must be >= 1", field="sketch_dim")
        if not isinstance(self.halves, bool):
            raise InputError(f"halves must be true or false, got {self.halves!r}", field="halves")
        if self.halves:
            # every half of a task gets at least one pair of each split it has
            if self.train_pairs < 2 or self.eval_pairs < 2 or self.dev_pairs == 1:
                raise InputError("halves need train pairs >= 2, eval pairs >= 2 and dev pairs 0 or >= 2 "
                                 "(each half gets every other pair)", field="halves")
        if self.autocast not in AUTOCASTS:
            raise InputError(f"unknown autocast {self.autocast!r}; choose one of {', '.join(AUTOCASTS)}",
                             field="autocast")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks) if self.tasks is not None else None
        return d

    def splits(self, suite: Suite) -> dict[str, Suite]:
        """``{"train", "dev", "test"}`` suites over the selected tasks (test = the eval pairs).

        With ``halves`` every task t is replaced by ``t~1`` and ``t~2``, disjoint halves of each of its
        parts (:func:`~taskspace.suites.splits.split_halves`); ``suite`` may also be a suite of halves
        (:func:`~taskspace.suites.splits.halve_suite`), for probes that list their tasks from the suite.
        """
        sizes = SplitSizes(self.train_pairs, self.dev_pairs, self.eval_pairs)
        if self.halves:
            return split_halves(suite, sizes, self.seed, self.tasks)
        sub = suite.select(list(self.tasks) if self.tasks is not None else None)
        return split_suite(sub, sizes, self.seed)


def parse_tasks(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a,b,c"`` → ``("a", "b", "c")``; None stays None (all tasks)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(t.strip() for t in items if t.strip())
    return out or None
