"""Scoring is exact (equal to a direct one-sentence computation), independent of batching, and follows
the documented BOS convention; its outputs carry their provenance. Real tiny GPT-2 and GPT-NeoX models.
"""
from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import BLIMP, GUTENBERG_MODEL, make_tiny_model, make_word_tokenizer, shared_or_skip
from taskspace.errors import TaskspaceError
from taskspace.scoring import (
    Head,
    Scorer,
    batch_logprobs,
    encode,
    fused_activations,
    length_batches,
    prefix_sharing_exact,
    score,
    shared_prefix_length,
    summarize_tasks,
    wilson_interval,
)
from taskspace.suites.schema import Pair, Suite

ARCHS = ("gpt2", "gpt_neox")

SENTENCES = [
    "the cat sleeps .", "the cat sleep .",                      # share 2 words, same length
    "these dogs see themselves .", "these dogs see itself .",
    "the girl who saw the boys ran .", "the girl who saw the boys run .",  # long shared prefix
    "a teacher never went .", "a teacher ever went .",
    "dogs", "cats",                                             # one word: nothing shared but the prefix
    "the boy saw", "the boy saw herself .",                     # one is the other's prefix
    "every girl sees some cats ?", "all girls see any cat !",
    "the cat sleeps .",                                         # a duplicate
]


def direct_logprob(model, ids: list[int]) -> float:
    """Σ_t log p(ids[t] | ids[:t]) for t ≥ 1: one sentence, full forward, float64 log-softmax."""
    if len(ids) < 2:
        return 0.0
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)[:-1]
    return float(lp.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).sum())


def assert_close(got, want, dtype=torch.float32) -> None:
    """float32: within 1e-4 absolute or 1e-6 relative, whichever is looser; float64: within 1e-9."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if dtype == torch.float64:
        tol = np.full(want.shape, 1e-9)
    else:
        tol = np.maximum(1e-4, 1e-6 * np.abs(want))
    bad = np.abs(got - want) > tol
    assert not bad.any(), f"max diff {np.max(np.abs(got - want)):.3g} at {np.flatnonzero(bad)[:5]}"


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


@pytest.fixture(scope="module", params=ARCHS)
def model32(request, tok):
    return make_tiny_model(request.param, vocab_size=len(tok), seed=1)


@pytest.fixture(scope="module", params=ARCHS)
def model64(request, tok):
    return make_tiny_model(request.param, vocab_size=len(tok), seed=2, dtype=torch.float64)


def pairs_of(sentences: list[str], task: str = "t1", group: str = "g1") -> list[Pair]:
    return [Pair(task, group, str(i), sentences[2 * i], sentences[2 * i + 1])
            for i in range(len(sentences) // 2)]


# -- exactness -----------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [False, True])
def test_logprobs_equal_direct_float32(model32, tok, share):
    scorer = Scorer(model32, tok, share_prefix=share)
    assert scorer.shares_prefix is share
    ids = encode(tok, SENTENCES, tok.bos_token_id)
    want = [direct_logprob(model32, x) for x in ids]
    df = scorer.score_pairs(pairs_of(SENTENCES))
    got = np.stack([df["logp_good"], df["logp_bad"]], 1).ravel()
    assert_close(got, want[: len(got)])
    assert_close(scorer.sentence_logprobs(SENTENCES), want)


@pytest.mark.parametrize("share", [False, True])
def test_logprobs_equal_direct_float64(model64, tok, share):
    scorer = Scorer(model64, tok, share_prefix=share)
    assert scorer.convention.dtype == "float64"
    ids = encode(tok, SENTENCES, tok.bos_token_id)
    want = [direct_logprob(model64, x) for x in ids]
    df = scorer.score_pairs(pairs_of(SENTENCES))
    got = np.stack([df["logp_good"], df["logp_bad"]], 1).ravel()
    assert_close(got, want[: len(got)], torch.float64)


def test_split_head_and_prefix_sharing_are_used_on_both_archs(model32):
    head = Head(model32)
    assert head.split, "backbone/head split should be exact for GPT-2 and GPT-NeoX"
    assert prefix_sharing_exact(head)
    assert Scorer(model32, make_word_tokenizer()).shares_prefix  # on by default where exact


def test_post_processed_logits_fall_back_to_the_full_forward(tok):
    """A model whose forward changes the head's logits (like soft-capping) must not be split."""
    from transformers import GPT2LMHeadModel

    class Capped(GPT2LMHeadModel):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = 3.0 * torch.tanh(out.logits / 3.0)
            return out

    base = make_tiny_model("gpt2", vocab_size=len(tok), seed=3)
    model = Capped(base.config).eval()
    model.load_state_dict(base.state_dict())
    scorer = Scorer(model, tok)
    assert not scorer.head.split
    want = [direct_logprob(model, x) for x in encode(tok, SENTENCES, tok.bos_token_id)]
    assert_close(scorer.sentence_logprobs(SENTENCES), want)
    df = scorer.score_pairs(pairs_of(SENTENCES))
    assert_close(df["logp_good"], want[0:14:2])


def test_the_checks_run_once_per_model_and_again_when_its_state_changes(tok, monkeypatch):
    """Every probe builds its own Head on the one loaded model: the split and prefix-cache checks run once
    for it, and again for a hook on the model (one that caps its logits must turn the split off), for train
    mode and for another dtype."""
    from taskspace.scoring import forward
    from taskspace.scoring import head as head_module

    calls = {"split": 0, "cache": 0}
    split_check, cache_check = Head._check, forward._check_cache

    def counted_split(self):
        calls["split"] += 1
        return split_check(self)

    def counted_cache(h):
        calls["cache"] += 1
        return cache_check(h)

    monkeypatch.setattr(Head, "_check", counted_split)
    monkeypatch.setattr(forward, "_check_cache", counted_cache)
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=4).eval()
    for _ in range(3):
        h = Head(model)
        assert h.split and prefix_sharing_exact(h)
    assert calls == {"split": 1, "cache": 1}
    def capped(module, args, out):
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out

    cap = model.register_forward_hook(capped)          # the model's logits are no longer the head's
    try:
        assert not Head(model).split                    # checked again, and not split
        assert calls["split"] == 2
    finally:
        cap.remove()
    assert Head(model).split and calls["split"] == 3    # the hook gone: a new state, checked again
    model.train()
    Head(model)
    model.eval()
    model.double()
    assert Head(model).split and calls["split"] == 5    # train mode and float64: each its own check
    assert set(head_module._VERDICTS[model]) == {"split", "prefix cache"}


def test_batch_logprobs_is_differentiable_and_exact(model32, tok):
    ids = encode(tok, SENTENCES[:6], tok.bos_token_id)
    lp = batch_logprobs(model32, ids, reduction="sum", pad_id=tok.pad_token_id)
    assert_close(lp.detach().numpy(), [direct_logprob(model32, x) for x in ids])
    lp.sum().backward()
    grads = [p.grad for p in model32.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    model32.zero_grad(set_to_none=True)


def test_no_work_on_positions_that_are_not_scored(model32, tok):
    """The last token of a sentence is never fed in; the head sees scored positions only."""
    ids = encode(tok, SENTENCES, tok.bos_token_id)
    uniq = {tuple(x) for x in ids}
    fed, head_rows = [], []
    scorer = Scorer(model32, tok, share_prefix=False)
    assert scorer.head.split  # the one-off check runs before we count
    emb = model32.get_input_embeddings()
    h1 = emb.register_forward_hook(lambda m, a, o: fed.append(a[0].shape[1]))
    h2 = model32.get_output_embeddings().register_forward_hook(lambda m, a, o: head_rows.append(a[0].shape[0]))
    try:
        scorer.sentence_logprobs(SENTENCES)
    finally:
        h1.remove(), h2.remove()
    assert max(fed) == max(len(x) for x in uniq) - 1
    assert sum(head_rows) == sum(len(x) - 1 for x in uniq)


def test_prefix_sharing_feeds_fewer_tokens(model32, tok):
    fed = []
    plain_scorer, shared_scorer = Scorer(model32, tok, share_prefix=False), Scorer(model32, tok)
    assert shared_scorer.shares_prefix and plain_scorer.head.split
    h = model32.get_input_embeddings().register_forward_hook(lambda m, a, o: fed.append(a[0].numel()))
    try:
        pairs = pairs_of(SENTENCES[:8])
        plain_scorer.score_pairs(pairs)
        plain, fed[:] = sum(fed), []
        shared_scorer.score_pairs(pairs)
        shared = sum(fed)
    finally:
        h.remove()
    assert shared < plain


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_prefix_length([[5, 1], [1]]) == 0
    assert shared_prefix_length([[1, 2], [1, 2]]) == 2
    assert shared_prefix_length([]) == 0


# -- batching does not change a score -------------------------------------------------------------
@pytest.mark.parametrize("share", [False, True])
def test_batching_padding_side_and_order_do_not_change_scores(model64, share):
    tok = make_word_tokenizer()
    ref = Scorer(model64, tok, batch_tokens=1, share_prefix=share).score_pairs(pairs_of(SENTENCES))
    rng = random.Random(0)
    for batch_tokens, max_batch, side in ((8, 512, "right"), (40, 3, "left"), (100_000, 512, "left")):
        tok.padding_side = side
        pairs = pairs_of(SENTENCES)
        rng.shuffle(pairs)
        df = Scorer(model64, tok, batch_tokens=batch_tokens, max_batch=max_batch,
                    share_prefix=share).score_pairs(pairs)
        df = df.set_index("pair_id").loc[ref["pair_id"]]
        assert_close(df["logp_good"], ref["logp_good"], torch.float64)
        assert_close(df["logp_bad"], ref["logp_bad"], torch.float64)


def test_batching_float32_agrees_with_one_at_a_time(model32, tok):
    single = Scorer(model32, tok)
    one = np.array([single.sentence_logprobs([s])[0] for s in SENTENCES])
    assert_close(Scorer(model32, tok, batch_tokens=10_000).sentence_logprobs(SENTENCES), one)
    assert_close(Scorer(model32, tok, batch_tokens=12).sentence_logprobs(SENTENCES[::-1]), one[::-1])


def test_length_batches_respect_the_budget():
    lengths = [5, 1, 9, 3, 3, 7, 2, 20]
    batches = length_batches(lengths, batch_tokens=12)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 12


def test_progress_counts_every_unique_sentence(model32, tok):
    for share in (False, True):
        seen = []
        Scorer(model32, tok, share_prefix=share, batch_tokens=16).score_pairs(
            pairs_of(SENTENCES), progress=seen.append)
        assert sum(seen) == len(set(SENTENCES[:14]))


# -- the BOS convention -----------------------------------------------------------------------------
def test_bos_tokenizer_uses_bos_as_prefix():
    tok = make_word_tokenizer(bos=True, eos=True)
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=4)
    scorer = Scorer(model, tok)
    bos = tok.convert_tokens_to_ids("<s>")
    assert scorer.convention.prefix_token == "<s>" and scorer.convention.prefix_token_id == bos
    words = tok("the cat sleeps .", add_special_tokens=False)["input_ids"]
    assert scorer.encode(["the cat sleeps ."]) == [[bos, *words]]
    assert_close(scorer.sentence_logprobs(["the cat sleeps ."]), [direct_logprob(model, [bos, *words])])


def test_eos_only_tokenizer_uses_eos_as_prefix():
    tok = make_word_tokenizer(bos=False, eos=True)
    model = make_tiny_model("gpt_neox", vocab_size=len(tok), seed=5)
    scorer = Scorer(model, tok)
    eos = tok.convert_tokens_to_ids("</s>")
    assert scorer.convention.prefix_token == "</s>" and scorer.convention.prefix_token_id == eos
    words = tok("these dogs sleep .", add_special_tokens=False)["input_ids"]
    assert scorer.encode(["these dogs sleep ."]) == [[eos, *words]]
    assert_close(scorer.sentence_logprobs(["these dogs sleep ."]), [direct_logprob(model, [eos, *words])])


def test_llama_style_tokenizer_gets_exactly_one_bos():
    tok = make_word_tokenizer(bos=True, eos=True, adds_bos=True)
    bos = tok.convert_tokens_to_ids("<s>")
    assert tok("the cat")["input_ids"][0] == bos  # it really adds a BOS by itself
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=6)
    scorer = Scorer(model, tok)
    ids = scorer.encode(["the cat sleeps .", "a dog"])
    assert [x.count(bos) for x in ids] == [1, 1]
    assert ids[0] == [bos] + [tok.convert_tokens_to_ids(w) for w in "the cat sleeps .".split()]
    assert_close(scorer.sentence_logprobs(["the cat sleeps ."]), [direct_logprob(model, ids[0])])
    df = scorer.score_pairs([Pair("t", "g", "0", "the cat sleeps .", "the cat sleep .")])
    assert df["n_tokens_good"].tolist() == [4]


def test_no_prefix_option_does_not_score_the_first_token(model32, tok):
    scorer = Scorer(model32, tok, prefix="none")
    assert scorer.convention.prefix == "none" and scorer.convention.prefix_token_id is None
    words = tok("the cat sleeps .", add_special_tokens=False)["input_ids"]
    assert scorer.encode(["the cat sleeps ."]) == [words]
    lp, n = scorer.sentence_logprobs(["the cat sleeps .", "dogs"], return_counts=True)
    assert n.tolist() == [3, 0]
    assert_close(lp, [direct_logprob(model32, words), 0.0])
    with_bos = Scorer(model32, tok).sentence_logprobs(["the cat sleeps ."])
    assert abs(with_bos[0] - lp[0]) > 1e-3  # the first token's log-prob is really left out
    df = scorer.score_pairs(pairs_of(SENTENCES))
    assert_close(df["logp_good"], [direct_logprob(model32, tok(s, add_special_tokens=False)["input_ids"])
                                    for s in SENTENCES[0:14:2]])


def test_tokenizer_without_bos_or_eos_needs_prefix_none():
    tok = make_word_tokenizer(bos=False, eos=False)
    model = make_tiny_model("gpt2", vocab_size=len(tok))
    with pytest.raises(TaskspaceError, match="prefix 'none'"):
        Scorer(model, tok)
    assert Scorer(model, tok, prefix="none").convention.prefix_token is None


def test_bad_options_are_refused(model32, tok):
    with pytest.raises(TaskspaceError):
        Scorer(model32, tok, reduction="max")
    with pytest.raises(TaskspaceError):
        Scorer(model32, tok, prefix="cls")
    with pytest.raises(TaskspaceError):
        Scorer(model32, tok, batch_tokens=0)


def test_mean_reduction_divides_by_scored_tokens(model32, tok):
    sums, n = Scorer(model32, tok).sentence_logprobs(SENTENCES, return_counts=True)
    for share in (False, True):
        mean = Scorer(model32, tok, reduction="mean", share_prefix=share)
        df = mean.score_pairs(pairs_of(SENTENCES))
        assert_close(df["logp_good"], sums[0:14:2] / n[0:14:2])
        assert_close(df["logp_bad"], sums[1:14:2] / n[1:14:2])
    assert n.tolist()[:2] == [4, 4] and n[8] == 1


def test_no_transformers_warning_about_the_attention_mask(tok):
    import logging

    model32 = make_tiny_model("gpt2", vocab_size=len(tok), seed=1)  # GPT-2 warns about padding

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        logging.Logger.warning_once.cache_clear()  # warn-once state of earlier tests must not hide it
        model32.config.pad_token_id = tok.pad_token_id
        Scorer(model32, tok).sentence_logprobs(SENTENCES)
        assert not any("attention_mask" in r for r in records)
        # the same padded input without our care does warn: the check above can fail
        logging.Logger.warning_once.cache_clear()
        with torch.no_grad():
            model32(input_ids=torch.tensor([[3, 4, tok.pad_token_id]]))
        assert any("attention_mask" in r for r in records)
    finally:
        logger.removeHandler(handler)


# -- pairs, ties, per-task tables ------------------------------------------------------------------
def test_identical_pairs_are_ties_not_correct(model32, tok):
    pairs = [Pair("t1", "g", "0", "the cat sleeps .", "the cat sleeps ."),
             Pair("t1", "g", "1", "the cat sleeps .", "the cat sleep ."),
             Pair("t2", "h", "0", "dogs", "dogs")]
    for share in (False, True):
        df = Scorer(model32, tok, share_prefix=share).score_pairs(pairs)
        assert df["tie"].tolist() == [True, False, True]
        assert not df.loc[df["tie"], "correct"].any()
        assert (df.loc[df["tie"], "margin"] == 0).all()
        tasks = summarize_tasks(df).set_index("task")
        assert tasks.loc["t1", "n_ties"] == 1 and tasks.loc["t2", "n_ties"] == 1
        assert tasks.loc["t2", "accuracy"] == 0.0
        correct = bool(df.loc[1, "margin"] > 0)
        assert tasks.loc["t1", "accuracy"] == (0.5 if correct else 0.0)


def test_margin_sign_and_accuracy(model32, tok):
    pairs = pairs_of(SENTENCES)
    df = Scorer(model32, tok).score_pairs(pairs)
    lp = Scorer(model32, tok).sentence_logprobs([s for p in pairs for s in (p.good, p.bad)])
    assert_close(df["margin"], lp[0::2] - lp[1::2])
    assert (df["correct"] == (df["margin"] > 0)).all()
    tasks = summarize_tasks(df)
    assert tasks.loc[0, "accuracy"] == pytest.approx(df["correct"].mean())
    assert tasks.loc[0, "mean_margin"] == pytest.approx(df["margin"].mean())


def test_environment_line_names_versions_and_threads():
    from taskspace.provenance import environment_line, torch_threads, versions

    line = environment_line()
    for package in ("python", "taskspace", "torch", "transformers", "tokenizers", "numpy", "pandas"):
        assert f"{package} {versions()[package]}" in line
    assert line.endswith(f"{torch_threads()} torch thread{'s' if torch_threads() != 1 else ''}")
    assert environment_line({"torch": "2.1"}, 1) == "torch 2.1 · 1 torch thread"


def test_wilson_interval():
    lo, hi = wilson_interval(np.array([0, 10, 5, 50]), np.array([10, 10, 10, 100]))
    assert lo[0] == pytest.approx(0.0, abs=1e-12) and 0.2 < hi[0] < 0.35
    assert hi[1] == pytest.approx(1.0) and 0.65 < lo[1] < 0.8
    assert lo[2] == pytest.approx(0.2366, abs=1e-4) and hi[2] == pytest.approx(0.7634, abs=1e-4)
    assert hi[3] - lo[3] < hi[2] - lo[2]  # more pairs, narrower interval
    p = np.array([0, 1, 0.5, 0.5])
    assert np.all(lo <= p + 1e-12) and np.all(p <= hi + 1e-12)


def test_score_writes_documented_files_with_provenance(tiny_model_dir, tmp_path):
    from taskspace.models.loading import load_model

    lm = load_model(str(tiny_model_dir), "step10")
    pairs = pairs_of(SENTENCES[:8], "t1", "g1") + pairs_of(SENTENCES[8:14], "t2", "g2") + \
        [Pair("t2", "g2", "9", "a dog", "a dog")]
    suite = Suite(pairs, name="unit", source="memory")
    res = score(lm, suite, seed=7)
    out = tmp_path / "out"
    res.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["pairs.parquet", "run.json", "tasks.csv"]
    tasks = pd.read_csv(out / "tasks.csv")
    assert list(tasks.columns) == ["task", "group", "n_pairs", "accuracy", "accuracy_ci_low",
                                   "accuracy_ci_high", "mean_margin", "n_ties"]
    assert tasks["task"].tolist() == ["t1", "t2"] and tasks["n_pairs"].tolist() == [4, 4]
    assert tasks["n_ties"].tolist() == [0, 1]
    pq = pd.read_parquet(out / "pairs.parquet")
    for col in ("task", "pair_id", "logp_good", "logp_bad", "n_tokens_good", "n_tokens_bad", "margin"):
        assert col in pq.columns
    want = direct_logprob(lm.model, encode(lm.tokenizer, [SENTENCES[0]], lm.tokenizer.bos_token_id)[0])
    assert_close(pq["logp_good"][:1], [want])
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["model"] == str(tiny_model_dir) and run["model"]["revision"] == "step10"
    assert run["convention"] == {"reduction": "sum", "prefix": "bos", "prefix_token": "<s>",
                                 "prefix_token_id": lm.tokenizer.bos_token_id, "dtype": "float32",
                                 "leading_space": False, "name": "taskspace", "ties_correct": False}
    assert run["seed"] == 7 and run["versions"]["torch"] == torch.__version__
    assert run["torch_threads"] == torch.get_num_threads()
    assert run["suite"]["data_hash"] == suite.data_hash == run["data_hash"]
    assert run["scorer"]["share_prefix"] is True
    # the same settings as one object (what probe() takes), and never both ways at once
    from taskspace.probes.settings import ProbeSettings

    same = score(lm, suite, ProbeSettings(seed=7))
    assert same.pairs["margin"].tolist() == res.pairs["margin"].tolist() and same.provenance["seed"] == 7
    assert score(lm, suite, ProbeSettings(reduction="mean")).provenance["convention"]["reduction"] == "mean"
    with pytest.raises(TypeError, match="prefix in `settings` or as keywords"):
        score(lm, suite, ProbeSettings(), prefix="none")


# -- a real model on real BLiMP sentences ----------------------------------------------------------
def test_gutenberg_scores_equal_direct_on_blimp():
    from taskspace.models.loading import load_model

    shared_or_skip(GUTENBERG_MODEL / "step2577")
    shared_or_skip(BLIMP)
    pairs = []
    for f in sorted(BLIMP.glob("*.jsonl"))[::7]:
        with open(f) as fh:
            for _, line in zip(range(4), fh):
                d = json.loads(line)
                pairs.append(Pair(d["UID"], d["linguistics_term"], d["pairID"], d["sentence_good"],
                                  d["sentence_bad"]))
    lm = load_model(str(GUTENBERG_MODEL), "step2577")
    scorer = Scorer.from_loaded(lm)
    assert scorer.shares_prefix and scorer.head.split
    df = scorer.score_pairs(pairs)
    bos = lm.tokenizer.bos_token_id
    for col, attr in (("logp_good", "good"), ("logp_bad", "bad")):
        want = [direct_logprob(lm.model, encode(lm.tokenizer, [getattr(p, attr)], bos)[0]) for p in pairs]
        assert_close(df[col], want)
    plain = Scorer.from_loaded(lm, share_prefix=False).score_pairs(pairs)
    assert_close(plain["logp_bad"], df["logp_bad"])


# -- fused tanh-GELU ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_fused_gelu_swaps_gpt2_activations_and_changes_only_rounding(dtype, tol):
    tok = make_word_tokenizer()
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2, dtype=dtype)
    originals = [blk.mlp.act for blk in model.transformer.h]
    assert all(type(a).__name__ == "NewGELUActivation" for a in originals)
    with fused_activations(model) as n:
        assert n == len(originals)
        assert all(isinstance(blk.mlp.act, torch.nn.GELU) for blk in model.transformer.h)
    assert [blk.mlp.act for blk in model.transformer.h] == originals  # the very same modules back
    pairs = [Pair("the cat sleeps .", "the cat sleep .", "t", "g", "0"),
             Pair("the dogs see the cat .", "the dogs sees the cat .", "t", "g", "1")]
    fast = Scorer(model, tok).score_pairs(pairs)
    plain = Scorer(model, tok, fast_gelu=False).score_pairs(pairs)
    np.testing.assert_allclose(fast["logp_good"], plain["logp_good"], rtol=tol, atol=tol)
    np.testing.assert_allclose(fast["margin"], plain["margin"], rtol=tol, atol=tol)
    assert Scorer(model, tok).describe()["fused_gelu_modules"] == 2
    assert Scorer(model, tok, fast_gelu=False).describe()["fused_gelu_modules"] == 0


def test_fused_gelu_leaves_hooked_or_different_modules_and_restores_after_an_error():
    tok = make_word_tokenizer()
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    # a module with the right name that computes another function fails the check: not swapped
    Impostor = type("NewGELUActivation", (torch.nn.Module,), {"forward": lambda self, x: torch.relu(x)})
    model.transformer.h[0].mlp.act = Impostor()
    seen = []
    handle = model.transformer.h[1].mlp.act.register_forward_hook(lambda m, i, o: seen.append(1))
    hooked = model.transformer.h[1].mlp.act
    with fused_activations(model) as n:
        assert n == 0
        assert isinstance(model.transformer.h[0].mlp.act, Impostor)
        assert model.transformer.h[1].mlp.act is hooked
    handle.remove()
    model.transformer.h[0].mlp.act = hooked.__class__()
    with pytest.raises(RuntimeError):
        with fused_activations(model) as n:
            assert n == 2
            raise RuntimeError("boom")
    assert all(type(blk.mlp.act).__name__ == "NewGELUActivation" for blk in model.transformer.h)


# -- transformers' KV-cache API, old and new ----------------------------------------------------------

def make_tiny_llama(vocab_size: int, seed: int = 4):
    """A real randomly initialised Llama-style causal LM (rotary positions, RMSNorm, SwiGLU)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaForCausalLM(cfg).eval()


def build(arch: str, vocab_size: int, seed: int):
    return make_tiny_llama(vocab_size, seed) if arch == "llama" else make_tiny_model(arch, vocab_size, seed)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_prefix_cache_path_is_exact_and_warns_nothing(arch, tok):
    """Shared-prefix scoring goes through the KV cache on each architecture, under the cache argument
    the installed transformers takes, with the same numbers as the plain forward pass and without a
    single deprecation warning (issue 11: 30 FutureWarnings in a quick demo on transformers 5.24)."""
    import logging

    from taskspace.scoring.cache import CACHE_KWARGS

    model = build(arch, len(tok), seed=5)
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    logging.getLogger("transformers").addHandler(handler)
    try:
        logging.Logger.warning_once.cache_clear()  # warn-once state of earlier tests must not hide it
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            scorer = Scorer(model, tok)
            assert scorer.shares_prefix, f"{arch}: the prefix cache path should be exact here"
            assert scorer.head.cache_kwarg in CACHE_KWARGS
            df = scorer.score_pairs(pairs_of(SENTENCES))
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    deprecations = [f"{w.category.__name__}: {w.message}" for w in seen
                    if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations, deprecations[:3]
    assert not [r for r in records if "deprecat" in r.lower()]
    want = [direct_logprob(model, x) for x in encode(tok, SENTENCES, tok.bos_token_id)]
    got = np.stack([df["logp_good"], df["logp_bad"]], 1).ravel()
    assert_close(got, want[: len(got)])


def test_a_model_without_a_cache_argument_falls_back_to_plain_scoring(tok):
    """No known cache argument: prefix sharing is off (an error where it is insisted on), scores exact."""
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=6)
    scorer = Scorer(model, tok)
    scorer.head.cache_kwarg = None  # as for a remote-code model whose forward names no cache
    assert not scorer.shares_prefix
    want = [direct_logprob(model, x) for x in encode(tok, SENTENCES, tok.bos_token_id)]
    df = scorer.score_pairs(pairs_of(SENTENCES))
    assert_close(df["logp_good"], want[0:14:2])
    insist = Scorer(model, tok, share_prefix=True)
    insist.head.cache_kwarg = None
    with pytest.raises(TaskspaceError, match="share_prefix=False"):
        insist.score_pairs(pairs_of(SENTENCES))


def test_cache_argument_is_found_by_feature_detection():
    from dataclasses import dataclass

    from taskspace.scoring.cache import cache_kwarg, output_cache

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs):
            return input_ids

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return input_ids

    class PassesOn(New):  # post-processes its base class's output, takes everything as **kwargs
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    class Closed(torch.nn.Module):
        def forward(self, input_ids=None):
            return input_ids

    class OpenOnClosed(Closed):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    assert cache_kwarg(New()) == "cache" and cache_kwarg(Old()) == "past_key_values"
    assert cache_kwarg(PassesOn()) == "cache"
    assert cache_kwarg(Closed()) is None and cache_kwarg(OpenOnClosed()) is None

    @dataclass
    class NewOut:
        cache: object = None

    @dataclass
    class OldOut:
        past_key_values: object = None

    assert output_cache(NewOut("c")) == "c" and output_cache(OldOut("p")) == "p"
    assert output_cache(object()) is None
