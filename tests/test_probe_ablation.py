"""The ``ablation`` probe: bit-exact restore, an empty mask changes nothing, and A against a direct
computation on a copy of the model with the mask zeroed by hand."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer, mean_margin
from conftest import mini_suite as make_suite
from taskspace.errors import InputError
from taskspace.models.loading import LoadedModel
from taskspace.probes import probe, registry
from taskspace.probes.gradient.differentials import task_gradients
from taskspace.probes.gradient.masks import top_fraction_mask
from taskspace.probes.kinds.ablation import ablated
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2, ablation_fraction=0.02, bootstrap=50)


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


def lm_of(tok, dtype=torch.float32, seed=8):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=seed, dtype=dtype)
    return LoadedModel(model, tok, "tiny-gpt2", "step4", "memory", "cpu", str(dtype).replace("torch.", ""))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_ablation_matches_hand_zeroed_copy_and_restores_bit_exactly(tok):
    lm = lm_of(tok, torch.float64)
    model = lm.model
    before = snapshot(model)
    suite = make_suite()
    res = probe(lm, suite, "ablation", SETTINGS, progress=False)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    A = res.spaces["ablation"]
    splits = SETTINGS.splits(suite)
    for a in ("sv_sing", "refl"):
        g = task_gradients(model, tok, splits["train"].select([a]), storage_dtype=torch.float64,
                           progress=False).get(a)
        mask = top_fraction_mask(g, 0.02)
        copy_ = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in copy_.named_parameters():
                p[mask[n]] = 0.0
        for b in A.tasks:
            pairs = splits["test"].pairs_of(b)
            want = mean_margin(copy_, tok, pairs) - mean_margin(model, tok, pairs)
            assert A.matrix[A.tasks.index(a), A.tasks.index(b)] == pytest.approx(want, rel=1e-9, abs=1e-9)
    # 2% of a random model's parameters: ablation changes margins, and intervals bracket the values
    assert np.abs(A.matrix).max() > 0
    R = res.spaces["ablation_random"]
    assert not np.array_equal(A.matrix, R.matrix)
    for sp in (A, R):
        assert (sp.ci_low <= sp.matrix + 1e-12).all() and (sp.matrix <= sp.ci_high + 1e-12).all()
    table = res.tables["stats/ablation.csv"][0]
    assert (table["mask_size"] == round(0.02 * sum(p.numel() for p in model.parameters()))).all()


def test_empty_mask_changes_nothing(tok):
    lm = lm_of(tok)
    empty = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2, mask_threshold=1e9, bootstrap=20)
    res = probe(lm, make_suite(), "ablation", empty, progress=False)
    assert (res.tables["stats/ablation.csv"][0]["mask_size"] == 0).all()
    assert (res.spaces["ablation"].matrix == 0).all() and (res.spaces["ablation_random"].matrix == 0).all()


def test_reference_values_and_restore_on_error(tok):
    lm = lm_of(tok)
    model = lm.model
    before = snapshot(model)
    # the model's own values as the reference: nothing changes
    res = probe(lm, make_suite(), "ablation", SETTINGS, progress=False, reference=lm)
    assert (res.spaces["ablation"].matrix == 0).all()
    assert res.spaces["ablation"].provenance["ablation_value"].startswith("reference model")
    other = make_tiny_model("gpt2", vocab_size=len(tok), seed=9)
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.1
            for n, p in model.named_parameters()}
    ref = dict(other.named_parameters())
    with pytest.raises(RuntimeError, match="boom"):
        with ablated(model, mask, ref) as n:
            assert n == sum(int(m.sum()) for m in mask.values())
            for name, p in model.named_parameters():
                assert torch.equal(p[mask[name]], ref[name][mask[name]])
                assert torch.equal(p[~mask[name]], before[name][~mask[name]])
            raise RuntimeError("boom")
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])


def test_runner_files_and_provenance(tok, tmp_path):
    lm = lm_of(tok)
    res = probe(lm, make_suite(), "ablation", SETTINGS, progress=False, rows=("refl",))
    A = res.spaces["ablation"]
    i = A.tasks.index("refl")
    assert np.isfinite(A.matrix[i]).all() and np.isnan(np.delete(A.matrix, i, axis=0)).all()
    res.save(tmp_path)
    for name in ("ablation", "ablation_random"):
        sp = TaskSpace.load(tmp_path / "spaces" / f"{name}.csv")
        assert sp.provenance["probe"] == "ablation" and sp.provenance["revision"] == "step4"
        assert sp.provenance["ablation_value"] == "zero" and sp.provenance["mask"]["fraction"] == 0.02
        assert {"convention", "versions", "settings", "seed", "model", "bootstrap"} <= set(sp.provenance)
    assert (tmp_path / "stats" / "ablation.csv").exists()


def test_ablation_has_its_own_mask_fraction(tok):
    """Ablation masks default to 0.5% of the parameters whatever the shared mask settings say (the
    overlap probe's 5% and a random mask kind do not leak in), and the job key reads its own field."""
    from dataclasses import replace

    lm = lm_of(tok)
    n = sum(p.numel() for p in lm.model.parameters())
    s = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2, bootstrap=0, mask_fraction=0.3, mask_kind="random")
    assert s.ablation_fraction == 0.005
    res = probe(lm, make_suite(), "ablation", s, progress=False, rows=("refl",))
    assert (res.tables["stats/ablation.csv"][0]["mask_size"] == round(0.005 * n)).all()
    assert res.spaces["ablation"].provenance["mask"]["kind"] == "gradient"
    reads = registry.get("ablation").reads
    assert "ablation_fraction" in reads and "mask_fraction" not in reads and "mask_kind" not in reads
    with pytest.raises(InputError):
        replace(s, ablation_fraction=0.0)


@pytest.mark.slow
def test_trained_model_diagonal_drops_more_than_random_mask():
    """On a real trained model (gutenberg-gpt2-5m step2577), zeroing 0.1% of the weights chosen by a
    task's gradient erases most of its margin (measured: about −1 nat, base margins 0.4–1.9), while as many
    random weights change it by about 0.01."""
    import taskspace
    from conftest import BLIMP, GUTENBERG_MODEL, shared_or_skip

    shared_or_skip(GUTENBERG_MODEL)
    shared_or_skip(BLIMP)
    lm = taskspace.load_model(str(GUTENBERG_MODEL), revision="step2577")
    tasks = ["anaphor_number_agreement", "determiner_noun_agreement_2"]
    suite = taskspace.load_suite(str(BLIMP)).select(tasks)
    s = ProbeSettings(train_pairs=50, dev_pairs=0, eval_pairs=50, ablation_fraction=0.001, bootstrap=200)
    res = probe(lm, suite, "ablation", s, progress=False)
    A, R = res.spaces["ablation"], res.spaces["ablation_random"]
    for i in range(len(tasks)):
        # the masked drop's interval lies wholly below the random drop
        assert A.ci_high[i, i] < R.matrix[i, i] and A.matrix[i, i] < -0.3, (A.matrix, R.matrix)


def test_unknown_row_is_an_input_error(tok):
    from taskspace.errors import InputError

    with pytest.raises(InputError, match="not in the suite"):
        probe(lm_of(tok), make_suite(), "ablation", SETTINGS, progress=False, rows=("nope",))
