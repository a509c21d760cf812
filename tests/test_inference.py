"""Calibration of the inference itself, on synthetic spaces whose truth is known (seeded, fast).

Under the null each test rejects at about its level; intervals cover the truth at about their nominal
rate or the method refuses the design; structure planted in either declared direction is found; the
dynamics rule says "inconclusive" on noise and "sudden" on a planted reorganisation; a perfectly grouped
space reaches 1 of its attainable agreement.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from taskspace.analysis.bootstrap import percentile_ci, resample_tasks, task_counts, within_between_draws
from taskspace.analysis.compare import summarize_space
from taskspace.analysis.dynamics import stability
from taskspace.analysis.hypothesis import hypothesis_space
from taskspace.analysis.inference import auc, bh, holm, interval_design, min_p, rho_max, sign_test
from taskspace.analysis.stats import mantel, spearman_offdiagonal
from taskspace.spaces import TaskSpace, within_between

GROUPS = [f"g{i}" for i in range(5) for _ in range(4)]
TASKS = [f"t{i}" for i in range(len(GROUPS))]


def sym_noise(rng, n: int, scale: float = 1.0) -> np.ndarray:
    e = rng.normal(size=(n, n)) * scale
    return (e + e.T) / 2


def test_mantel_false_positive_rate_under_the_null_is_the_level():
    rng = np.random.default_rng(0)
    h = hypothesis_space(GROUPS)
    ps = [mantel(sym_noise(rng, len(GROUPS)), h, permutations=99, seed=i)["p"] for i in range(300)]
    rate = float(np.mean(np.array(ps) <= 0.05))
    # 300 null spaces: Monte-Carlo s.d. of the rate is 0.013
    assert 0.015 <= rate <= 0.09, rate


def test_ari_permutation_p_is_calibrated_under_the_null():
    rng = np.random.default_rng(1)
    ps = [summarize_space(TaskSpace(sym_noise(rng, 20), TASKS, GROUPS, "gradients"), permutations=99,
                          bootstrap=0, seed=i)["ari_p"] for i in range(150)]
    rate = float(np.mean(np.array(ps) <= 0.05))
    assert rate <= 0.1, rate


def test_planted_structure_is_found_in_its_declared_direction_and_not_in_the_other():
    rng = np.random.default_rng(2)
    h = hypothesis_space(GROUPS)
    drops = -0.5 * h + 0.5 * (1 - h) + 0.1 * sym_noise(rng, len(GROUPS))   # related tasks drop more
    erasure = summarize_space(TaskSpace(drops, TASKS, GROUPS, "erasure"), permutations=199, bootstrap=200)
    d = erasure["signed"]
    assert erasure["related"] == "lower" and d["tested"]
    assert d["p"] <= 0.01 and d["difference"] > 0.9 and d["auc"] == pytest.approx(1.0)
    assert d["difference_ci"][0] > 0 and erasure["ari"] == pytest.approx(1.0) and erasure["ari_p"] <= 0.01
    assert d["within"] < 0 < d["between"]                   # shown in the space's own units
    # the same matrix read as "higher = related" (a cosine space) has no such structure
    cosine = summarize_space(TaskSpace(drops, TASKS, GROUPS, "gradients"), permutations=199, bootstrap=0)
    assert cosine["signed"]["p"] > 0.9 and cosine["signed"]["difference"] < 0
    # only the declared reading is tested
    assert cosine["absolute"]["p"] is None and not cosine["absolute"]["tested"]


def test_a_perfectly_grouped_space_reaches_one_of_its_attainable_agreement():
    h = hypothesis_space(GROUPS)
    ranks = np.arange(h.size, dtype=float).reshape(h.shape) / h.size      # untied entries
    perfect = h + 0.01 * ranks
    s = summarize_space(TaskSpace(perfect, TASKS, GROUPS, "gradients"), permutations=99, bootstrap=0)
    assert s["signed"]["auc"] == pytest.approx(1.0) and s["signed"]["rho_ratio"] == pytest.approx(1.0)
    # ρ itself is capped far below 1 by the hypothesis' ties
    assert s["rho_max"] == pytest.approx(s["signed"]["rho"]) and s["rho_max"] < 0.7
    # for a space without ties ρ ÷ ρ_max = 2·AUC − 1 exactly
    noisy = np.random.default_rng(3).normal(size=h.shape)
    assert spearman_offdiagonal(noisy, h) / rho_max(GROUPS) == pytest.approx(2 * auc(noisy, GROUPS) - 1)


def test_smallest_attainable_p_of_six_tasks_in_three_pairs():
    groups = ["a", "a", "b", "b", "c", "c"]
    assert min_p(groups) == pytest.approx(48 / 720)
    h = hypothesis_space(groups)
    best = mantel(h + 0.001 * np.arange(36).reshape(6, 6), h, permutations=999)   # exact: 720 permutations
    assert best["exact"] and best["p"] == pytest.approx(min_p(groups))
    assert min_p(GROUPS, permutations=99) == pytest.approx(0.01)


def _coverage(sizes: list[int], reps: int, resamples: int = 400) -> float:
    """x_t = μ_g + ε_t with orthogonal group centres, |μ_g|² = s: E[x_a·x_b] = s within a group and 0
    across, so the true gap (per group and on average) is s."""
    groups = [f"g{i}" for i, k in enumerate(sizes) for _ in range(k)]
    gi = np.array([int(g[1:]) for g in groups])
    s, dim, n = 0.2, 32, len(groups)
    centres = np.zeros((len(sizes), dim))
    centres[np.arange(len(sizes)), np.arange(len(sizes))] = math.sqrt(s)
    rng = np.random.default_rng(4)
    hits = 0
    for r in range(reps):
        x = centres[gi] + rng.normal(size=(n, dim)) / math.sqrt(dim)
        counts = task_counts(resample_tasks(groups, resamples, seed=r), n)
        lo, hi = percentile_ci(within_between_draws(x @ x.T, groups, counts)["difference"])
        hits += lo <= s <= hi
    return hits / reps


@pytest.mark.parametrize("sizes", [[3] * 4, [2] * 4 + [7, 7, 5, 8, 7, 8, 4, 6, 7]], ids=["3-task groups", "BLiMP"])
def test_gap_intervals_cover_at_their_nominal_rate(sizes):
    assert interval_design([f"g{i}" for i, k in enumerate(sizes) for _ in range(k)])[0]
    # 120 repetitions: Monte-Carlo s.d. 0.02 around 0.95; the bootstrap may be conservative, never liberal
    assert 0.9 <= _coverage(sizes, reps=120) <= 1.0


def test_designs_of_two_task_groups_are_refused_and_the_verdicts_say_so():
    groups = ["a", "a", "b", "b", "c", "c"]
    ok, why = interval_design(groups)
    assert not ok and "fewer than 3 tasks" in why
    space = TaskSpace(hypothesis_space(groups), list("uvwxyz"), groups, "gradients")
    s = summarize_space(space, permutations=99, bootstrap=200)
    assert s["interval_withheld"] and all(math.isnan(x) for x in s["signed"]["difference_ci"])


def test_gap_weights_every_group_once():
    groups = ["big"] * 6 + ["small"] * 2 + ["other"] * 2
    m = np.zeros((10, 10))
    m[:6, :6] = 1.0                                             # only the big group is grouped
    wb = within_between(m, groups)
    assert wb["groups"]["big"]["gap"] == pytest.approx(1.0) and wb["groups"]["small"]["gap"] == pytest.approx(0.0)
    assert wb["difference"] == pytest.approx(1.0 / 3)           # a pooled mean would give 30 of 34 within cells


def _halves(rng, truth: np.ndarray, noise: float, groups: list[str], tasks: list[str]) -> TaskSpace:
    n = len(tasks)
    a, b = truth + sym_noise(rng, n, noise), truth + sym_noise(rng, n, noise)
    m = np.block([[a, (a + b) / 2], [(a + b) / 2, b]])
    return TaskSpace(m, [f"{t}~1" for t in tasks] + [f"{t}~2" for t in tasks], groups + groups, "gradients")


def _dynamics(kind: str, noise: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = 20
    groups, tasks = GROUPS[:n], TASKS[:n]
    steps = [0, 100, 200, 400, 800, 1600, 3200]
    base, other = sym_noise(rng, n), sym_noise(rng, n)
    truths = {"noise": [np.zeros((n, n))] * len(steps),
              "sudden": [base] * (len(steps) - 1) + [other],
              "smooth": [base + 0.05 * k * other for k in range(len(steps))]}[kind]
    hs = [_halves(rng, t, noise, groups, tasks) for t in truths]
    return stability([f"step{s}" for s in steps], hs, untrained=[s == 0 for s in steps], resamples=200, seed=seed)


def test_dynamics_says_inconclusive_on_noise_and_sudden_on_a_planted_reorganisation():
    assert [_dynamics("noise", 1.0, s)["verdict"] for s in range(5)] == ["inconclusive"] * 5
    planted = [_dynamics("sudden", 0.35, s) for s in range(5)]           # half reliability ~0.89
    assert all(p["verdict"] == "sudden" for p in planted)
    assert all(min(p["half_r"]) >= 0.8 for p in planted)
    assert all(p["labels"][int(np.argmax(p["ratio"]))] == "step1600→step3200" for p in planted)
    calm = _dynamics("smooth", 0.1, 0)
    assert calm["verdict"] == "smooth" and calm["detectable"] < 3


def test_dynamics_needs_four_transitions_after_the_onset_of_training():
    rng = np.random.default_rng(5)
    hs = [_halves(rng, np.eye(20), 0.1, GROUPS, TASKS) for _ in range(4)]
    out = stability(["step0", "step1", "step2", "step3"], hs, untrained=[True, False, False, False])
    assert out["verdict"] == "inconclusive" and "2 transition" in out["reason"]


def test_multiple_testing_corrections_against_hand_values():
    assert bh([0.01, 0.04, 0.03, float("nan"), 0.5])[:3] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3])
    assert math.isnan(bh([0.01, float("nan")])[1])
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert sign_test(5, 5) == pytest.approx(1 / 32) and sign_test(0, 3) == pytest.approx(1.0)


def _pair_table(task_of: list[str], margin: np.ndarray):
    import pandas as pd

    return pd.DataFrame({"task": task_of, "margin": margin, "correct": margin > 0})


def test_causal_rows_get_a_rank_p_against_the_pool_and_bh_across_rows():
    from taskspace.probes.causal import causal_count, causal_table

    rng = np.random.default_rng(6)
    tasks, groups = [f"t{i}" for i in range(8)], ["a"] * 4 + ["b"] * 4
    task_of = [t for t in tasks for _ in range(30)]
    base_m = rng.normal(1.0, 1.0, size=len(task_of))
    base = _pair_table(task_of, base_m)
    pool = [_pair_table(task_of, base_m + rng.normal(0, 0.05, size=base_m.size)) for _ in range(99)]
    changed = {}
    for i, t in enumerate(tasks):
        m = base_m.copy()
        if i < 3:                                   # erasing the first three rows' directions hurts them
            m[np.array(task_of) == t] -= 1.0
        else:                                       # the others do no more than a random direction
            m = m + rng.normal(0, 0.05, size=m.size)
        changed[t] = _pair_table(task_of, m)
    table = causal_table(base, changed, {t: pool for t in tasks}, tasks, groups, sign=-1, bootstrap=200, seed=0)
    assert table["p_rank"].iloc[:3].tolist() == pytest.approx([0.01] * 3)      # 1 / (1 + 99): above every draw
    assert table["causal"].iloc[:3].all() and not table["causal"].iloc[3:].any()
    assert (table["selectivity_low"].iloc[:3] > 0).all()
    c = causal_count(table)
    assert c["n_causal"] == 3 and c["expected_p"] == pytest.approx(0.4) and c["min_p"] == pytest.approx(0.01)
    # 19 directions: the rank p is 0.05 at best, but the pool's continuous p lets BH pass the three rows
    # over many rows (with the rank p alone a row could pass only if every row sat at 1/20)
    small = causal_table(base, changed, {t: pool[:19] for t in tasks}, tasks, groups, sign=-1, bootstrap=0, seed=0)
    c = causal_count(small)
    assert c["min_p"] == pytest.approx(0.05) and c["n_rank"] == 3
    assert c["n_causal"] == 3 and small["causal"].iloc[:3].all() and not small["causal"].iloc[3:].any()


def test_the_pool_p_is_calibrated_when_the_own_direction_is_one_more_draw():
    from taskspace.probes.causal import pool_p

    rng = np.random.default_rng(9)
    draws = rng.normal(size=(2000, 20))
    ps = np.array([pool_p(d[0], d[1:]) for d in draws])         # own = one more draw from the pool's law
    assert abs(float(np.mean(ps <= 0.05)) - 0.05) < 0.015      # Monte-Carlo s.d. 0.005
    assert pool_p(10.0, draws[0, 1:]) < 1e-6 and np.isnan(pool_p(1.0, [0.0, 0.0, 0.0]))


def test_normalised_rows_whose_self_transfer_is_not_measurably_positive_are_left_out():
    from taskspace.analysis.collect import mask_unreliable_rows
    from taskspace.analysis.stats import coverage

    tasks, groups = ["a", "b", "c", "d"], ["x", "x", "y", "y"]
    raw = np.array([[1.0, 0.5, 0.0, 0.1], [0.4, 0.02, 0.1, 0.0], [0.0, 0.1, 2.0, 1.0], [0.1, 0.0, 0.9, 1.5]])
    low = raw - 0.1                                # b's self-transfer interval [−0.08, 0.12] holds 0
    norm = raw / np.abs(np.diag(raw))[:, None]     # b's row is 25× its self-transfer: the row that explodes
    spaces = {"transfer": TaskSpace(raw, tasks, groups, "transfer", {}, low, raw + 0.1),
              "transfer_normalized": TaskSpace(norm, tasks, groups, "transfer_normalized")}
    masked = mask_unreliable_rows("transfer_normalized", spaces["transfer_normalized"], spaces)
    assert np.isnan(masked.matrix[1]).all() and np.isfinite(np.delete(masked.matrix, 1, 0)).all()
    assert masked.provenance["rows_masked"] == ["b"]
    cov = coverage(masked.matrix, tasks, masked.provenance["rows_masked"])
    assert cov["complete"] and cov["masked"] == ["b"] and cov["missing"] == []
    # a space that normalises nothing, or has no interval to judge by, is left alone
    assert mask_unreliable_rows("transfer", spaces["transfer"], spaces) is spaces["transfer"]


def test_control_directions_matched_to_the_residual_covariance_fall_where_it_varies():
    from taskspace.probes.causal import random_directions, variance_share

    cov = np.diag([100.0, 50.0] + [0.01] * 30)          # an anisotropic residual stream: two loud dimensions
    matched = random_directions(32, 200, 0, "", 1, cov)
    iso = random_directions(32, 200, 0, "", 1)
    assert np.allclose(np.linalg.norm(matched, axis=1), 1.0)
    assert (matched[:, :2] ** 2).sum(1).mean() > 0.95 > 0.2 > (iso[:, :2] ** 2).sum(1).mean()
    assert variance_share(matched, cov).mean() > 0.3 > 0.1 > variance_share(iso, cov).mean()
    # seeded: the same pool for the same (seed, layer), another for another layer
    assert np.array_equal(matched, random_directions(32, 200, 0, "", 1, cov))
    assert not np.allclose(matched, random_directions(32, 200, 0, "", 2, cov))
    e0 = np.eye(32)[:1]
    assert variance_share(e0, cov)[0] == pytest.approx(100.0 / np.trace(cov))


def test_above_chance_comparison_beside_the_full_one(tmp_path):
    from taskspace.analysis.collect import above_chance_tasks, load_run, restrict_run
    from taskspace.analysis.compare import compare_run

    tasks = [f"t{i}" for i in range(8)]
    groups = ["a"] * 4 + ["b"] * 4
    h = hypothesis_space(groups)
    for rev, lows in (("step0", [0.3] * 8), ("step9", [0.6, 0.7, 0.4, 0.8, 0.9, 0.55, 0.6, 0.3])):
        d = tmp_path / "run" / "m" / rev
        TaskSpace(h + 0.01 * np.arange(64).reshape(8, 8), tasks, groups, "gradients",
                  {"revision": rev}).save(d / "spaces" / "gradients.csv")
        (d / "scores").mkdir(parents=True, exist_ok=True)
        rows = ["task,group,n_pairs,accuracy,accuracy_ci_low,accuracy_ci_high,mean_margin,n_ties"]
        rows += [f"{t},{g},50,{lo + 0.1},{lo},{lo + 0.2},0.1,0" for t, g, lo in zip(tasks, groups, lows)]
        (d / "scores" / "tasks.csv").write_text("\n".join(rows) + "\n")
    run = load_run(tmp_path / "run")
    kept, decided = above_chance_tasks(run)
    # step0 is untrained: it does not decide; at step9, t2 (0.4) and t7 (0.3) are at chance
    assert decided == ["m@step9"] and kept == ["t0", "t1", "t3", "t4", "t5", "t6"]
    sub = restrict_run(run, kept)
    assert sub.models[0].cells["step9"].spaces["gradients"].tasks == kept
    assert run.models[0].cells["step9"].spaces["gradients"].n_tasks == 8          # the full run untouched
    cmp = compare_run(tmp_path / "run", permutations=99, bootstrap=0, above_chance=True, write=False)
    ac = cmp["above_chance"]
    assert ac["tasks"] == kept and ac["cells"][-1]["spaces"]["gradients"]["n_tasks"] == 6
    assert cmp["cells"][-1]["spaces"]["gradients"]["n_tasks"] == 8


def test_trained_minus_control_permutation_test_is_calibrated_and_finds_added_structure():
    from taskspace.analysis.inference import gap_permutation_p

    rng = np.random.default_rng(7)
    h = hypothesis_space(GROUPS)
    # the statistic is the gap itself (the number printed), exact for small designs
    m6 = rng.normal(size=(6, 6))
    g6 = ["a", "a", "b", "b", "c", "c"]
    exact = gap_permutation_p(m6, g6)
    assert exact["exact"] and exact["permutations"] == 720
    assert exact["gap"] == pytest.approx(within_between(m6, g6)["difference"])
    # H0: the control already has the groups' structure and training adds none → calibrated
    ps = []
    for i in range(200):
        control = 0.5 * h + sym_noise(rng, 20, 0.3)
        trained = 0.5 * h + sym_noise(rng, 20, 0.3)
        ps.append(gap_permutation_p(trained - control, GROUPS, permutations=99, seed=i)["p"])
    rate = float(np.mean(np.array(ps) <= 0.05))
    assert 0.01 <= rate <= 0.1, rate          # 200 spaces: Monte-Carlo s.d. 0.015
    # training adds group structure → found; a shared structure alone (both grouped equally) is not "gain"
    control = 0.5 * h + sym_noise(rng, 20, 0.3)
    assert gap_permutation_p(control + 0.4 * h + sym_noise(rng, 20, 0.1) - control, GROUPS)["p"] <= 0.01


def test_compare_tests_trained_minus_control_in_the_declared_direction(tmp_path):
    from taskspace.analysis.compare import compare_run
    from taskspace.analysis.findings import label

    rng = np.random.default_rng(8)
    h = hypothesis_space(GROUPS)
    # an erasure space (lower = related): the trained model's related tasks drop more than at step0
    for rev, strength in (("step0", 0.0), ("step9", 0.6)):
        drops = -strength * h + 0.05 * sym_noise(rng, len(GROUPS))
        TaskSpace(drops, TASKS, GROUPS, "erasure", {"revision": rev}).save(
            tmp_path / "run" / "m" / rev / "spaces" / "erasure.csv")
    cmp = compare_run(tmp_path / "run", permutations=199, bootstrap=200, write=False)
    cell = cmp["cells"][-1]
    vc = cell["versus_control"]["erasure"]
    assert cell["control"] == "step0"
    assert vc["difference"]["difference"] > 0.5 and vc["difference_ci"][0] > 0
    assert vc["p"] <= 0.01 and vc["q"] <= 0.01 and vc["p_tasks"] == len(GROUPS)
    line = next(x for x in cmp["headline"]["lines"] if x.startswith(label("erasure")))
    assert "trained − control" in line and "permutation p" in line


def test_tasks_similar_to_everything_do_not_make_their_group_look_related():
    from taskspace.analysis.stats import remove_task_effects

    rng = np.random.default_rng(10)
    gid = np.repeat(np.arange(5), [8, 5, 3, 2, 2])               # unequal groups, as in BLiMP
    groups = [f"g{g}" for g in gid]
    h = hypothesis_space(groups)
    raw, centred = [], []
    for i in range(200):
        loud = rng.normal(0, 1.0, size=5)[gid]                 # a group's tasks are similar to everything
        s = loud[:, None] + loud[None, :] + sym_noise(rng, 20)
        raw.append(mantel(s, h, permutations=99, seed=i)["p"])
        centred.append(mantel(remove_task_effects(s), h, permutations=99, seed=i)["p"])
    assert float(np.mean(np.array(raw) <= 0.05)) > 0.15        # the raw test is fooled (0.30 here)
    assert 0.01 <= float(np.mean(np.array(centred) <= 0.05)) <= 0.1
    # the compare's p is the centred one; planted relatedness is still found
    space = TaskSpace(0.5 * h + sym_noise(rng, 20, 0.3), [f"t{i}" for i in range(20)], groups, "gradients")
    assert summarize_space(space, permutations=199, bootstrap=0)["signed"]["p"] <= 0.01


def test_per_group_intervals_cover_a_group_mean_when_its_tasks_differ():
    from taskspace.analysis.generalization import jackknife_interval

    rng = np.random.default_rng(11)
    for n in (3, 5, 8):
        hits = 0
        for _ in range(200):
            task = rng.normal(0, 1, size=n)                    # tasks drawn around the group's mean 0.5
            block = 0.5 + (task[:, None] + task[None, :]) / 2 + rng.normal(0, 0.5, size=(n, n))
            lo, hi = jackknife_interval(block)
            hits += lo <= 0.5 <= hi
        assert 0.88 <= hits / 200 <= 1.0, (n, hits)          # nominal 0.95; Monte-Carlo s.d. 0.015
    assert all(math.isnan(x) for x in jackknife_interval(np.ones((2, 2))))


def test_a_space_with_no_complete_task_is_summarised_not_a_crash():
    # a normalised transfer space whose self-transfers are all at ceiling has (almost) no finite row
    m = np.full((20, 20), np.nan)
    m[0, 1:] = 0.3
    s = summarize_space(TaskSpace(m, TASKS, GROUPS, "transfer_accuracy_normalized"), permutations=99, bootstrap=100)
    d = s[s["reading"]]
    assert s["coverage"]["rows"] == 1 and all(math.isnan(x) for x in d["auc_ci"])
