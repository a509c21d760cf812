"""taskspace: linguistic task spaces of language models (Weber et al., ACL 2024, and beyond).

The one obvious calls — score, probe, compare with theory, plot — all in memory::

    import taskspace
    suite = taskspace.load_suite("../shared/data/blimp")          # or "toy", "blimp", a .jsonl/.csv
    lm = taskspace.load_model("../shared/models/gutenberg-gpt2-5m", revision="step2577")
    res = taskspace.score(lm, suite, limit_per_task=100)          # res.tasks, res.pairs (DataFrames)
    res = taskspace.probe(lm, suite, "gradients", taskspace.ProbeSettings(train_pairs=50))
    summary = taskspace.summarize_space(res.spaces["gradients"])  # within vs between, ρ with theory, ARI
    fig = taskspace.fig_space(res.spaces["gradients"])            # a matplotlib Figure (no pyplot, no backend)
    lm = taskspace.LoadedModel.from_hf(hf_model, hf_tokenizer)     # a model you already loaded
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import InputError, ModelLoadError, TaskspaceError
from .models.loading import LoadedModel, load_model
from .probes.result import ProbeResult
from .probes.run import probe
from .probes.settings import ProbeSettings
from .scoring import Convention, Scorer, ScoreResult, score
from .spaces import TaskSpace
from .suites import Pair, SplitSizes, Suite, load_suite, split_suite

# The analysis and the figures load on first use (PEP 562), so `import taskspace` stays light.
_LAZY = {"summarize_space": "analysis.compare", "fig_space": "report.figures"}

__all__ = [
    "Convention", "InputError", "LoadedModel", "ModelLoadError", "Pair", "ProbeResult", "ProbeSettings", "Scorer",
    "ScoreResult", "SplitSizes", "Suite", "TaskSpace", "TaskspaceError", "fig_space", "load_model", "load_suite",
    "probe", "score", "split_suite", "summarize_space",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from .analysis.compare import summarize_space
    from .report.figures import fig_space
