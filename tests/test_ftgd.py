"""FTGD and the entangled baseline on real tiny transformers models (probes/ftgd.py, probes/deltas.py)."""
from __future__ import annotations

import math
import random

import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer
from taskspace.probes.finetune.deltas import applied, load_delta, save_delta
from taskspace.probes.finetune.ftgd import finetune_lm, ftgd
from taskspace.scoring import Scorer
from taskspace.suites.schema import Pair

SG = ["cat", "dog", "girl", "boy", "teacher"]
PL = ["cats", "dogs", "girls", "boys", "teachers"]


def agreement_pairs(task: str, group: str, n: int, seed: int, plural: bool = False) -> list[Pair]:
    """Minimal pairs over the conftest vocabulary: subject-verb agreement with a singular (or plural)
    subject in three frames (intransitive, transitive, across a relative clause). The good verb is
    always the same form within a task, so what a task teaches is consistent."""
    rng = random.Random(seed)
    nouns, dets = (PL, ["the", "these", "those", "some", "all"]) if plural else \
        (SG, ["the", "a", "this", "that", "every"])
    v_good, v_bad = ("sleep", "sleeps") if plural else ("sleeps", "sleep")
    t_good, t_bad = ("see", "sees") if plural else ("sees", "see")
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        d, s = rng.choice(dets), rng.choice(nouns)
        od, o = rng.choice(["the", "a", "some"]), rng.choice(SG + PL)
        frame = rng.randrange(3)
        if frame == 0:
            out.add((f"{d} {s} {v_good} .", f"{d} {s} {v_bad} ."))
        elif frame == 1:
            out.add((f"{d} {s} {t_good} {od} {o} .", f"{d} {s} {t_bad} {od} {o} ."))
        else:
            out.add((f"{d} {s} who {od} {o} saw {v_good} .", f"{d} {s} who {od} {o} saw {v_bad} ."))
    return [Pair(task, group, str(i), g, b) for i, (g, b) in enumerate(sorted(out))]


def reflexive_pairs(task: str, group: str, n: int, seed: int) -> list[Pair]:
    """Reflexives: 'the girl saw herself' vs 'the girl saw himself' style pairs (gender/number)."""
    rng = random.Random(seed)
    ante = {"girl": "herself", "girls": "themselves", "boy": "himself", "boys": "themselves",
            "cat": "itself", "dog": "itself"}
    wrong = {"herself": "himself", "himself": "herself", "themselves": "itself", "itself": "themselves"}
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        d, s = rng.choice(["the", "a", "this", "that", "every", "some"]), rng.choice(list(ante))
        v = rng.choice(["saw", "sees", "see"])
        extra = rng.choice(["", " ,", " !", " ?"])
        r = ante[s]
        out.add((f"{d} {s} {v} {r}{extra} .", f"{d} {s} {v} {wrong[r]}{extra} ."))
    return [Pair(task, group, str(i), g, b) for i, (g, b) in enumerate(sorted(out))]


def _top_mask(model, tok, pairs, fraction=0.05):
    """The top-|ḡ| mask of the package (taskspace.probes.gradient.masks) on the pairs' gradient differential."""
    from taskspace.probes.gradient.differentials import task_gradients
    from taskspace.probes.gradient.masks import top_fraction_mask
    from taskspace.suites.schema import Suite

    g = task_gradients(model, tok, Suite(list(pairs)), progress=False)
    return top_fraction_mask(g.get(pairs[0].task), fraction)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tok = make_word_tokenizer()
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=0)
    pairs = agreement_pairs("sva", "agr", 70, seed=1)
    return model, tok, pairs[:30], pairs[30:40], pairs[40:]


@pytest.fixture(scope="module")
def mask(setup):
    model, tok, train, dev, test = setup
    return _top_mask(model, tok, train)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_identical(model, snap):
    for n, p in model.named_parameters():
        assert torch.equal(p, snap[n]), f"{n} changed"
        assert p.grad is None, f"{n} kept a gradient"
        assert p.requires_grad, f"{n} lost requires_grad"


def test_ftgd_trains_only_masked_entries_and_restores_bits(setup, mask):
    model, tok, train, dev, test = setup
    n_mask = sum(int(m.sum()) for m in mask.values())
    snap = _snapshot(model)
    res = ftgd(model, tok, train, dev, mask, objective="difference", steps=12, lr=1e-2, eval_every=4, seed=0)
    assert res.ok, res.reason
    _assert_identical(model, snap)                      # restored bit-exactly
    assert res.mask_size == n_mask
    changed_any = False
    with applied(model, res.delta):
        for n, p in model.named_parameters():
            moved = p.detach() != snap[n]
            outside = moved & ~mask.get(n, torch.zeros_like(moved))
            assert not outside.any(), f"{n}: {int(outside.sum())} entries outside the mask moved"
            changed_any |= bool(moved.any())
    assert changed_any
    _assert_identical(model, snap)                      # applied() restores too
    # delta indices are exactly the mask's entries
    for n, (idx, _) in res.delta.entries.items():
        assert torch.equal(idx, mask[n].reshape(-1).nonzero().squeeze(1))


def test_ftgd_matches_dense_masked_adam_reference(setup):
    """The gather/scatter implementation equals plain Adam on all parameters with gradients outside
    the mask zeroed (no early stopping: dev empty)."""
    model, tok, train, dev, test = setup
    mask = _top_mask(model, tok, train)
    snap = _snapshot(model)
    res = ftgd(model, tok, train[:8], [], mask, objective="difference", steps=5, lr=1e-2, batch_pairs=8)
    assert res.ok and res.best_step == 5
    # reference: full-batch over the same 8 pairs each step (batch_pairs=8 = all of them)
    from taskspace.scoring import batch_logprobs, encode, resolve_prefix

    _, pid = resolve_prefix(tok, "bos")
    good = encode(tok, [p.good for p in train[:8]], pid)
    bad = encode(tok, [p.bad for p in train[:8]], pid)
    params = dict(model.named_parameters())
    with applied(model, res.delta):
        ours = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.Adam(list(params.values()), lr=1e-2)
    try:
        for _ in range(5):
            opt.zero_grad()
            lp = batch_logprobs(model, good + bad, pad_id=tok.pad_token_id)
            (-(lp[:8] - lp[8:]).mean()).backward()
            for n, p in params.items():
                p.grad.mul_(mask[n])
            opt.step()
        assert any(not torch.equal(ours[n], snap[n]) for n in params)
        for n, p in params.items():
            torch.testing.assert_close(ours[n], p.detach(), rtol=1e-5, atol=1e-6)
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(snap[n])
                p.grad = None


@pytest.mark.parametrize("objective", ["difference", "logistic"])
def test_ftgd_raises_heldout_margin(setup, mask, objective):
    model, tok, train, dev, test = setup
    scorer = Scorer(model, tok)
    before = scorer.score_pairs(test)["margin"].mean()
    res = ftgd(model, tok, train, dev, mask, objective=objective, steps=12, lr=2e-2, seed=0)
    assert res.ok
    with applied(model, res.delta):
        after = scorer.score_pairs(test)["margin"].mean()
    assert after > before + 0.5, (before, after)
    assert scorer.score_pairs(test)["margin"].mean() == before   # base model back


def test_logistic_objective_is_bounded(setup, mask):
    model, tok, train, dev, test = setup
    # the first training loss equals mean −log σ(margin) of the first mini-batch, computed independently
    res = ftgd(model, tok, train, [], mask, objective="logistic", steps=1, lr=1e-9, batch_pairs=len(train))
    margins = torch.tensor(Scorer(model, tok).score_pairs(train)["margin"].to_numpy())
    expect = float(torch.nn.functional.softplus(-margins).mean())
    assert res.history["train_loss"][0] == pytest.approx(expect, rel=1e-4)
    lo = ftgd(model, tok, train, [], mask, objective="logistic", steps=10, lr=5e-2)
    di = ftgd(model, tok, train, [], mask, objective="difference", steps=10, lr=5e-2)
    assert all(v >= 0 for v in lo.history["train_loss"])      # −log σ(m) ≥ 0: bounded below
    assert min(di.history["train_loss"]) < 0                  # −margin is not
    assert lo.delta.norm() > 0


def test_absurd_learning_rate_fails_and_restores(setup, mask):
    model, tok, train, dev, test = setup
    snap = _snapshot(model)
    res = ftgd(model, tok, train, dev, mask, objective="difference", steps=20, lr=1e30)
    assert res.status == "failed" and not res.ok
    assert "non-finite" in res.reason
    assert res.delta is None
    _assert_identical(model, snap)


def test_nan_injected_in_forward_fails_and_restores(setup, mask):
    model, tok, train, dev, test = setup
    snap = _snapshot(model)
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        if torch.is_grad_enabled() and calls["n"] > 3:      # the 3rd training forward goes NaN
            output.last_hidden_state.mul_(float("nan"))
        return output

    h = model.transformer.register_forward_hook(poison)
    try:
        res = ftgd(model, tok, train, dev, mask, objective="difference", steps=10, lr=1e-2, eval_every=100)
    finally:
        h.remove()
    assert res.status == "failed" and "training loss at step" in res.reason
    _assert_identical(model, snap)


def test_early_stopping_keeps_the_best_dev_state(setup):
    """Dev pairs that reward the opposite verb form: dev loss only gets worse, so training stops after
    `patience` evaluations and the best state is step 0: reported as "no_improvement", like a failure
    (no Δ), so a transfer row never rests on a fine-tuning that learned nothing."""
    model, tok, train, dev, test = setup
    mask = _top_mask(model, tok, train)
    flipped = [Pair(p.task, p.group, p.pair_id, p.bad, p.good) for p in dev]
    res = ftgd(model, tok, train, flipped, mask, objective="difference", steps=100, lr=1e-2, eval_every=3,
               patience=2)
    assert res.status == "no_improvement" and not res.ok and res.stopped_early
    assert "never improved on step 0" in res.reason
    assert res.steps_run == 6 and res.best_step == 0
    assert [d["step"] for d in res.history["dev"]] == [0, 3, 6]
    assert res.delta is None and res.to_dict()["delta_norm"] is None
    res2 = ftgd(model, tok, train, dev, mask, objective="difference", steps=9, lr=1e-2, eval_every=3, patience=2)
    assert res2.best_step == 9 and not res2.stopped_early


def test_baseline_trains_all_parameters_on_good_sentences(setup):
    model, tok, train, dev, test = setup
    snap = _snapshot(model)
    scorer = Scorer(model, tok)
    goods = [p.good for p in train]
    lp0 = scorer.sentence_logprobs(goods).sum()
    res = finetune_lm(model, tok, train, dev, steps=10, lr=1e-2, eval_every=5)
    assert res.ok and res.objective == "lm"
    _assert_identical(model, snap)
    n_params = sum(p.numel() for p in model.parameters())
    assert res.mask_size == n_params
    assert all(idx is None for idx, _ in res.delta.entries.values())
    with applied(model, res.delta):
        lp1 = scorer.sentence_logprobs(goods).sum()
        moved = sum(int((p.detach() != snap[n]).sum()) for n, p in model.named_parameters())
    assert lp1 > lp0                                   # the good sentences got likelier
    assert moved > 0.5 * n_params                      # entangled: (nearly) everything moves
    assert res.history["dev"][-1]["loss"] < res.history["dev"][0]["loss"]


def test_delta_file_roundtrip(setup, mask, tmp_path):
    model, tok, train, dev, test = setup
    res = ftgd(model, tok, train, dev, mask, objective="difference", steps=5, lr=1e-2)
    path = save_delta(tmp_path / "d.safetensors", res.delta)
    back = load_delta(path)
    assert back.shapes == res.delta.shapes
    for n, (idx, val) in res.delta.entries.items():
        assert torch.equal(back.entries[n][0], idx) and torch.equal(back.entries[n][1], val)
    scorer = Scorer(model, tok)
    with applied(model, res.delta):
        a = scorer.score_pairs(test)["margin"].to_numpy()
    with applied(model, back):
        b = scorer.score_pairs(test)["margin"].to_numpy()
    assert (a == b).all()
    assert math.isclose(back.norm(), res.delta.norm())


def test_bad_mask_is_input_error(setup):
    from taskspace.errors import InputError

    model, tok, train, dev, test = setup
    with pytest.raises(InputError):
        ftgd(model, tok, train, dev, {"no.such.param": torch.ones(3, dtype=torch.bool)}, objective="difference",
             steps=1)
    with pytest.raises(InputError):
        ftgd(model, tok, train, dev, None, objective="nonsense", steps=1)
    empty = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    res = ftgd(model, tok, train, dev, empty, objective="difference", steps=2)
    assert res.status == "failed" and "empty" in res.reason
