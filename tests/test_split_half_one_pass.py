"""The gradient probes' split-half pass in one pass (taskspace.probes.gradient.halves): the backward passes run
once, on the halves, and each task's ḡ_t is the pair-weighted mean of its halves' ḡ. Checked against the two
passes it replaces — a direct pass on the tasks (``split_half="off"``) and a pass on the halves alone — on a
real tiny GPT-2, with an odd number of training pairs so the halves differ in size (4 and 3) and a plain
average of the halves would be wrong."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import taskspace
from conftest import five_task_suite, make_tiny_model, make_word_tokenizer
from taskspace.models.loading import LoadedModel
from taskspace.probes import ProbeSettings
from taskspace.probes.gradient import halves as halves_mod
from taskspace.probes.gradient import similarity
from taskspace.probes.gradient.differentials import TaskGradients, task_gradients
from taskspace.probes.gradient.halves import FROM_HALVES, run_gradient_probes_with_halves
from taskspace.probes.output import HALVES_DIR
from taskspace.probes.registry import by_method
from taskspace.suites import Suite
from taskspace.suites.splits import SplitSizes, half_name, halve_suite

KINDS = tuple(by_method(m).name for m in (similarity.COSINE, similarity.JACCARD))
COS, JAC = (by_method(m).spaces[0].name for m in (similarity.COSINE, similarity.JACCARD))
#: 7 training pairs a task: halves of 4 and 3
SETTINGS = ProbeSettings(train_pairs=7, dev_pairs=0, eval_pairs=4, bootstrap=0)


@pytest.fixture(scope="module")
def lm(one_thread):
    tok = make_word_tokenizer()
    return LoadedModel(make_tiny_model("gpt2", vocab_size=len(tok), seed=3), tok, "tiny", "step7", "memory",
                       "cpu", "float32")


def two_passes(lm, suite: Suite, settings: ProbeSettings) -> tuple:
    """The route the one pass replaces: a direct pass on the tasks, then one on the halves alone (what
    ``taskspace.probe`` called for the split-half pass: the suite of halves, ``halves=True``)."""
    direct = taskspace.probe(lm, suite, KINDS, dataclasses.replace(settings, split_half="off"), progress=False)
    sizes = SplitSizes(settings.train_pairs, settings.dev_pairs, settings.eval_pairs)
    halved = halve_suite(suite, sizes, settings.seed, settings.tasks)
    alone = taskspace.probe(lm, halved, KINDS, dataclasses.replace(settings, halves=True, tasks=None),
                            progress=False)
    return direct, alone


def assert_same_as_two_passes(one, direct, alone) -> None:
    """Full spaces within 1e-6 (cosines) and equal (overlap), per module too; the halves' spaces bit for bit."""
    cos, d = one.spaces[COS], direct.spaces[COS]
    assert cos.tasks == d.tasks and cos.groups == d.groups
    assert np.abs(cos.matrix - d.matrix).max() <= 1e-6
    parts = [k for k in direct.spaces if "/" in k]
    assert parts and sorted(parts) == sorted(k for k in one.spaces if "/" in k and not k.startswith(HALVES_DIR))
    for k in parts:
        assert np.nanmax(np.abs(one.spaces[k].matrix - direct.spaces[k].matrix)) <= 1e-6, k
    # the masks are the top 5% of |ḡ_t|: ḡ_t differs from the direct one by rounding only, far below the gap
    # between the values at the cut on this model, so every mask — and the overlap — is the same
    np.testing.assert_array_equal(one.spaces[JAC].matrix, direct.spaces[JAC].matrix)
    for name in (COS, JAC):
        h, a = one.spaces[f"{HALVES_DIR}/{name}"], alone.spaces[name]
        assert h.tasks == a.tasks and h.groups == a.groups
        np.testing.assert_array_equal(h.matrix, a.matrix)
        assert h.provenance["gradient_pass"] == "direct"
        assert one.spaces[name].provenance["gradient_pass"] == FROM_HALVES
        assert direct.spaces[name].provenance["gradient_pass"] == "direct"
    table = "stats/distributedness.csv"
    got, want = one.tables[table][0], direct.tables[table][0]
    assert list(got["task"]) == list(want["task"]) and list(got["n_pairs"]) == list(want["n_pairs"])
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-6)
    np.testing.assert_array_equal(got["mask_size"], want["mask_size"])
    assert one.tables[table][1]["gradient_pass"] == FROM_HALVES


@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_one_pass_gives_the_two_passes_spaces(lm, mode):
    suite = five_task_suite()
    settings = dataclasses.replace(SETTINGS, gradient_mode=mode, sketch_dim=4096)
    one = taskspace.probe(lm, suite, KINDS, settings, progress=False)
    direct, alone = two_passes(lm, suite, settings)
    assert_same_as_two_passes(one, direct, alone)
    assert one.halves is None                                    # only its main spaces stay
    assert one.spaces[COS].provenance["n_train_pairs"] == {t: 7 for t in suite.tasks}
    h = one.spaces[f"{HALVES_DIR}/{COS}"]
    assert h.provenance["n_train_pairs"] == {t: 4 if t.endswith("~1") else 3 for t in h.tasks}
    assert h.provenance["gradient_mode"] == mode == one.spaces[COS].provenance["gradient_mode"]


def test_a_selection_of_tasks_in_another_order(lm):
    """``settings.tasks`` picks and orders the tasks; the halves follow them."""
    settings = dataclasses.replace(SETTINGS, tasks=("refl", "sv_plur", "det_sing"), gradient_mode="exact")
    one = taskspace.probe(lm, five_task_suite(), KINDS, settings, progress=False)
    direct, alone = two_passes(lm, five_task_suite(), settings)
    assert_same_as_two_passes(one, direct, alone)


def test_the_combined_gradient_is_the_pair_weighted_mean(lm):
    """ḡ_t from its halves equals the directly computed ḡ_t to float rounding; the plain mean of the halves
    (the wrong weighting with 4 and 3 pairs) is far off."""
    suite = five_task_suite()
    settings = dataclasses.replace(SETTINGS, gradient_mode="exact")
    half_settings = dataclasses.replace(settings, halves=True, tasks=None)
    halved = halve_suite(suite, SplitSizes(7, 0, 4), settings.seed)
    full, halves = run_gradient_probes_with_halves(lm, suite, settings, halved, half_settings, progress=False)
    direct = task_gradients(lm, None, settings.splits(suite)["train"], settings, progress=False)
    for t in suite.tasks:
        want = direct.flat(t).double()
        scale = float(want.abs().max())
        got = full.grads.flat(t).double()
        assert float((got - want).abs().max()) <= 1e-6 * scale, t
        a, b = (halves.grads.flat(half_name(t, k)).double() for k in (1, 2))
        assert float(((4 * a + 3 * b) / 7 - want).abs().max()) <= 1e-6 * scale
        assert float(((a + b) / 2 - want).abs().max()) > 1e-3 * scale
    assert full.grads.n_pairs == {t: 7 for t in suite.tasks}
    assert full.grads.provenance["gradient_pass"] == FROM_HALVES


def test_split_half_off_is_the_direct_pass_unchanged(lm, monkeypatch):
    """``split_half="off"`` makes the one direct pass (the one-pass route is never entered), and its spaces are
    those of run_gradient_probes bit for bit, with ``gradient_pass: "direct"``."""
    def refuse(*a, **k):
        raise AssertionError("the one-pass route ran with split_half off")

    monkeypatch.setattr("taskspace.probes.kinds.gradients.run_gradient_probes_with_halves", refuse)
    suite = five_task_suite()
    for mode in ("exact", "sketch"):
        settings = dataclasses.replace(SETTINGS, split_half="off", gradient_mode=mode, sketch_dim=4096)
        res = taskspace.probe(lm, suite, KINDS, settings, progress=False)
        assert not any(k.startswith(HALVES_DIR) for k in res.spaces)
        ref = similarity.run_gradient_probes(lm, suite, settings, probes=KINDS, progress=False)
        for name in (COS, JAC):
            np.testing.assert_array_equal(res.spaces[name].matrix, ref.spaces[name].matrix)
            assert res.spaces[name].provenance["gradient_pass"] == "direct"


def test_mixed_modes_follow_each_side(lm, monkeypatch):
    """``auto`` resolves per side as the two passes did: with a budget between T and 2T exact copies the
    tasks stay exact and the halves are sketched — in one pass as in two."""
    resolve = similarity.resolve_gradient_mode

    def budget(mode, n_parameters, n_tasks, budget_bytes=0):
        return resolve(mode, n_parameters, n_tasks, budget_bytes=n_parameters * 4 * 5)   # 5 tasks fit

    monkeypatch.setattr(similarity, "resolve_gradient_mode", budget)
    monkeypatch.setattr(halves_mod, "resolve_gradient_mode", budget)
    settings = dataclasses.replace(SETTINGS, sketch_dim=4096)
    one = taskspace.probe(lm, five_task_suite(), KINDS, settings, progress=False)
    assert one.spaces[COS].provenance["gradient_mode"] == "exact"
    assert one.spaces[f"{HALVES_DIR}/{COS}"].provenance["gradient_mode"] == "sketch"
    assert_same_as_two_passes(one, *two_passes(lm, five_task_suite(), settings))


@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_stores_hold_the_tasks_and_the_halves_apart(lm, tmp_path, mode):
    """``gradients_dir``: the tasks' ḡ_t (exact) or masks (sketch) in the folder, the halves' in
    ``<folder>/halves``; running the same call again over the same folders gives the same spaces."""
    suite = five_task_suite()
    settings = dataclasses.replace(SETTINGS, gradient_mode=mode, sketch_dim=4096)
    store = tmp_path / "g"
    first = taskspace.probe(lm, suite, KINDS, settings, progress=False, gradients_dir=str(store))
    again = taskspace.probe(lm, suite, KINDS, settings, progress=False, gradients_dir=str(store))
    for name in (COS, JAC, f"{HALVES_DIR}/{COS}", f"{HALVES_DIR}/{JAC}"):
        np.testing.assert_array_equal(first.spaces[name].matrix, again.spaces[name].matrix)
    if mode == "sketch":
        assert sorted(p.stem for p in (store / "masks").glob("*.npy")) == sorted(suite.tasks)
        assert len(list((store / HALVES_DIR / "masks").glob("*.npy"))) == 2 * len(suite.tasks)
        return
    tasks, halves = TaskGradients.open(store), TaskGradients.open(store / HALVES_DIR)
    assert tasks.tasks == suite.tasks and len(halves.tasks) == 2 * len(suite.tasks)
    assert tasks.provenance["gradient_pass"] == FROM_HALVES
    mem = first.extra[by_method(similarity.COSINE).job_kind].grads
    assert torch.equal(tasks.flat("refl"), mem.flat("refl"))


def test_a_runner_that_cannot_derive_the_tasks_makes_the_second_call(lm, monkeypatch):
    """When the halves are not a split of the tasks' pairs, the runner hands back no halves and
    ``taskspace.probe`` runs the halves pass itself: the same spaces as two passes, all direct."""
    monkeypatch.setattr(halves_mod, "halves_plan", lambda full, half: None)
    settings = dataclasses.replace(SETTINGS, gradient_mode="exact")
    one = taskspace.probe(lm, five_task_suite(), KINDS, settings, progress=False)
    direct, alone = two_passes(lm, five_task_suite(), settings)
    for name in (COS, JAC):
        np.testing.assert_array_equal(one.spaces[name].matrix, direct.spaces[name].matrix)
        np.testing.assert_array_equal(one.spaces[f"{HALVES_DIR}/{name}"].matrix, alone.spaces[name].matrix)
        assert one.spaces[name].provenance["gradient_pass"] == "direct"
