"""Interventions under prefix sharing: a sentence scored as a prefix call plus a continuation on the prefix's
KV cache is changed at the same positions as one call over the whole sentence (the hook reads where each
call starts), so steering and erasure share prefixes as plain scoring does."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer, mini_suite
from taskspace.models.loading import LoadedModel
from taskspace.probes import probe
from taskspace.probes.causal import intervene
from taskspace.probes.settings import ProbeSettings
from taskspace.scoring import Scorer, call_start

pytestmark = pytest.mark.usefixtures("one_thread")

#: pairs whose sentences share 2–3 tokens after the prefix token, and one that differs at its first word
PAIRS = [("the cat sleeps .", "the cat sleep ."), ("the dogs never ran .", "the dogs ever ran ."),
         ("these boys saw themselves .", "these boys saw itself ."), ("this girl ran .", "these girl ran .")]


def _pairs():
    from taskspace.suites.schema import Pair

    return [Pair(good=g, bad=b, task="t", group="g", pair_id=str(i)) for i, (g, b) in enumerate(PAIRS)]


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
@pytest.mark.parametrize("how", ["add", "erase"])
@pytest.mark.parametrize("prefix,skip", [("bos", 1), ("none", 0)])
def test_intervened_scores_are_the_same_with_and_without_prefix_sharing(arch, how, prefix, skip):
    tok = make_word_tokenizer()
    model = make_tiny_model(arch, vocab_size=len(tok), seed=4, dtype=torch.float64)
    shared = Scorer(model, tok, prefix=prefix, share_prefix=True)
    whole = Scorer(model, tok, prefix=prefix, share_prefix=False)
    assert shared.shares_prefix and not whole.shares_prefix
    rng = np.random.default_rng(1)
    v = rng.standard_normal(32)
    kw = {"add": 3.0 * v} if how == "add" else {"erase": v / np.linalg.norm(v)}
    base = whole.score_pairs(_pairs())
    for layer in (0, 1):
        with intervene(model, layer, skip=skip, **kw):
            a = shared.score_pairs(_pairs())
            b = whole.score_pairs(_pairs())
        for col in ("logp_good", "logp_bad", "margin"):
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-10, atol=1e-10)
        assert np.abs(a["margin"].to_numpy() - base["margin"].to_numpy()).max() > 1e-3   # it did change them


def test_call_start_is_the_cached_prefix_length_during_a_continuation():
    tok = make_word_tokenizer()
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=4, dtype=torch.float64)
    scorer = Scorer(model, tok, share_prefix=True)
    assert scorer.shares_prefix
    seen: list[tuple[int, int]] = []
    site = model.transformer.h[0]
    def record(module, args, out):
        states = out if isinstance(out, torch.Tensor) else out[0]
        seen.append((call_start(), states.shape[1]))

    handle = site.register_forward_hook(record)
    try:
        scorer.score_pairs(_pairs()[:1])          # BOS the cat | sleeps . / sleep .
    finally:
        handle.remove()
    assert call_start() == 0
    # the prefix call (BOS the cat: 3 positions from 0), then the continuations from position 3
    assert seen[0] == (0, 3) and all(start == 3 for start, _ in seen[1:]) and len(seen) > 1


def test_steering_runs_with_prefix_sharing_and_says_so():
    tok = make_word_tokenizer()
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=4, dtype=torch.float64)
    lm = LoadedModel(model, tok, "tiny", "step1", "memory", "cpu", "float64")
    settings = ProbeSettings(train_pairs=2, dev_pairs=1, eval_pairs=2, bootstrap=0)
    res = probe(lm, mini_suite(), "steering", settings, progress=False, layer=1, random_directions=1)
    assert res.provenance["scorer"]["share_prefix"] is True
