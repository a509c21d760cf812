"""The ``lookahead`` probe against the first-order effect of a masked one-step update (finite differences)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer, mean_margin
from conftest import mini_suite as make_suite
from taskspace.models.loading import LoadedModel
from taskspace.probes import registry
from taskspace.probes.gradient.differentials import task_gradients
from taskspace.probes.gradient.masks import top_fraction_mask
from taskspace.probes.kinds.lookahead import lookahead_matrix, normalize_rows
from taskspace.probes.registry import RunContext
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2, mask_fraction=0.1)


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


def test_lookahead_is_first_order_effect_of_masked_step(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=6, dtype=torch.float64)
    suite = make_suite()
    splits = SETTINGS.splits(suite)
    train, test = splits["train"], splits["test"]
    tasks = suite.tasks
    raw, mdesc, _ = lookahead_matrix(model, tok, train, test, tasks, SETTINGS)
    assert mdesc["fraction"] == 0.1 and np.isfinite(raw).all()
    params = dict(model.named_parameters())
    eps = 1e-7            # central differences: error O(ε²‖step‖³), round-off O(1e-16/ε)
    for a in ("sv_sing", "refl"):
        g = task_gradients(model, tok, train.select([a]), storage_dtype=torch.float64, progress=False).get(a)
        mask = top_fraction_mask(g, 0.1)
        step = {n: mask[n].double() * g[n] for n in params}       # θ − ε M_a ⊙ ḡ_a is the step on a
        for b in tasks:
            with torch.no_grad():
                for n, p in params.items():
                    p -= eps * step[n]
                up = mean_margin(model, tok, test.pairs_of(b))
                for n, p in params.items():
                    p += 2 * eps * step[n]
                down = mean_margin(model, tok, test.pairs_of(b))
                for n, p in params.items():
                    p -= eps * step[n]
            fd = (up - down) / (2 * eps)                          # d m_b / d ε along −M_a ⊙ ḡ_a
            i, j = tasks.index(a), tasks.index(b)
            assert fd == pytest.approx(raw[i, j], rel=1e-6, abs=1e-8), (a, b)
    # one step on a task helps that task (a descent direction of its own train loss; on its eval pairs
    # here, made of the same kind of sentences)
    assert (np.diag(raw) > 0).all()


def test_full_mask_gives_plain_gradient_inner_products(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=6, dtype=torch.float64)
    suite = make_suite()
    s = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2, mask_fraction=1.0)
    splits = s.splits(suite)
    raw, _, _ = lookahead_matrix(model, tok, splits["train"], splits["test"], suite.tasks, s)
    gtr = task_gradients(model, tok, splits["train"], storage_dtype=torch.float64, progress=False)
    gte = task_gradients(model, tok, splits["test"], storage_dtype=torch.float64, progress=False)
    want = np.array([[float(gte.flat(b) @ gtr.flat(a)) for b in suite.tasks] for a in suite.tasks])
    np.testing.assert_allclose(raw, want, rtol=1e-10)


def test_normalize_rows():
    raw = np.array([[2.0, -1.0], [3.0, 0.0]])
    np.testing.assert_allclose(normalize_rows(raw), [[1.0, -0.5], [np.nan, np.nan]])
    np.testing.assert_allclose(normalize_rows(np.array([[-4.0, 2.0], [1.0, 0.5]])), [[-1.0, 0.5], [2.0, 1.0]])


def test_runner_spaces_and_files(tok, tmp_path):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=6)
    lm = LoadedModel(model, tok, "tiny-gpt2", "step5", "memory", "cpu", "float32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = registry.get("lookahead").load_runner()(lm, make_suite(), SETTINGS, RunContext(progress=False))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    L, raw = res.spaces["lookahead"], res.spaces["lookahead_raw"]
    np.testing.assert_allclose(L.matrix, raw.matrix / np.abs(np.diag(raw.matrix))[:, None])
    assert np.allclose(np.abs(np.diag(L.matrix)), 1.0)
    res.save(tmp_path)
    for name in ("lookahead", "lookahead_raw"):
        sp = TaskSpace.load(tmp_path / "spaces" / f"{name}.csv")
        assert sp.provenance["probe"] == "lookahead" and sp.provenance["revision"] == "step5"
        assert sp.provenance["mask"]["fraction"] == 0.1 and sp.provenance["settings"]["eval_pairs"] == 2
        assert {"convention", "versions", "seed", "model"} <= set(sp.provenance)
    assert (tmp_path / "stats" / "lookahead.csv").exists()
    rnd = registry.get("lookahead").load_runner()(
        lm, make_suite(), ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2, mask_fraction=0.1,
                                        mask_kind="random"), RunContext(progress=False))
    assert rnd.spaces["lookahead"].provenance["mask"]["kind"] == "random"
    assert not np.allclose(rnd.spaces["lookahead_raw"].matrix, raw.matrix)
