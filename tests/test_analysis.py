"""Analysis of task spaces against theory, controls, checkpoints and sizes (issue 5, item 1).

Synthetic task spaces with known structure: block-diagonal + noise must look grouped (large
within − between, significant Mantel p, ARI ≈ 1), a shuffled one must not, and a sign-flipped pair
inside a group must show in the signed statistics and vanish in the absolute ones.
"""
from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from conftest import run_cli
from taskspace.analysis import (
    cluster_space,
    compare_run,
    generalization_table,
    group_generalization,
    hypothesis_space,
    largest_change,
    load_run,
    mantel,
    space_dynamics,
    spearman_offdiagonal,
    summarize_distributedness,
    within_between,
)
from taskspace.analysis.stats import complete_tasks
from taskspace.errors import InputError
from taskspace.spaces import TaskSpace

GROUPS4 = [g for g in ("agreement", "binding", "islands", "npi") for _ in range(3)]
TASKS4 = [f"{g}_{i}" for i, g in enumerate(GROUPS4)]


def block_space(strength: float, noise: float, seed: int = 0, *, kind: str = "gradients",
                symmetric: bool = True, diag: float = 1.0, tasks=TASKS4, groups=GROUPS4,
                ci: float | None = None) -> TaskSpace:
    """``strength`` inside groups, 0 between, plus Gaussian noise; ``ci`` adds ± ci bounds."""
    rng = np.random.default_rng(seed)
    h = hypothesis_space(groups)
    m = strength * h + noise * rng.normal(size=h.shape)
    if symmetric:
        m = (m + m.T) / 2
    np.fill_diagonal(m, diag)
    lo = hi = None
    if ci is not None:
        lo, hi = m - ci, m + ci
    return TaskSpace(m, list(tasks), list(groups), kind, {"model": {"model": "synthetic"}}, lo, hi)


# -- a RUN tree ---------------------------------------------------------------------------------------
SIZES = {"tiny": (0.25, 20_000), "small": (0.5, 80_000)}
STEPS = (0, 100, 300)
MODULES = ("embedding", "h.0.attn", "h.0.mlp", "h.1.attn", "h.1.mlp", "head")


def write_cell(cell: Path, slug: str, size: str, rev: str, strength: float, n_params: int, seed: int,
               failed_task: str | None = None) -> None:
    prov = {"model": {"model": slug, "revision": rev, "n_parameters": n_params},
            "convention": {"reduction": "sum", "prefix": "bos"}, "settings": {"seed": 0, "steps": 50},
            "suite": {"name": "synthetic"}, "probe": "gradients"}
    g = block_space(strength, 0.05, seed, kind="gradients")
    g.provenance = prov
    g.save(cell / "spaces" / "gradients")
    for i, mod in enumerate(MODULES):
        s = block_space(strength * (i + 1) / len(MODULES), 0.05, seed + 10 + i, kind="gradients")
        s.provenance = prov
        s.save(cell / "spaces" / "gradients_by_module" / f"{mod}.csv")  # dotted names: give the suffix
    o = block_space(strength / 2, 0.02, seed + 1, kind="overlap")
    o.matrix = np.clip(o.matrix + 0.1, 0, 1)
    np.fill_diagonal(o.matrix, 1.0)
    o.provenance = prov
    o.save(cell / "spaces" / "overlap")
    t = block_space(strength, 0.05, seed + 2, kind="transfer", symmetric=False, diag=2.0, ci=0.1)
    t.matrix *= 2.0
    t.provenance = dict(prov, probe="transfer")
    tn = TaskSpace(t.matrix / np.abs(np.diag(t.matrix))[:, None], t.tasks, t.groups, "transfer_normalized",
                   t.provenance, t.ci_low / 2, t.ci_high / 2)
    if failed_task:
        k = tn.tasks.index(failed_task)
        for s in (t, tn):
            s.matrix[k, :] = np.nan
    t.save(cell / "spaces" / "transfer")
    tn.save(cell / "spaces" / "transfer_normalized")
    rng = np.random.default_rng(seed)
    rows = []
    for task, grp in zip(TASKS4, GROUPS4):
        shares = rng.dirichlet(np.ones(len(MODULES)))
        rows.append({"task": task, "group": grp, "grad_norm": 1 + rng.random(), "participation_ratio": 0.3,
                     "mask_size": 0.05, **{f"share:{m}": s for m, s in zip(MODULES, shares)}})
    (cell / "stats").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(cell / "stats" / "distributedness.csv", index=False)
    (cell / "ftgd").mkdir()
    for task in TASKS4:
        status = "failed" if task == failed_task else "ok"
        (cell / "ftgd" / f"{task}.json").write_text(json.dumps({"status": status, "lm_damage": 0.1}))


def make_run(root: Path, *, with_plan: bool = True) -> Path:
    """Two sizes × three checkpoints (step0 is the control), structure growing with size and training."""
    models = []
    for si, (size, (top, n_params)) in enumerate(SIZES.items()):
        slug = f"toy-{size}"
        revs = [f"step{s}" for s in STEPS]
        for ri, s in enumerate(STEPS):
            strength = 0.02 if s == 0 else top * (0.5 if s == 100 else 1.0)
            write_cell(root / slug / f"step{s}", slug, size, f"step{s}", strength, n_params, seed=10 * si + ri)
        models.append({"name": f"models/{slug}", "slug": slug, "size": size, "revisions": revs, "control": "step0"})
    if with_plan:
        (root / "run.json").write_text(json.dumps({"models": models, "probes": ["gradients", "overlap", "transfer"],
                                                   "suite": {"spec": "toy"}, "settings": {"seed": 0}}))
    return root


# -- statistics on synthetic spaces with known structure ------------------------------------------------
def test_block_diagonal_space_matches_theory():
    s = block_space(0.6, 0.05, seed=1)
    wb = within_between(s.matrix, s.groups)
    assert wb["within"] == pytest.approx(0.6, abs=0.05)
    assert wb["between"] == pytest.approx(0.0, abs=0.05)
    assert wb["difference"] > 0.5
    m = mantel(s.matrix, hypothesis_space(s.groups), permutations=999, seed=0)
    assert m["rho"] > 0.6
    assert m["p"] == pytest.approx(1 / 1000)  # nothing beats the true labelling: the +1-corrected minimum
    assert m["permutations"] == 999 and not m["exact"]
    assert cluster_space(s)["ari"] == pytest.approx(1.0)


def test_shuffled_space_is_not_significant():
    s = block_space(0.6, 0.05, seed=1)
    # The same values under labels that cut across the groups: task i of group k moves to group i.
    perm = [3 * (i % 3) + i // 3 for i in range(9)] + [9, 10, 11]
    shuffled = TaskSpace(s.matrix[np.ix_(perm, perm)], s.tasks, s.groups, "gradients")
    assert within_between(shuffled.matrix, shuffled.groups)["difference"] < 0.1
    m = mantel(shuffled.matrix, hypothesis_space(shuffled.groups), permutations=499, seed=0)
    assert m["p"] > 0.05
    assert cluster_space(shuffled)["ari"] < 0.5
    # and pure noise
    noise = block_space(0.0, 0.3, seed=4)
    assert mantel(noise.matrix, hypothesis_space(noise.groups), permutations=499, seed=0)["p"] > 0.05


def test_sign_flipped_pair_shows_in_signed_not_in_absolute():
    s = block_space(0.8, 0.0, seed=0)
    a, b = TASKS4.index("binding_3"), TASKS4.index("binding_4")
    s.matrix[a, b] = s.matrix[b, a] = -0.8
    gen = group_generalization(s).set_index("group")
    gabs = group_generalization(s, absolute=True).set_index("group")
    # binding: ordered pairs (3,4),(4,3) at −0.8 and four at +0.8
    assert gen.loc["binding", "mean"] == pytest.approx((4 * 0.8 - 2 * 0.8) / 6)
    assert gabs.loc["binding", "mean"] == pytest.approx(0.8)
    assert gen.loc["agreement", "mean"] == pytest.approx(gabs.loc["agreement", "mean"]) == pytest.approx(0.8)
    signed = within_between(s.matrix, s.groups)
    absolute = within_between(s.matrix, s.groups, absolute=True)
    assert signed["within"] == pytest.approx(0.8 * (22 - 2) / 24)  # 2 of 24 within entries flipped
    assert absolute["within"] == pytest.approx(0.8)
    assert cluster_space(s, absolute=True)["ari"] == pytest.approx(1.0)


def _brute_rho(s, h, perm):
    n = len(perm)
    off = ~np.eye(n, dtype=bool)
    sp = s[np.ix_(perm, perm)]
    return spearmanr(sp[off], h[off]).statistic


def test_mantel_exact_equals_brute_force():
    rng = np.random.default_rng(7)
    groups = ["a", "a", "b", "b", "b"]
    s = rng.normal(size=(5, 5))
    s[0, 1] += 1.0
    h = hypothesis_space(groups)
    observed = _brute_rho(s, h, list(range(5)))
    stats = [_brute_rho(s, h, list(p)) for p in itertools.permutations(range(5))]
    expected = sum(x >= observed - 1e-12 for x in stats) / len(stats)
    m = mantel(s, h, permutations=999)
    assert m["exact"] and m["permutations"] == 120
    assert m["rho"] == pytest.approx(observed, abs=1e-12)
    assert m["p"] == pytest.approx(expected, abs=1e-12)
    assert spearman_offdiagonal(s, h) == pytest.approx(observed, abs=1e-12)


def test_mantel_random_permutations_equal_brute_force_with_plus_one():
    rng = np.random.default_rng(3)
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 2
    h = hypothesis_space(groups)
    s = 0.3 * h + rng.normal(size=(8, 8))  # asymmetric, like a transfer space
    observed = _brute_rho(s, h, list(range(8)))
    draw = np.random.default_rng(11)
    count = sum(_brute_rho(s, h, list(draw.permutation(8))) >= observed - 1e-12 for _ in range(199))
    m = mantel(s, h, permutations=199, seed=11)
    assert not m["exact"]
    assert m["p"] == pytest.approx((1 + count) / 200)
    assert m["rho"] == pytest.approx(observed)


def test_mantel_undefined_for_one_group():
    s = block_space(0.5, 0.1, groups=["g"] * 12)
    m = mantel(s.matrix, hypothesis_space(s.groups))
    assert math.isnan(m["rho"]) and math.isnan(m["p"])


def test_generalization_table_against_hand_computation():
    tasks = ["a1", "a2", "a3", "b1", "b2", "c1"]
    groups = ["A", "A", "A", "B", "B", "C"]
    m = np.array([[1.0, 0.2, 0.4, 9, 9, 9],
                  [0.6, 1.0, -0.2, 9, 9, 9],
                  [0.0, 0.8, 1.0, 9, 9, 9],
                  [9, 9, 9, 1.0, -0.5, 9],
                  [9, 9, 9, -0.7, 1.0, 9],
                  [9, 9, 9, 9, 9, 1.0]])
    s = TaskSpace(m, tasks, groups, "transfer_normalized")
    a_vals = [0.2, 0.4, 0.6, -0.2, 0.0, 0.8]
    t = generalization_table({"tiny": s, "base": TaskSpace(2 * m, tasks, groups, "transfer_normalized")})
    rows = t.set_index(["column", "group"])
    assert rows.loc[("tiny", "A"), "mean"] == pytest.approx(np.mean(a_vals))
    assert rows.loc[("tiny", "A"), "std"] == pytest.approx(np.std(a_vals, ddof=1))
    assert rows.loc[("tiny", "A"), "n"] == 6
    assert rows.loc[("tiny", "B"), "mean"] == pytest.approx(-0.6)
    assert rows.loc[("tiny", "B"), "std"] == pytest.approx(np.std([-0.5, -0.7], ddof=1))
    assert rows.loc[("base", "B"), "mean"] == pytest.approx(-1.2)
    assert rows.loc[("tiny", "C"), "n"] == 0 and math.isnan(rows.loc[("tiny", "C"), "mean"])
    # NaN entries (a failed fine-tuning) are skipped, not counted as 0
    m2 = m.copy()
    m2[1, :] = np.nan
    g = group_generalization(TaskSpace(m2, tasks, groups, "transfer_normalized")).set_index("group")
    assert g.loc["A", "mean"] == pytest.approx(np.mean([0.2, 0.4, 0.0, 0.8]))


def test_complete_tasks_drops_failed_rows():
    s = block_space(0.5, 0.05)
    s.matrix[4, :] = np.nan
    keep = complete_tasks(s.matrix)
    assert keep.sum() == 11 and not keep[4]
    from taskspace.analysis import summarize_space

    summ = summarize_space(s, permutations=99)
    assert summ["dropped"] == [TASKS4[4]]
    assert summ["signed"]["p"] <= 0.01 and summ["ari"] == pytest.approx(1.0)


def test_largest_change_and_dynamics():
    flat = largest_change([0.10, 0.12, 0.11], ["a", "b", "c"])
    assert flat["at"] == "b" and "sudden" not in flat          # descriptive: no verdict from raw ρ
    jump = largest_change([0.10, 0.50, 0.11], ["a", "b", "c"])
    assert jump["at_index"] == 1
    assert jump["ratio"] == pytest.approx(0.50 / np.median([0.10, 0.11]))
    assert math.isnan(largest_change([0.3], ["a"])["ratio"])  # one transition has no "others"
    spaces = [block_space(x, 0.05, seed=i) for i, x in enumerate((0.0, 0.3, 0.6, 0.9))]
    d = space_dynamics(["step0", "step10", "step20", "step30"], spaces)
    assert d["rho_final"][-1] == pytest.approx(1.0)
    assert len(d["rho_next"]) == 3
    assert d["difference"] == sorted(d["difference"])  # structure grows with training
    assert d["rho_next"][0] < d["rho_next"][-1]  # noise at step0 correlates worst


def test_distributedness_summary():
    rng = np.random.default_rng(0)
    shares = rng.dirichlet(np.ones(len(MODULES)), size=4)
    df = pd.DataFrame({"task": list("abcd"), "group": list("xxyy"), "grad_norm": 1.0,
                       "participation_ratio": [0.2, 0.4, 0.6, 0.8], "mask_size": 0.05,
                       **{f"share:{m}": shares[:, i] for i, m in enumerate(MODULES)}})
    d = summarize_distributedness(df)
    assert d["participation_ratio"] == pytest.approx(0.5)
    assert list(d["layer_shares"]) == ["embedding", "layer 0", "layer 1", "head"]
    assert sum(d["layer_shares"].values()) == pytest.approx(1.0)
    assert d["layer_shares"]["layer 0"] == pytest.approx(shares[:, 1:3].sum(1).mean())
    assert 1.0 <= d["effective_layers"] <= 4.0
    even = pd.DataFrame({"task": ["a"], "share:h.0.x": [0.5], "share:h.1.x": [0.5]})
    assert summarize_distributedness(even)["layer_spread"] == pytest.approx(1.0)


# -- a RUN ------------------------------------------------------------------------------------------------
def test_compare_run_numbers(tmp_path):
    root = make_run(tmp_path / "run")
    cmp = compare_run(root, permutations=199)
    assert {"schema", "models", "cells", "generalization", "dynamics", "sizes", "findings", "headline",
            "provenance"} <= set(cmp)
    assert [m["slug"] for m in cmp["models"]] == ["toy-tiny", "toy-small"]
    assert cmp["models"][0]["control"] == "step0" and cmp["models"][0]["n_parameters"] == 20_000
    on_disk = json.loads((root / "comparison.json").read_text())
    assert on_disk["headline"] == cmp["headline"]
    run = load_run(root)
    final = run.models[1].cells["step300"].spaces["transfer_normalized"]
    expect = group_generalization(final).set_index("group")
    table = cmp["generalization"]["transfer_normalized"]["by_size"]
    assert table["columns"] == ["toy-tiny", "toy-small"]
    for g in table["groups"]:
        assert table["cells"][g]["toy-small"]["mean"] == pytest.approx(expect.loc[g, "mean"])
        assert table["cells"][g]["toy-small"]["std"] == pytest.approx(expect.loc[g, "std"])
    cell = next(c for c in cmp["cells"] if c["id"] == "toy-small@step300")
    wb = within_between(final.matrix, final.groups)
    assert cell["spaces"]["transfer_normalized"]["signed"]["difference"] == pytest.approx(wb["difference"])
    assert cell["spaces"]["gradients"]["signed"]["p"] == pytest.approx(1 / 200)
    vc = cell["versus_control"]["gradients"]
    assert cell["control"] == "step0"
    assert vc["difference"]["difference"] == pytest.approx(vc["trained"]["difference"] - vc["control"]["difference"])
    assert vc["difference"]["difference"] > 0.3
    assert cell["distributedness"]["mask_size"] == pytest.approx(0.05)
    assert set(cell["parts"]["gradients"]) == set(MODULES)
    dyn = cmp["dynamics"]["toy-small"]["overlap"]
    assert dyn["revisions"] == ["step0", "step100", "step300"]
    assert dyn["difference"][0] < dyn["difference"][1] < dyn["difference"][2]
    verdicts = {f["id"]: f["verdict"] for f in cmp["findings"]}
    assert verdicts["sizes"] == "reproduced" and verdicts["sharing"] == "reproduced"
    assert cmp["headline"]["model"] == "toy-small" and cmp["headline"]["revision"] == "step300"
    assert cmp["provenance"]["plan"]["suite"] == {"spec": "toy"}
    assert "versions" in cmp["provenance"]


def test_findings_say_not_reproduced_when_data_disagree(tmp_path):
    root = make_run(tmp_path / "run")
    # swap the sizes' parameter counts: now the larger model is the one with weaker structure
    for f in root.rglob("*.json"):
        if f.name == "run.json":
            continue
        txt = f.read_text()
        f.write_text(txt.replace('"n_parameters": 20000', '"n_parameters": 999999'))
    cmp = compare_run(root, permutations=99, write=False)
    assert [m["slug"] for m in cmp["models"]] == ["toy-small", "toy-tiny"]
    f = next(x for x in cmp["findings"] if x["id"] == "sizes")
    assert f["verdict"] == "not reproduced"
    assert "toy-small" in f["this_run"] and f["numbers"]["delta"] < 0
    # one model, one checkpoint: nothing to compare
    single = tmp_path / "run" / "toy-tiny" / "step300"
    cmp1 = compare_run(single, permutations=99, write=False)
    assert cmp1["kind"] == "probe_dir"
    assert {x["verdict"] for x in cmp1["findings"]} == {"inconclusive"}


def test_run_without_plan_and_with_failed_task(tmp_path):
    root = make_run(tmp_path / "run", with_plan=False)
    write_cell(root / "toy-tiny" / "init", "toy-tiny", "tiny", "init", 0.0, 20_000, seed=99,
               failed_task="npi_9")
    cmp = compare_run(root, permutations=99, write=False)
    tiny = next(m for m in cmp["models"] if m["slug"] == "toy-tiny")
    assert tiny["control"] == "init"  # a fresh initialisation on disk is the control
    assert tiny["revisions"] == ["step0", "step100", "step300"]
    init = next(c for c in cmp["cells"] if c["id"] == "toy-tiny@init")
    assert init["spaces"]["transfer_normalized"]["dropped"] == ["npi_9"]
    assert init["finetuning"]["transfer"]["failed"] == ["npi_9"]
    step0 = next(c for c in cmp["cells"] if c["id"] == "toy-tiny@step0")
    assert step0["control"] == "init"


def test_bad_inputs_name_file_line_field(tmp_path):
    with pytest.raises(InputError, match="no task spaces"):
        load_run(tmp_path)
    root = make_run(tmp_path / "run")
    csv = root / "toy-tiny" / "step100" / "spaces" / "overlap.csv"
    lines = csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2] = "oops"
    lines[3] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        load_run(root)
    assert e.value.line == 4 and e.value.field == TASKS4[1] and str(csv) in str(e.value)
    csv.unlink()
    (root / "run.json").write_text("{not json")
    with pytest.raises(InputError, match="run.json"):
        load_run(root)


def _cli(*args):
    """``taskspace ARGS`` in this process (conftest's :func:`run_cli`: no interpreter start)."""
    return run_cli(*args)


def test_cli_compare(tmp_path):
    root = make_run(tmp_path / "run")
    r = _cli("compare", root, "--permutations", "99")
    assert r.returncode == 0, r.stderr
    assert "toy-small@step300" in r.stdout and "reproduced" in r.stdout
    cmp = json.loads((root / "comparison.json").read_text())
    assert cmp["schema"] == "taskspace.comparison/1" and len(cmp["cells"]) == 6
    # a single probe DIR works too
    r = _cli("compare", root / "toy-small" / "step300", "--permutations", "99")
    assert r.returncode == 0, r.stderr
    assert (root / "toy-small" / "step300" / "comparison.json").exists()


def test_cli_bad_input_one_line_no_partial_output(tmp_path):
    r = _cli("compare", tmp_path / "missing")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "folder not found" in r.stderr
    root = make_run(tmp_path / "run")
    side = root / "toy-small" / "step100" / "spaces" / "gradients.json"
    side.write_text('{"kind": "gradients", ')
    for cmd in ("compare", "report"):
        r = _cli(cmd, root)
        assert r.returncode == 2, r.stdout
        assert r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0
        assert "gradients.json" in r.stderr and "Traceback" not in r.stderr
    assert not (root / "comparison.json").exists() and not (root / "report.html").exists()
    assert not (root / "figures").exists()


# -- coverage: every figure says how many rows it rests on (issue 11, item 3) ---------------------------

def test_coverage_counts_rows_and_cells():
    from taskspace.analysis.stats import coverage, coverage_note

    m = np.arange(16, dtype=float).reshape(4, 4)
    full = coverage(m, list("abcd"))
    assert full == {"rows": 4, "of": 4, "cells": 12, "cells_of": 12, "missing": [], "masked": [], "complete": True}
    assert coverage_note(full) == "4/4 rows"
    m[1, :] = np.nan
    m[3, 0] = np.nan
    part = coverage(m, list("abcd"))
    assert (part["rows"], part["cells"], part["missing"], part["complete"]) == (3, 8, ["b"], False)
    assert coverage_note(part) == "3/4 rows, incomplete: 8/12 cells; missing b"


def test_missing_rows_are_counted_marked_and_withhold_the_size_verdict(tmp_path):
    root = make_run(tmp_path / "run")
    # the largest model's final transfer fine-tunings failed (or never beat step 0) on two tasks
    final = root / "toy-small" / "step300"
    shutil.rmtree(final)
    write_cell(final, "toy-small", "small", "step300", 0.5, 80_000, seed=11, failed_task="npi_9")
    for name in ("transfer", "transfer_normalized"):
        s = TaskSpace.load(final / "spaces" / name)
        s.matrix[s.tasks.index("binding_3"), :] = np.nan
        s.save(final / "spaces" / name)
    cmp = compare_run(root, permutations=99, write=False)
    cell = next(c for c in cmp["cells"] if c["id"] == "toy-small@step300")
    cov = cell["spaces"]["transfer_normalized"]["coverage"]
    assert (cov["rows"], cov["of"], sorted(cov["missing"])) == (10, 12, ["binding_3", "npi_9"])
    assert cell["spaces"]["gradients"]["coverage"]["complete"]
    line = next(x for x in cmp["headline"]["lines"] if x.startswith("normalised transfer"))
    assert line.startswith("normalised transfer T̃ on 10/12 rows, incomplete")
    assert any(x.startswith("gradient cosine on 12/12 rows:") for x in cmp["headline"]["lines"])
    f = next(x for x in cmp["findings"] if x["id"] == "sizes")
    assert f["space"] == "transfer_normalized" and f["verdict"] == "inconclusive"
    assert "Verdict withheld" in f["this_run"] and "toy-small: 10/12 rows" in f["this_run"]
    # the report marks it too: no yes/no on the headline card, rows in the tables
    from taskspace.analysis.collect import load_run as _load
    from taskspace.report.html import render_html

    page = render_html(_load(root), cmp, root / "figures")
    assert "v-withheld" in page and "10/12 rows, incomplete" in page
    # and `taskspace compare`'s table has a rows column
    from rich.console import Console

    from taskspace.analysis.printing import print_comparison

    con = Console(record=True, width=250)
    print_comparison(con, cmp)
    text = con.export_text()
    assert "10/12*" in text and "12/12" in text and "* incomplete: rows missing" in text
