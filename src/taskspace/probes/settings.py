"""Settings shared by every probe (docs/design.md, "Formulas"), recorded in each task space's provenance."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..errors import InputError
from ..scoring import PREFIXES, REDUCTIONS
from ..scoring.convention import BATCH_TOKENS
from ..suites.schema import Suite
from ..suites.splits import SplitSizes, split_halves, split_suite

OBJECTIVES = ("difference", "logistic")
#: settings that change how fast a probe runs, never what it computes: left out of every resume / job key
EXECUTION_SETTINGS = ("workers",)
CONTROLS = ("first", "init")
GRADIENT_MODES = ("exact", "sketch", "auto")
AUTOCASTS = ("none", "bf16")
#: the settings every probe that scores sentences reads
SCORING_SETTINGS = ("reduction", "prefix", "batch_tokens", "seed")
#: the per-task splits (train / dev / eval sizes all shape every split) and the split-half pass
SPLIT_SETTINGS = ("train_pairs", "dev_pairs", "eval_pairs", "halves", "split_half")
SPLIT_HALF = ("auto", "on", "off")
#: the default mask: the top 5% of |ḡ_t| over all parameters
MASK_FRACTION = 0.05
#: bootstrap resamples behind every interval (probes, compare, report), and the intervals' level
BOOTSTRAP = 1000
LEVEL = 0.95


def _setting(default: Any, help: str) -> Any:
    """A settings field with its help text (the command line's option help, read from the metadata)."""
    return field(default=default, metadata={"help": help})


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
    train_pairs: int = _setting(100, 'Training pairs per task (gradient differentials, FTGD).')
    dev_pairs: int = _setting(50, 'Dev pairs per task (FTGD early stopping).')
    eval_pairs: int = _setting(100, 'Held-out pairs per task (transfer, evaluation).')
    mask_fraction: float = _setting(MASK_FRACTION, 'Mask = top fraction of |ḡ_t| over all parameters.')
    mask_threshold: float | None = _setting(None, "Mask = parameters with |ḡ_t| ≥ τ (the paper's τ = 1e-3), "
                                                  "instead of a fraction.")
    mask_kind: str = _setting("gradient", 'gradient, or random (the random-mask control, same size).')
    # logistic at lr 1e-4, not the paper's difference at 1e-3: measured on gutenberg-gpt2-5m (8 BLiMP
    # paradigms, benchmarks/README.md "Probe validation"), the paper's setting damages the LM by 14–15
    # nats/token (each fine-tuned model is no longer a language model, and no first-order estimate can
    # follow it), while logistic at 1e-4 damages it by 0.08–0.24, keeps the group structure where there
    # is one (within − between 0.59) and lets transfer-estimate rank like measured transfer (ρ 0.87)
    objective: str = _setting("logistic", "FTGD objective: logistic (bounded) or difference (the paper's).")
    steps: int = _setting(50, 'Fine-tuning steps per task (cap).')
    lr: float = _setting(1e-4, 'Adam learning rate.')
    batch_pairs: int = _setting(16, 'Training pairs per fine-tuning step.')
    patience: int = _setting(5, 'Dev evaluations without improvement before stopping.')
    eval_every: int = _setting(10, 'Steps between dev evaluations (early stopping).')
    bootstrap: int = _setting(BOOTSTRAP, f'Bootstrap resamples for the {LEVEL:.0%} CIs (0: none).')
    reduction: str = _setting("sum", 'sum or mean of token log-probs.')
    prefix: str = _setting("bos", 'bos: score given the BOS (else EOS) token; none: no prefix.')
    batch_tokens: int = _setting(BATCH_TOKENS, 'Padded tokens per scoring batch.')
    seed: int = _setting(0, 'Random seed.')
    workers: int = _setting(1, 'Processes that fine-tune and evaluate tasks side by side (CPU: each gets its '
                               'share of the threads); changes speed, never results.')
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
    split_half: str = _setting("auto", "The split-half pass: each probe also runs on two disjoint halves of "
                                       "every task's pairs (spaces/halves/<space>.csv), for reliability and "
                                       "noise ceilings. auto: where the registry marks it cheap (probes of one "
                                       "pass; not those that fine-tune or ablate per task), on, off.")

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
        if self.split_half not in SPLIT_HALF:
            raise InputError(f"unknown split_half {self.split_half!r}; choose one of {', '.join(SPLIT_HALF)}",
                             field="split_half")
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


def with_overrides(settings: ProbeSettings | None, overrides: dict[str, Any], where: str = "") -> ProbeSettings:
    """``settings`` (default ``ProbeSettings()``) with single fields replaced — how lower-level functions
    take their configuration, so every default lives in :class:`ProbeSettings` alone. A field's check
    runs as always; a name that is no field is a TypeError naming ``where``."""
    base = settings if settings is not None else ProbeSettings()
    if not overrides:
        return base
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ProbeSettings)})
    if unknown:
        raise TypeError(f"{where or 'settings'}: unknown setting(s) {', '.join(unknown)}")
    return dataclasses.replace(base, **overrides)


def parse_tasks(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a,b,c"`` → ``("a", "b", "c")``; None stays None (all tasks)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(t.strip() for t in items if t.strip())
    return out or None
