"""Exact, fast sentence scoring under one documented convention (docs/design.md, "Scoring").

``logp(x) = Σ_t log p(x_t | prefix, x_<t)`` over every token of the sentence as written (no leading
space added), where the prefix is the tokenizer's BOS token, else its EOS token. Options: ``reduction=
"mean"`` (divide by the number of scored tokens) and ``prefix="none"`` (the first token is then not
scored: nothing predicts it). Tokenizers that would add a BOS by themselves are called with
``add_special_tokens=False`` and get exactly one prefix token from us, never two. ``convention=
"lm-eval"`` scores ``" " + sentence`` and counts a tie as correct, as lm-evaluation-harness does for
BLiMP (:mod:`.convention`); :mod:`.lm_eval` writes a scoring in lm-eval's output shapes.

Modules, each importing only those above it:

- :mod:`.convention` — :class:`Convention`, :func:`resolve_prefix`, :func:`encode`;
- :mod:`.batching` — length-sorted batches under a token budget, right padding;
- :mod:`.cache` — transformers' old and new KV-cache API, chosen by feature detection;
- :mod:`.head` — :class:`Head`: the model as backbone + output head, log-probs on scored rows only;
- :mod:`.fused` — :func:`fused_activations`: GPT-2's Python tanh-GELU as torch's fused kernel;
- :mod:`.forward` — :func:`batch_logprobs` and shared-prefix sums on a KV cache;
- :mod:`.scorer` — :class:`Scorer`;
- :mod:`.results` — per-task/group tables, :class:`ScoreResult`, :func:`score`;
- :mod:`.lm_eval` — lm-evaluation-harness's ``results.json`` and ``samples_<task>.jsonl``.

Every shortcut (backbone/head split, prefix sharing) is checked once per model against the plain
forward pass and switched off where it would not be exact.
"""
from __future__ import annotations

from .batching import length_batches, shared_prefix_length
from .convention import CONVENTIONS, PREFIXES, REDUCTIONS, Convention, encode, resolve_prefix
from .forward import batch_logprobs, prefix_sharing_exact
from .fused import fused_activations
from .head import Head, call_start, quiet_transformers
from .results import ScoreResult, score, summarize_groups, summarize_tasks, wilson_interval
from .scorer import Scorer

__all__ = [
    "CONVENTIONS", "Convention", "Head", "PREFIXES", "REDUCTIONS", "ScoreResult", "Scorer", "batch_logprobs",
    "call_start", "encode",
    "fused_activations", "length_batches", "prefix_sharing_exact", "quiet_transformers", "resolve_prefix",
    "score", "shared_prefix_length", "summarize_groups", "summarize_tasks", "wilson_interval",
]
