"""taskspace: linguistic task spaces of language models (Weber et al., ACL 2024, and beyond).

The one obvious calls::

    import taskspace
    suite = taskspace.load_suite("../shared/data/blimp")          # or "toy", "blimp", a .jsonl/.csv
    lm = taskspace.load_model("../shared/models/gutenberg-gpt2-5m", revision="step2577")
    res = taskspace.score(lm, suite, limit_per_task=100)          # res.tasks, res.pairs (DataFrames)
    res = taskspace.probe(lm, suite, "gradients", taskspace.ProbeSettings(train_pairs=50))
    lm = taskspace.LoadedModel.from_hf(hf_model, hf_tokenizer)     # a model you already loaded
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import InputError, ModelLoadError, TaskspaceError
from .models.loading import LoadedModel, load_model
from .probes.result import ProbeResult
from .probes.run import probe
from .probes.settings import ProbeSettings
from .scoring import Convention, Scorer, ScoreResult, score
from .spaces import TaskSpace
from .suites import Pair, SplitSizes, Suite, load_suite, split_suite

__all__ = [
    "Convention", "InputError", "LoadedModel", "ModelLoadError", "Pair", "ProbeResult", "ProbeSettings", "Scorer",
    "ScoreResult", "SplitSizes", "Suite", "TaskSpace", "TaskspaceError", "load_model", "load_suite", "probe",
    "score", "split_suite",
]
