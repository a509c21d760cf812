"""The ``latent`` probe: latent gradients against autograd on a direct computation, the vocabulary basis
``b_v = pinv(W_U) e_v`` and the task cards."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import agreement_suite as make_suite
from conftest import make_tiny_model, make_word_tokenizer
from taskspace.models.loading import LoadedModel
from taskspace.probes import probe
from taskspace.probes.kinds.latent import CARD_COLUMNS, latent_gradients, task_cards, vocab_basis
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


def direct_latent(model, tok, pairs, reduction="sum"):
    """h̄ by plain autograd: each pair on its own, the whole sentence fed (the last position's state is
    not scored, so its gradient must come out zero), mean margin backpropagated to the final states."""
    base, head = model.base_model, model.get_output_embeddings()
    states, margins = [], []
    for p in pairs:
        lps = []
        for s in (p.good, p.bad):
            ids = torch.tensor([[tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]])
            h = base(input_ids=ids).last_hidden_state
            h.retain_grad()
            states.append(h)
            logp = torch.log_softmax(head(h)[0, :-1], dim=-1).gather(1, ids[0, 1:, None]).sum()
            lps.append(logp / (ids.shape[1] - 1) if reduction == "mean" else logp)
        margins.append(lps[0] - lps[1])
    torch.stack(margins).mean().backward()
    assert all(torch.count_nonzero(h.grad[0, -1]) == 0 for h in states)
    return sum(h.grad[0].sum(0) for h in states)


@pytest.mark.parametrize("arch,reduction", [("gpt2", "sum"), ("gpt2", "mean"), ("gpt_neox", "sum")])
def test_latent_gradient_matches_autograd(tok, arch, reduction):
    model = make_tiny_model(arch, vocab_size=len(tok), seed=4, dtype=torch.float64)
    suite = make_suite()
    lat = latent_gradients(model, tok, suite, reduction=reduction, batch_tokens=20)
    for t in suite.tasks:
        want = direct_latent(model, tok, suite.pairs_of(t), reduction)
        assert lat[t].shape == (32,)
        torch.testing.assert_close(lat[t], want.detach(), rtol=1e-9, atol=1e-12)


def test_latent_probe_leaves_parameters_without_grad(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=4)
    latent_gradients(model, tok, make_suite())
    assert all(p.grad is None for p in model.parameters())


def test_basis_reproduces_one_hot_logits_when_vocab_fits_width(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    vocab = len(tok)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=64, n_layer=1, n_head=2))
    w_u = model.get_output_embeddings().weight
    assert w_u.shape == (vocab, 64) and vocab <= 64
    basis = vocab_basis(w_u)
    logits = w_u.detach().double() @ basis                  # column v: W_U b_v
    torch.testing.assert_close(logits, torch.eye(vocab, dtype=torch.float64), rtol=0, atol=1e-9)


def test_basis_projects_one_hot_onto_head_column_space(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=5)
    w_u = model.get_output_embeddings().weight.detach().double()
    assert w_u.shape[0] > w_u.shape[1]                      # vocab > width: e_v is not reachable
    q, _ = torch.linalg.qr(w_u)                            # orthonormal basis of W_U's column space
    proj = q @ q.T                                          # projection of e_v is column v
    torch.testing.assert_close(w_u @ vocab_basis(w_u), proj, rtol=0, atol=1e-9)
    assert not torch.allclose(proj, torch.eye(len(proj), dtype=torch.float64), atol=1e-3)


def test_cards_are_the_extreme_cosines(tok):
    torch.manual_seed(1)
    w_u = torch.randn(len(tok), 8)
    lat = {"a": torch.randn(8, dtype=torch.float64), "zero": torch.zeros(8, dtype=torch.float64)}
    cards = task_cards(lat, ["a", "zero"], ["g", "g"], w_u, tok, k=5)
    assert list(cards.columns) == CARD_COLUMNS and set(cards["task"]) == {"a"}   # a zero h̄ has no card
    pinv = np.linalg.pinv(w_u.double().numpy())
    h = lat["a"].numpy()
    cos = (h @ pinv) / (np.linalg.norm(h) * np.linalg.norm(pinv, axis=0))
    push = cards[cards.direction == "push"]
    pull = cards[cards.direction == "pull"]
    assert list(push["rank"]) == [1, 2, 3, 4, 5]
    assert list(push["token_id"]) == list(np.argsort(-cos)[:5])
    assert list(pull["token_id"]) == list(np.argsort(cos)[:5])
    np.testing.assert_allclose(push["cosine"], np.sort(cos)[::-1][:5], rtol=1e-9)
    assert list(push["token"]) == [tok.decode([int(v)]) for v in push["token_id"]]


def test_runner_space_cards_and_files(tok, tmp_path):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=4)
    lm = LoadedModel(model, tok, "tiny-gpt2", "step3", "memory", "cpu", "float32")
    suite = make_suite()
    settings = ProbeSettings(train_pairs=2, dev_pairs=0, eval_pairs=1)
    res = probe(lm, suite, "latent", settings, progress=False)
    sp = res.spaces["latent"]
    lat = res.extra["latents"]
    a, b = lat["sv"].numpy(), lat["refl"].numpy()
    i, j = sp.tasks.index("sv"), sp.tasks.index("refl")
    assert sp.matrix[i, j] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-6)
    cards, prov = res.tables["cards/latent.csv"]
    assert (cards.groupby(["task", "direction"]).size() == 15).all() and len(cards) == 3 * 30
    assert prov["card_tokens"] == 15
    res.save(tmp_path)
    on_disk = TaskSpace.load(tmp_path / "spaces" / "latent.csv")
    assert on_disk.provenance["probe"] == "latent" and on_disk.provenance["revision"] == "step3"
    assert on_disk.provenance["convention"]["reduction"] == "sum"
    assert {"settings", "seed", "versions", "model"} <= set(on_disk.provenance)
    import pandas as pd

    back = pd.read_csv(tmp_path / "cards" / "latent.csv", keep_default_na=False)
    assert list(back.columns) == CARD_COLUMNS and len(back) == len(cards)
    assert (tmp_path / "cards" / "latent.json").exists()
    fewer = probe(lm, suite, "latent", settings, progress=False, card_tokens=3)
    assert len(fewer.tables["cards/latent.csv"][0]) == 3 * 6
