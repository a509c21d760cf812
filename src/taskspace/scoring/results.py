"""Per-pair scores into per-task and per-group tables, and :func:`score`, the one obvious call."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..io import atomic_path, write_json
from ..models.loading import as_loaded, load_model, set_threads
from ..provenance import timestamp, torch_threads, versions
from ..suites import load_suite
from .convention import BATCH_TOKENS, convention_rules
from .lm_eval import write_lm_eval
from .scorer import Scorer

# torch, pandas, the context check and the progress bar are imported inside score(): `import taskspace` and
# the command line start without them

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..models.loading import LoadedModel
    from ..suites.schema import Suite


def wilson_interval(k: np.ndarray, n: np.ndarray, z: float = 1.959963984540054) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (95% by default); sensible at 0% and 100%."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return centre - half, centre + half


def summarize_tasks(pairs_df: "pd.DataFrame") -> "pd.DataFrame":
    """Per-task table: task, group, n_pairs, accuracy, accuracy_ci_low/high (Wilson 95%),
    mean_margin, n_ties. Task order is first appearance in ``pairs_df``."""
    import pandas as pd

    g = pairs_df.groupby("task", sort=False)
    out = pd.DataFrame({
        "group": g["group"].first(),
        "n_pairs": g.size(),
        "n_correct": g["correct"].sum(),
        "mean_margin": g["margin"].mean(),
        "n_ties": g["tie"].sum(),
    })
    out["accuracy"] = out["n_correct"] / out["n_pairs"]
    lo, hi = wilson_interval(out["n_correct"].to_numpy(), out["n_pairs"].to_numpy())
    out["accuracy_ci_low"], out["accuracy_ci_high"] = lo, hi
    out = out.reset_index()
    return out[["task", "group", "n_pairs", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                "mean_margin", "n_ties"]]


def summarize_groups(pairs_df: "pd.DataFrame") -> "pd.DataFrame":
    """Per-group table: group, n_tasks, n_pairs, accuracy (pooled over pairs), mean_margin, n_ties."""
    g = pairs_df.groupby("group", sort=False)
    out = g.agg(n_tasks=("task", "nunique"), n_pairs=("task", "size"), accuracy=("correct", "mean"),
                mean_margin=("margin", "mean"), n_ties=("tie", "sum")).reset_index()
    return out


@dataclass
class ScoreResult:
    """What :func:`score` returns: per-task and per-pair tables plus provenance."""

    tasks: "pd.DataFrame"
    pairs: "pd.DataFrame"
    provenance: dict

    @property
    def groups(self) -> "pd.DataFrame":
        return summarize_groups(self.pairs)

    @property
    def accuracy(self) -> float:
        """Mean of per-task accuracies (BLiMP's headline number)."""
        return float(self.tasks["accuracy"].mean())

    def save(self, out_dir: Any) -> None:
        """Write ``tasks.csv``, ``pairs.parquet`` and ``run.json`` into ``out_dir`` (atomically)."""
        out = Path(out_dir)
        with atomic_path(out / "pairs.parquet") as tmp:
            self.pairs.to_parquet(tmp, index=False)
        with atomic_path(out / "tasks.csv") as tmp:
            self.tasks.to_csv(tmp, index=False, float_format="%.6g")
        write_json(out / "run.json", self.provenance)

    def save_lm_eval(self, out_dir: Any) -> list:
        """Write lm-evaluation-harness's output shapes into ``out_dir``: ``results.json`` (per task
        ``acc,none``, ``acc_stderr,none``, ``alias``; ``config``, ``versions``) and one
        ``samples_<task>.jsonl`` per task (:mod:`.lm_eval`). Returns the paths written."""
        return write_lm_eval(self.pairs, self.provenance, out_dir)


#: the settings that change a score (``ProbeSettings`` carries them too: one object for score and probe)
SCORE_SETTINGS = {"reduction": "sum", "prefix": "bos", "batch_tokens": BATCH_TOKENS, "seed": 0}


def score(
    model: "str | LoadedModel | tuple[Any, Any]",
    suite: "str | Suite",
    settings: Any = None,
    *,
    revision: str | None = None,
    reduction: str | None = None,
    prefix: str | None = None,
    batch_tokens: int | None = None,
    limit_per_task: int | None = None,
    tasks: Sequence[str] | None = None,
    device: str | None = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    progress: bool = False,
    seed: int | None = None,
    share_prefix: bool | None = None,
    convention: str = "taskspace",
    attn_implementation: str | None = None,
    threads: int | None = None,
) -> ScoreResult:
    """Score every pair of a suite with a model; the one obvious call.

    ``model``: a hub name or local folder (loaded with ``revision``, ``device``, ``dtype``,
    ``attn_implementation``: :func:`~taskspace.models.loading.load_model`), a
    :class:`~taskspace.models.loading.LoadedModel`, or a ``(model, tokenizer)`` pair you already have
    (:meth:`LoadedModel.from_hf <taskspace.models.loading.LoadedModel.from_hf>`). ``threads``:
    ``torch.set_num_threads`` (process-wide) before scoring.

    ``settings``: the scoring settings as one object, like :func:`~taskspace.probes.run.probe` takes
    them — any object with ``reduction``, ``prefix``, ``batch_tokens`` and ``seed`` attributes, such as a
    :class:`~taskspace.probes.settings.ProbeSettings` (so a notebook scores and probes with the same
    settings); or give them as keywords (defaults: :data:`SCORE_SETTINGS`), not both.

    ``convention``: ``"taskspace"`` (default: each sentence as written; a tie is not correct) or
    ``"lm-eval"`` (``" " + sentence``; a tie is correct: lm-evaluation-harness's BLiMP accuracy,
    :mod:`taskspace.scoring.convention`). ``res.pairs`` holds each pair's sentences (``good``, ``bad``).

    >>> res = taskspace.score("../shared/models/gutenberg-gpt2-5m", "../shared/data/blimp",
    ...                       revision="step2577", limit_per_task=100)
    >>> res.tasks.head()
    """
    import torch

    from ..models.context import check_fits

    reduction, prefix, batch_tokens, seed = _score_settings(settings, reduction=reduction, prefix=prefix,
                                                            batch_tokens=batch_tokens, seed=seed)
    convention_rules(convention, reduction, prefix)           # a bad choice fails before any loading
    torch.manual_seed(seed)
    set_threads(threads)
    loaded = as_loaded(model) if not isinstance(model, (str, os.PathLike)) else load_model(
        str(model), revision, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation)
    suite_obj = suite if not isinstance(suite, str) else load_suite(suite)
    if tasks is not None or limit_per_task is not None:
        suite_obj = suite_obj.select(tasks, limit_per_task)
    leading_space = convention_rules(convention)[0]
    # a pair longer than the context: one line
    check_fits(loaded, suite_obj.pairs, prefix=prefix, leading_space=leading_space)
    scorer = Scorer.from_loaded(loaded, reduction=reduction, prefix=prefix, batch_tokens=batch_tokens,
                                share_prefix=share_prefix, convention=convention)
    pairs_df = _score_pairs(scorer, suite_obj, progress)
    tasks_df = summarize_tasks(pairs_df)
    prov = {
        "kind": "scores",
        "created": timestamp(),
        "model": loaded.describe(),
        "convention": scorer.convention.to_dict(),
        "suite": suite_obj.describe(),
        "data_hash": suite_obj.data_hash,
        "scorer": scorer.describe(),
        "limit_per_task": limit_per_task,
        "batch_tokens": batch_tokens,
        "seed": seed,
        "versions": versions(),
        "torch_threads": torch_threads(),
    }
    return ScoreResult(tasks=tasks_df, pairs=pairs_df, provenance=prov)


def _score_settings(settings: Any, **given: Any) -> tuple[Any, ...]:
    """``reduction, prefix, batch_tokens, seed`` from ``settings`` or the keywords (defaults where neither
    says); a keyword beside a settings object is a mistake, not an override."""
    both = [k for k, v in given.items() if v is not None] if settings is not None else []
    if both:
        raise TypeError(f"score(): give {', '.join(both)} in `settings` or as keywords, not both")
    out = []
    for name, default in SCORE_SETTINGS.items():
        v = getattr(settings, name) if settings is not None else given[name]
        out.append(default if v is None else v)
    return tuple(out)


def _score_pairs(scorer: Scorer, suite: "Suite", progress: bool) -> "pd.DataFrame":
    """Every pair of ``suite`` scored, with its sentences (``good``, ``bad``) beside the scores."""
    if progress:
        from ..progress import progress_bar

        n_sent = len({s for p in suite.pairs for s in (p.good, p.bad)})
        with progress_bar("scoring", total=n_sent) as advance:
            pairs_df = scorer.score_pairs(suite.pairs, progress=advance)
    else:
        pairs_df = scorer.score_pairs(suite.pairs)
    pairs_df.insert(3, "good", [p.good for p in suite.pairs])
    pairs_df.insert(4, "bad", [p.bad for p in suite.pairs])
    return pairs_df
