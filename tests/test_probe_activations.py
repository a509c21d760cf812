"""The ``activations`` probe: mean good−bad residual-stream differences against a direct computation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import agreement_suite as make_suite
from conftest import make_tiny_model, make_word_tokenizer
from taskspace.models.loading import LoadedModel
from taskspace.probes import probe, registry
from taskspace.probes.kinds.activations import activation_differences
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace
from taskspace.suites import Pair, Suite

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


def direct(model, tok, pairs, prefix_id):
    """d^ℓ by hand: one sentence at a time, no batching, no padding, no deduplication."""
    def pooled(sentence):
        ids = tok(sentence, add_special_tokens=False)["input_ids"]
        full = ([prefix_id] if prefix_id is not None else []) + ids
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([full]), output_hidden_states=True).hidden_states
        start = 1 if prefix_id is not None else 0
        return torch.stack([h[0, start:].mean(0) for h in hs[1:]])
    return torch.stack([pooled(p.good) - pooled(p.bad) for p in pairs]).mean(0)


@pytest.mark.parametrize("arch,prefix", [("gpt2", "bos"), ("gpt2", "none"), ("gpt_neox", "bos")])
def test_differences_equal_direct_hidden_state_computation(tok, arch, prefix):
    model = make_tiny_model(arch, vocab_size=len(tok), seed=2, dtype=torch.float64)
    suite = make_suite()
    # a tiny token budget: many batches with padding, which must not change anything
    diffs = activation_differences(model, tok, suite, prefix=prefix, batch_tokens=24)
    assert set(diffs) == set(suite.tasks)
    prefix_id = tok.bos_token_id if prefix == "bos" else None
    for t in suite.tasks:
        want = direct(model, tok, suite.pairs_of(t), prefix_id)
        assert diffs[t].shape == (2, 32)
        torch.testing.assert_close(diffs[t], want, rtol=1e-9, atol=1e-11)


def test_identical_pairs_only_give_a_zero_difference(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    suite = Suite([Pair("same", "g", "0", "the cat sleeps .", "the cat sleeps ."),
                   Pair("sv", "g", "1", "the cat sleeps .", "the cat sleep .")], name="s")
    diffs = activation_differences(model, tok, suite)
    assert torch.count_nonzero(diffs["same"]) == 0 and torch.count_nonzero(diffs["sv"]) > 0


def test_runner_spaces_files_and_provenance(tok, tmp_path):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    lm = LoadedModel(model, tok, "tiny-gpt2", "step7", "memory", "cpu", "float32")
    suite = make_suite()
    settings = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=1)
    spec = registry.get("activations")
    assert spec.space("activations").main and spec.space("activations").by == "layer"
    res = probe(lm, suite, spec.name, settings, progress=False)
    assert set(res.spaces) == {"activations", "activations_by_layer/layer0", "activations_by_layer/layer1"}
    # the overall space is the cosine of the concatenated per-layer differences
    train = settings.splits(suite)["train"]
    diffs = activation_differences(model, tok, train)
    flat = np.stack([diffs[t].reshape(-1).numpy() for t in res.spaces["activations"].tasks])
    norms = np.linalg.norm(flat, axis=1)
    np.testing.assert_allclose(res.spaces["activations"].matrix, flat @ flat.T / np.outer(norms, norms),
                               rtol=1e-6, atol=1e-6)
    lay = np.stack([diffs[t][1].numpy() for t in res.spaces["activations"].tasks])
    ln = np.linalg.norm(lay, axis=1)
    np.testing.assert_allclose(res.spaces["activations_by_layer/layer1"].matrix, lay @ lay.T / np.outer(ln, ln),
                               rtol=1e-6, atol=1e-6)
    paths = res.save(tmp_path)
    assert (tmp_path / "spaces" / "activations.csv").exists()
    assert (tmp_path / "spaces" / "activations_by_layer" / "layer0.csv").exists()
    assert (tmp_path / "stats" / "activations.csv") in paths
    sp = TaskSpace.load(tmp_path / "spaces" / "activations.csv")
    np.testing.assert_allclose(sp.matrix, res.spaces["activations"].matrix)
    prov = sp.provenance
    assert prov["probe"] == "activations" and prov["revision"] == "step7" and prov["model"]["model"] == "tiny-gpt2"
    assert prov["settings"]["train_pairs"] == 3 and prov["seed"] == 0
    assert {"convention", "versions", "suite", "pooling"} <= set(prov)
    assert prov["convention"]["prefix_token"] == "<s>"
    layer = TaskSpace.load(tmp_path / "spaces" / "activations_by_layer" / "layer1.csv")
    assert layer.provenance["layer"] == 1
    table = json.loads((tmp_path / "stats" / "activations.json").read_text())
    assert table["provenance"]["probe"] == "activations"
