"""How much of a task space is signal (issue 18): halves of every task's pairs, split-half reliability,
self-similarity, noise ceilings, and bootstrap intervals over tasks on every summary.

Checked against independent computations: scipy's spearmanr on hand-built halves, rsatoolbox's noise
ceiling (when installed), spaces rebuilt by hand for the vectorised bootstrap, and the nominal coverage
of the intervals on synthetic spaces whose true within − between is known.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest
from scipy.stats import spearmanr

import taskspace
from conftest import five_task_suite, make_tiny_model, make_word_tokenizer, run_cli
from taskspace.analysis import compare_run
from taskspace.analysis.bootstrap import (
    paired_delta,
    percentile_ci,
    resample_tasks,
    rho_draws,
    task_counts,
    within_between_draws,
)
from taskspace.analysis.findings import finding_sharing
from taskspace.analysis.hypothesis import hypothesis_space
from taskspace.analysis.inference import rho_max
from taskspace.analysis.reliability import (
    ROW_FLAG,
    noise_ceiling,
    reliability,
    spearman_brown,
    split_space,
)
from taskspace.analysis.stats import within_between
from taskspace.errors import InputError
from taskspace.models.loading import LoadedModel
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace
from taskspace.suites import Pair, SplitSizes, Suite, split_suite
from taskspace.suites.splits import HALF_SEP, half_name, halve_suite, parse_half, split_halves

pytestmark = pytest.mark.usefixtures("one_thread")


# -- halves of the splits -----------------------------------------------------------------------------
def numbered_suite(n: int = 23, tasks=(("a", "x"), ("b", "x"), ("c", "y"))) -> Suite:
    return Suite([Pair(t, g, f"p{i}", f"{t} good {i}", f"{t} bad {i}") for t, g in tasks for i in range(n)],
                 name="numbered")


def test_half_names():
    assert half_name("anaphor_number_agreement", 2) == "anaphor_number_agreement~2" and HALF_SEP == "~"
    assert parse_half("a~1") == ("a", 1) and parse_half("a_b~2") == ("a_b", 2)
    for name in ("a", "a~3", "~1", "a~1~2", "a~"):
        assert parse_half(name) is None, name
    with pytest.raises(InputError, match="holds '~'"):
        half_name("odd~task", 1)
    with pytest.raises(ValueError):
        half_name("a", 3)


def test_halves_are_disjoint_equal_and_depend_only_on_seed_task_and_pair_id():
    suite = numbered_suite()
    settings = ProbeSettings(halves=True, train_pairs=9, dev_pairs=4, eval_pairs=7, seed=5)
    halves = settings.splits(suite)
    plain = split_suite(suite, SplitSizes(9, 4, 7), seed=5)
    assert halves["train"].tasks == ["a~1", "b~1", "c~1", "a~2", "b~2", "c~2"]
    assert [halves["train"].group_of(t) for t in ("a~1", "a~2", "c~2")] == ["x", "x", "y"]
    seen: dict[str, set] = {t: set() for t in suite.tasks}
    for split in ("train", "dev", "test"):
        counts = halves[split].counts()
        for t in suite.tasks:
            one = {p.pair_id for p in halves[split].pairs_of(half_name(t, 1))}
            two = {p.pair_id for p in halves[split].pairs_of(half_name(t, 2))}
            whole = [p.pair_id for p in plain[split].pairs_of(t)]
            assert not one & two                                   # disjoint
            assert one | two == set(whole)                         # together: the task's part of the split
            assert abs(counts[half_name(t, 1)] - counts[half_name(t, 2)]) <= 1   # equal up to one pair
            assert not (one | two) & seen[t]                       # no pair in two splits
            seen[t] |= one | two
            # alternate pairs of the seeded order
            assert [p.pair_id for p in halves[split].pairs_of(half_name(t, 1))] == whole[0::2]
    # only (seed, task, pair_id) matter: other tasks, the order of the pairs, the suite's name do not
    shuffled = list(suite.pairs)
    random.Random(1).shuffle(shuffled)
    bigger = Suite(shuffled + numbered_suite(5, (("d", "z"),)).pairs, name="other")
    again = settings.splits(bigger)
    for split in ("train", "dev", "test"):
        for t in suite.tasks:
            for k in (1, 2):
                assert ({p.pair_id for p in again[split].pairs_of(half_name(t, k))}
                        == {p.pair_id for p in halves[split].pairs_of(half_name(t, k))})
    other_seed = dataclasses.replace(settings, seed=6).splits(suite)
    assert [p.pair_id for p in other_seed["train"].pairs] != [p.pair_id for p in halves["train"].pairs]
    # selecting tasks, or single halves
    sel = dataclasses.replace(settings, tasks=("b", "c~2")).splits(suite)
    assert sel["train"].tasks == ["b~1", "b~2", "c~2"]
    assert sel["train"].pairs_of("b~1") == halves["train"].pairs_of("b~1")


def test_a_suite_of_halves_gives_the_same_splits_and_halves_are_refused_when_impossible():
    suite = numbered_suite()
    settings = ProbeSettings(halves=True, train_pairs=9, dev_pairs=4, eval_pairs=7, seed=5)
    hs = halve_suite(suite, SplitSizes(9, 4, 7), 5)
    assert hs.tasks == ["a~1", "b~1", "c~1", "a~2", "b~2", "c~2"] and len(hs) == len(suite)
    direct, via = settings.splits(suite), settings.splits(hs)
    for split in direct:
        assert [(p.task, p.pair_id) for p in direct[split]] == [(p.task, p.pair_id) for p in via[split]]
    lone = hs.select(["a~1", "b~1", "b~2"])
    with pytest.raises(InputError, match="without its other half"):
        settings.splits(lone)
    with pytest.raises(InputError, match="holds '~'"):
        settings.splits(numbered_suite(6, (("odd~name", "g"),)))
    with pytest.raises(InputError, match="halves need"):
        ProbeSettings(halves=True, train_pairs=1)
    with pytest.raises(InputError, match="halves must be"):
        ProbeSettings(halves="yes")  # type: ignore[arg-type]
    # without halves a '~' in a task name is nobody's business
    assert ProbeSettings().splits(numbered_suite(6, (("odd~name", "g"),)))["train"].tasks == ["odd~name"]


# -- reliability on hand-built halves -----------------------------------------------------------------
def halves_space(first: np.ndarray, second: np.ndarray, cross: np.ndarray, tasks, groups,
                 cross_back: np.ndarray | None = None, kind: str = "gradients") -> TaskSpace:
    n = len(tasks)
    m = np.zeros((2 * n, 2 * n))
    m[:n, :n], m[n:, n:], m[:n, n:] = first, second, cross
    m[n:, :n] = cross.T if cross_back is None else cross_back
    names = [half_name(t, 1) for t in tasks] + [half_name(t, 2) for t in tasks]
    return TaskSpace(m, names, list(groups) * 2, kind)


def test_reliability_against_a_hand_computation():
    tasks, groups = ["a", "b", "c", "d", "e"], ["x", "x", "y", "y", "y"]
    rng = np.random.default_rng(3)
    sym = lambda m: (m + m.T) / 2  # noqa: E731
    first = sym(rng.normal(size=(5, 5)))
    second = sym(first + 0.7 * rng.normal(size=(5, 5)))
    cross = sym(first + 0.5 * rng.normal(size=(5, 5)))
    np.fill_diagonal(first, 1.0)
    np.fill_diagonal(second, 1.0)
    np.fill_diagonal(cross, [0.9, 0.8, -0.5, 0.7, 0.6])           # c's halves disagree
    # the full 2T × 2T space written in an interleaved order: the blocks are found by name
    hs = halves_space(first, second, cross, tasks, groups)
    order = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]
    hs = TaskSpace(hs.matrix[np.ix_(order, order)], [hs.tasks[i] for i in order], [hs.groups[i] for i in order],
                   hs.kind)
    h = split_space(hs)
    assert h.tasks == tasks and np.array_equal(h.first, first) and np.array_equal(h.cross, cross)
    iu = np.triu_indices(5, 1)
    r = spearmanr(first[iu], second[iu])[0]                       # one triangle by hand
    out = reliability(hs)
    assert out["split_half"] == pytest.approx(r) and out["reliability"] == pytest.approx(2 * r / (1 + r))
    ranks = (spearmanr(first[iu], first[iu])[0], None)            # noqa: F841 (scipy is the reference)
    from scipy.stats import rankdata
    pooled = (rankdata(first[iu]) + rankdata(second[iu])) / 2
    upper = (spearmanr(pooled, first[iu])[0] + spearmanr(pooled, second[iu])[0]) / 2
    assert out["noise_ceiling"]["lower"] == pytest.approx(r) and out["noise_ceiling"]["upper"] == pytest.approx(upper)
    hyp = hypothesis_space(groups)
    rho_h = [spearmanr(first[iu], hyp[iu])[0], spearmanr(second[iu], hyp[iu])[0]]
    assert out["theory"]["rho_halves"] == pytest.approx(rho_h)
    # ρ with a 1/0 hypothesis is capped at ρ_max(H): the bound is scaled by it
    assert out["theory"]["fraction_of_upper"] == pytest.approx(np.mean(rho_h) / (rho_max(groups) * upper))
    # per task: the row's entries (row and column: one for a symmetric space) in each half
    rows = {t["task"]: t for t in out["tasks"]}
    for i, t in enumerate(tasks):
        keep = [j for j in range(5) if j != i]
        rr = spearmanr(first[i, keep], second[i, keep])[0]
        assert rows[t]["row_r"] == pytest.approx(rr) and rows[t]["row_reliability"] == pytest.approx(spearman_brown(rr))
        assert rows[t]["self_similarity"] == pytest.approx(cross[i, i])
        assert rows[t]["others_mean"] == pytest.approx(cross[i, keep].mean())
    between = cross[~np.eye(5, dtype=bool)].mean()
    expect = [t for i, t in enumerate(tasks)
              if spearman_brown(spearmanr(first[i, [j for j in range(5) if j != i]],
                                          second[i, [j for j in range(5) if j != i]])[0]) < ROW_FLAG
              or cross[i, i] <= between]
    assert "c" in expect and out["flagged"] == expect
    assert out["self_similarity"]["min"] == pytest.approx(-0.5) and out["self_similarity"]["n"] == 5
    # with the full space beside it: ρ(H, full) against the pair-sampling ceiling ρ_max(H) · sqrt(reliability)
    full = TaskSpace((first + second) / 2, tasks, groups, "gradients")
    out = reliability(hs, full)
    rho_full = spearmanr(full.matrix[iu], hyp[iu])[0]
    ceiling = rho_max(groups) * math.sqrt(2 * r / (1 + r))
    assert out["full"]["rho"] == pytest.approx(rho_full)
    assert out["full"]["rho_max"] == pytest.approx(rho_max(groups)) and out["full"]["ceiling"] == pytest.approx(ceiling)
    if 2 * r / (1 + r) >= 0.2:
        assert out["full"]["fraction"] == pytest.approx(rho_full / ceiling) and out["full"]["withheld"] is None
    else:                                 # a reliability this low: the share of its ceiling is withheld
        assert math.isnan(out["full"]["fraction"]) and out["full"]["withheld"]


def test_asymmetric_halves_use_both_triangles_and_both_cross_blocks():
    tasks, groups = list("abcd"), list("xxyy")
    rng = np.random.default_rng(4)
    first, second = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cross, back = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    hs = halves_space(first, second, cross, tasks, groups, cross_back=back, kind="transfer")
    off = ~np.eye(4, dtype=bool)
    out = reliability(hs)
    assert out["split_half"] == pytest.approx(spearmanr(first[off], second[off])[0])
    rows = {t["task"]: t for t in out["tasks"]}
    keep = [1, 2, 3]
    assert rows["a"]["self_12"] == cross[0, 0] and rows["a"]["self_21"] == back[0, 0]
    assert rows["a"]["self_similarity"] == pytest.approx((cross[0, 0] + back[0, 0]) / 2)
    assert rows["a"]["row_r"] == pytest.approx(spearmanr(np.r_[first[0, keep], first[keep, 0]],
                                                         np.r_[second[0, keep], second[keep, 0]])[0])
    assert rows["a"]["others_mean"] == pytest.approx(np.r_[cross[0, keep], back[0, keep]].mean())
    # a task with one half only is listed, not used
    partial = hs.select([t for t in hs.tasks if t != "d~2"])
    assert split_space(partial).missing == ["d"] and reliability(partial)["n_tasks"] == 3


def test_noise_ceiling_agrees_with_rsatoolbox():
    rsa = pytest.importorskip("rsatoolbox")
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(10, 10))
    truth = truth + truth.T
    iu = np.triu_indices(10, 1)
    for noise in (0.1, 1.0, 5.0):
        a = truth + noise * (lambda m: m + m.T)(rng.normal(size=(10, 10)))
        b = truth + noise * (lambda m: m + m.T)(rng.normal(size=(10, 10)))
        rdms = rsa.rdm.RDMs(np.stack([-a[iu], -b[iu]]))        # dissimilarity = −similarity
        lower, upper = rsa.inference.boot_noise_ceiling(rdms, method="spearman")
        mine = noise_ceiling(a, b)
        assert mine["lower"] == pytest.approx(lower, abs=1e-12) and mine["upper"] == pytest.approx(upper, abs=1e-12)


def vector_halves(signal: float, noise: float, *, n_groups: int = 6, per_group: int = 6, dim: int = 64,
                  seed: int = 0) -> TaskSpace:
    """Cosines of task vectors (group centre × signal + a task's own part) measured twice, each half with
    its own noise: what the gradient probe gives for two halves of the pairs."""
    rng = np.random.default_rng(seed)
    groups = [f"g{i}" for i in range(n_groups) for _ in range(per_group)]
    centres = rng.normal(size=(n_groups, dim))
    true = np.stack([signal * centres[int(g[1:])] + 0.3 * rng.normal(size=dim) for g in groups])
    v = np.vstack([true + noise * rng.normal(size=true.shape), true + noise * rng.normal(size=true.shape)])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    n = len(groups)
    names = [half_name(f"t{i}", 1) for i in range(n)] + [half_name(f"t{i}", 2) for i in range(n)]
    return TaskSpace(v @ v.T, names, groups * 2, "gradients")


def test_pure_noise_has_a_ceiling_near_zero_and_planted_structure_near_one():
    noise = reliability(vector_halves(0.0, 5.0, seed=1))
    assert abs(noise["split_half"]) < 0.1 and abs(noise["noise_ceiling"]["lower"]) < 0.1
    assert noise["reliability"] < 0.2 and len(noise["flagged"]) > 18
    # with two halves the upper bound is at least about sqrt(1/2) whatever the data: only the lower bound
    # and the attenuation ceiling of the full space can say "no signal"
    assert noise["noise_ceiling"]["upper"] > 0.65
    clean = reliability(vector_halves(1.0, 0.05, seed=1))
    assert clean["noise_ceiling"]["lower"] > 0.95 and clean["noise_ceiling"]["upper"] > 0.98
    assert clean["full"]["ceiling"] == pytest.approx(clean["full"]["rho_max"] * math.sqrt(clean["reliability"]))
    assert clean["reliability"] > 0.98 and clean["flagged"] == []
    assert noise["full"]["withheld"]                     # no share of a ceiling that noise sets
    assert clean["self_similarity"]["min"] > clean["between"]["max"]
    assert clean["theory"]["fraction_of_upper"] > 0.5


# -- the bootstrap ------------------------------------------------------------------------------------
def test_vectorised_bootstrap_equals_spaces_rebuilt_by_hand():
    groups = [g for g in "abcd" for _ in range(4)]
    n = len(groups)
    rng = np.random.default_rng(1)
    m = np.round(rng.normal(size=(n, n)), 1)          # ties on purpose
    other = np.round(rng.normal(size=(n, n)), 1)
    h = hypothesis_space(groups)
    idx = resample_tasks(groups, 50, seed=3)
    g = np.asarray(groups)
    assert all((g[row] == g).all() for row in idx)     # drawn within each task's group
    counts = task_counts(idx, n)
    wb = within_between_draws(m, groups, counts)["difference"]
    rho, rho_other = rho_draws(m, h, counts), rho_draws(m, other, counts)
    free = rng.normal(size=(n, n))                    # no ties: the ranks skip the tie runs
    assert np.unique(free).size == n * n
    rho_free = rho_draws(free, other, counts)
    for b, ix in enumerate(idx):
        sub, valid = m[np.ix_(ix, ix)], ix[:, None] != ix[None, :]
        # the gap of the rebuilt space by hand: per group, within − its entries with other tasks, then the mean
        gaps = []
        for grp in dict.fromkeys(groups):
            ins = g[ix] == grp
            w = sub[np.ix_(ins, ins)][valid[np.ix_(ins, ins)]]
            if w.size:
                gaps.append(w.mean() - np.concatenate([sub[np.ix_(ins, ~ins)].ravel(), sub[np.ix_(~ins, ins)].ravel()]).mean())
        assert wb[b] == pytest.approx(np.mean(gaps))
        assert rho[b] == pytest.approx(spearmanr(sub[valid], h[np.ix_(ix, ix)][valid])[0])
        assert rho_other[b] == pytest.approx(spearmanr(sub[valid], other[np.ix_(ix, ix)][valid])[0])
        assert rho_free[b] == pytest.approx(spearmanr(free[np.ix_(ix, ix)][valid], other[np.ix_(ix, ix)][valid])[0])


def test_intervals_cover_a_known_within_minus_between_at_their_nominal_rate():
    """x_t = μ_g + ε_t with orthogonal group centres, |μ_g|² = s: E[x_a·x_b] is s inside a group and 0
    across, so the true within − between is s. 200 spaces, 1000 resamples each."""
    s, dim, groups = 0.2, 32, [f"g{i}" for i in range(6) for _ in range(5)]
    gi = np.array([int(g[1:]) for g in groups])
    centres = np.zeros((6, dim))
    centres[np.arange(6), np.arange(6)] = math.sqrt(s)
    rng = np.random.default_rng(0)
    hits = 0
    for r in range(200):
        x = centres[gi] + rng.normal(size=(len(groups), dim)) / math.sqrt(dim)
        counts = task_counts(resample_tasks(groups, 1000, seed=r), len(groups))
        lo, hi = percentile_ci(within_between_draws(x @ x.T, groups, counts)["difference"])
        hits += lo <= s <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_delta_and_verdicts_follow_the_intervals():
    tasks, groups = [f"t{i}" for i in range(12)], [g for g in "abcd" for _ in range(3)]
    h = hypothesis_space(groups)
    rng = np.random.default_rng(2)
    weak = TaskSpace(0.1 * h + 0.05 * rng.normal(size=h.shape), tasks, groups, "overlap")
    strong = TaskSpace(0.3 * h + 0.05 * rng.normal(size=h.shape), tasks, groups, "overlap")
    d = paired_delta(weak, strong, statistic="difference", resamples=500)
    expect = (within_between(strong.matrix, groups)["difference"] - within_between(weak.matrix, groups)["difference"])
    assert d["delta"] == pytest.approx(expect) and d["ci"][0] > 0 and d["n_tasks"] == 12
    # the sharing finding reads the trend's one-sided p, Holm-adjusted across models
    def cmp_with(*trends):
        return {"dynamics": {f"m{i}": {"overlap": {"revisions": ["step0", "step9"], "difference": [0.0, 0.1],
                                                   "trend": t}} for i, t in enumerate(trends)}}
    up = {"slope": 0.1, "ci": [0.02, 0.2], "p_up": 0.001, "p_down": 0.999}
    down = {"slope": -0.1, "ci": [-0.2, -0.02], "p_up": 0.999, "p_down": 0.001}
    flat = {"slope": 0.01, "ci": [-0.02, 0.2], "p_up": 0.2, "p_down": 0.8}
    assert finding_sharing(cmp_with(up))["verdict"] == "reproduced"
    assert finding_sharing(cmp_with(flat))["verdict"] == "inconclusive"
    assert finding_sharing(cmp_with(up, flat))["verdict"] == "partly reproduced"
    assert finding_sharing(cmp_with(up, down))["verdict"] == "contradictory"
    assert finding_sharing(cmp_with(down, flat))["verdict"] == "not reproduced"
    # Holm: two models at p 0.03 each are both up (0.06 / 0.03 → adjusted 0.06, 0.06): neither counts
    borderline = {"slope": 0.1, "ci": [0.0, 0.2], "p_up": 0.03, "p_down": 0.97}
    assert finding_sharing(cmp_with(borderline, borderline))["verdict"] == "inconclusive"
    withheld = {"slope": 0.1, "ci": [float("nan")] * 2, "p_up": float("nan"), "p_down": float("nan"),
                "withheld": "intervals withheld: 3 of 3 groups have fewer than 3 tasks"}
    res = finding_sharing(cmp_with(withheld))
    assert res["verdict"] == "inconclusive" and "withheld" in res["this_run"]


# -- a real probe on halves, end to end ----------------------------------------------------------------
def halves_suite() -> Suite:
    return five_task_suite("mini-halves")


def test_gradients_on_halves_end_to_end(tiny_model_dir, tmp_path):
    """``taskspace probe gradients`` has no --halves option until the registry lists ``halves`` among the
    probe's reads, so the probe runs from Python (the call the CLI makes); compare and report then read
    DIR/spaces/halves/ as a run will write it."""
    lm = taskspace.load_model(str(tiny_model_dir), "step10")
    suite = halves_suite()
    plain = ProbeSettings(train_pairs=8, dev_pairs=0, eval_pairs=4)
    halves = dataclasses.replace(plain, halves=True)
    out = tmp_path / "g"
    taskspace.probe(lm, suite, ("gradients", "overlap"), plain, progress=False).save(out)
    res = taskspace.probe(lm, suite, ("gradients", "overlap"), halves, progress=False)
    g = res.spaces["gradients"]
    T = len(suite.tasks)
    assert g.matrix.shape == (2 * T, 2 * T)
    assert g.tasks == [half_name(t, 1) for t in suite.tasks] + [half_name(t, 2) for t in suite.tasks]
    assert g.provenance["settings"]["halves"] is True
    assert g.provenance["n_train_pairs"] == {t: 4 for t in g.tasks}
    for name in ("gradients", "overlap"):
        res.spaces[name].save(out / "spaces" / "halves" / name)
    # the cross block's diagonal is each task's self-similarity: cos of its two half vectors, by hand
    grads = res.extra["gradients"].grads
    a, b = grads.flat("refl~1").double(), grads.flat("refl~2").double()
    cos = float((a @ b) / (a.norm() * b.norm()))
    assert g.matrix[g.tasks.index("refl~1"), g.tasks.index("refl~2")] == pytest.approx(cos, abs=1e-5)
    rel = reliability(g, TaskSpace.load(out / "spaces" / "gradients"))
    assert rel["n_tasks"] == T and -1 <= rel["split_half"] <= 1 and math.isfinite(rel["full"]["rho"])
    cmp = compare_run(out, permutations=99, bootstrap=200)
    cell = cmp["cells"][0]
    assert set(cell["reliability"]) == {"gradients", "overlap"}
    entry = cell["spaces"]["gradients"]["reliability"]
    assert entry["split_half"] == pytest.approx(rel["split_half"]) and "tasks" not in entry
    assert len(cell["reliability"]["gradients"]["tasks"]) == T
    s = cell["spaces"]["gradients"]["signed"]
    assert len(s["difference_ci"]) == 2 and len(s["rho_ci"]) == 2
    # the command line prints reliability and ceiling beside ρ; the report shows them
    r = run_cli("compare", out, "--permutations", "99", "--bootstrap", "100")
    assert r.returncode == 0, r.stderr
    assert "how much of each space is signal" in r.stdout and "split-half r" in r.stdout and "ceil" in r.stdout
    on_disk = json.loads((out / "comparison.json").read_text())
    assert on_disk["cells"][0]["spaces"]["gradients"]["reliability"]["noise_ceiling"]["lower"] is not None
    from taskspace.report import build_report

    page = build_report(out).read_text()
    assert 'id="reliability"' in page and "How much of each space is signal" in page
    # intervals where the groups allow a task resample to vary them, else withheld with the reason
    if entry.get("interval_withheld"):
        assert "split_half_ci" not in entry and "fewer than 3" in entry["interval_withheld"]
    else:
        assert 'class="ci"' in page and len(entry["split_half_ci"]) == 2


def test_every_probe_gets_halves_from_a_suite_of_halves():
    """Probes that list their tasks from the suite (activations, latent, lookahead, ablation, transfer)
    run on halves when given :func:`halve_suite`; their splits are the same halves."""
    tok = make_word_tokenizer()
    lm = LoadedModel(make_tiny_model("gpt2", vocab_size=len(tok), seed=2), tok, "tiny", "step7", "memory",
                     "cpu", "float32")
    suite = halves_suite()
    settings = ProbeSettings(halves=True, train_pairs=6, dev_pairs=0, eval_pairs=4)
    hs = halve_suite(suite, SplitSizes(6, 0, 4), settings.seed)
    a = taskspace.probe(lm, hs, "activations", settings, progress=False).spaces["activations"]
    assert a.tasks == hs.tasks and a.matrix.shape == (10, 10)
    out = reliability(a)
    assert out["n_tasks"] == 5 and len(out["tasks"]) == 5
    with pytest.raises(InputError, match="no train pairs"):
        taskspace.probe(lm, suite, "activations", settings, progress=False)
    assert split_halves(suite, SplitSizes(6, 0, 4), 0)["train"].pairs == settings.splits(hs)["train"].pairs
