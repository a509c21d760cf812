"""The ``transfer-estimate`` probe: the first-order term of FTGD transfer, against finite differences of
the margin along Δ, and the reuse of a transfer run's deltas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer, mean_margin
from conftest import mini_suite as make_suite
from taskspace.models.loading import LoadedModel
from taskspace.probes import registry
from taskspace.probes.finetune.deltas import load_delta
from taskspace.probes.kinds.transfer_estimate import estimate_matrix
from taskspace.probes.registry import RunContext
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2, steps=3, lr=1e-3, objective="difference",
                         batch_pairs=3,
                         mask_fraction=0.1, bootstrap=20)


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


def test_estimate_equals_finite_difference_along_delta(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=7, dtype=torch.float64)
    lm = LoadedModel(model, tok, "tiny-gpt2", None, "memory", "cpu", "float64")
    suite = make_suite()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = registry.get("transfer-estimate").load_runner()(lm, suite, SETTINGS, RunContext(progress=False))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())     # FTGD restored θ_0
    est = res.spaces["transfer_estimate"]
    tasks = est.tasks
    assert np.isfinite(est.matrix).all()
    assert set(res.tables["stats/transfer_estimate_tasks.csv"][0]["source"]) == {"ftgd"}
    test = SETTINGS.splits(suite)["test"]
    params = dict(model.named_parameters())
    eps = 1e-4
    for a in ("sv_sing", "refl"):
        delta = res.extra["deltas"][a]
        assert delta is not None and delta.n_nonzero() > 0
        dense = {n: delta.dense(n).double() for n in delta.entries}
        for b in tasks:
            with torch.no_grad():
                for n, d in dense.items():
                    params[n] += eps * d
                up = mean_margin(model, tok, test.pairs_of(b))
                for n, d in dense.items():
                    params[n] -= 2 * eps * d
                down = mean_margin(model, tok, test.pairs_of(b))
                for n, d in dense.items():
                    params[n] += eps * d
            fd = (up - down) / (2 * eps)          # d/dε m_b(θ_0 + ε Δ_a) at ε = 0
            assert fd == pytest.approx(est.matrix[tasks.index(a), tasks.index(b)], rel=1e-6, abs=1e-9), (a, b)
    # FTGD on a task raises its own margin, and the first-order estimate sees it
    assert (np.diag(est.matrix) > 0).all()
    norm = res.spaces["transfer_estimate_normalized"].matrix
    np.testing.assert_allclose(norm, est.matrix / np.abs(np.diag(est.matrix))[:, None])


def test_reuses_deltas_of_a_transfer_run_with_the_same_settings(tok, tmp_path):
    from taskspace.probes.kinds.transfer import transfer_probe

    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=7)
    lm = LoadedModel(model, tok, "tiny-gpt2", "step9", "memory", "cpu", "float32")
    suite = make_suite()
    transfer_probe(lm, suite, SETTINGS, tmp_path, progress=False)
    spec = registry.get("transfer-estimate")
    res = spec.load_runner()(lm, suite, SETTINGS, RunContext(out=tmp_path, progress=False))
    table = res.tables["stats/transfer_estimate_tasks.csv"][0]
    assert set(table["source"]) == {"transfer run"}
    tasks = res.spaces["transfer_estimate"].tasks
    deltas = {a: load_delta(tmp_path / "deltas" / f"{a}.safetensors") for a in tasks}
    want = estimate_matrix(model, tok, SETTINGS.splits(suite)["test"], tasks, SETTINGS, deltas)
    np.testing.assert_array_equal(res.spaces["transfer_estimate"].matrix, want)
    # the same FTGD from scratch gives the same deltas (seeded), so the same estimate
    fresh = spec.load_runner()(lm, suite, SETTINGS, RunContext(progress=False))
    np.testing.assert_allclose(fresh.spaces["transfer_estimate"].matrix, want, rtol=1e-5, atol=1e-6)
    # other FTGD settings: the transfer run's deltas are not theirs
    other = ProbeSettings(**{**SETTINGS.to_dict(), "tasks": None, "lr": 2e-3})
    res2 = spec.load_runner()(lm, suite, other, RunContext(out=tmp_path, progress=False))
    assert set(res2.tables["stats/transfer_estimate_tasks.csv"][0]["source"]) == {"ftgd"}
    # saving: spaces with provenance, the per-task table and the timings
    dest = tmp_path / "estimate"
    res.save(dest)
    for name in ("transfer_estimate", "transfer_estimate_normalized"):
        sp = TaskSpace.load(dest / "spaces" / f"{name}.csv")
        assert sp.provenance["probe"] == "transfer-estimate" and sp.provenance["revision"] == "step9"
        assert sp.provenance["delta_sources"] == {t: "transfer run" for t in tasks}
        assert {"convention", "versions", "settings", "seed", "model"} <= set(sp.provenance)
    assert (dest / "stats" / "transfer_estimate_tasks.csv").exists()
    assert (dest / "stats" / "transfer_estimate_timings.json").exists()
