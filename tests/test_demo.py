"""`taskspace demo --quick` end to end through the real console script (the README's first command)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest


def test_demo_plan_is_a_valid_plan_with_three_sizes_and_every_stage(tmp_path):
    from taskspace.demo import demo_plan_text
    from taskspace.runs import parse_plan_text

    for quick in (True, False):
        plan = parse_plan_text(demo_plan_text(quick), source="plan.toml")
        assert [m.pretrain.size for m in plan.models] == ["tiny", "small", "base"]
        assert all(m.control == "first" and m.revisions == ("all",) for m in plan.models)
        assert {"gradients", "overlap", "transfer"} <= set(plan.probes) and plan.report
        if quick:
            assert plan.suite.tasks and len(plan.suite.tasks) < 20
        else:
            assert plan.suite.tasks is None


def test_demo_probes_come_from_the_registry():
    """Where the demo runs a probe is its registry entry's ``demo`` field: a probe registered with one joins the
    demo's plan there, and an unknown place is refused."""
    import dataclasses

    from taskspace.demo import demo_plan_text, demo_probes
    from taskspace.probes import registry
    from taskspace.probes.spec import SpaceSpec
    from taskspace.runs import parse_plan_text

    assert demo_probes("every") == [p.name for p in registry.probes() if p.demo == "every"]
    base = registry.get("activations")
    spec = dataclasses.replace(base, name="demo-test", demo="ends",
                               spaces=(SpaceSpec("demo_test", "a test space", main=True),))
    registry.register(spec)
    try:
        plan = parse_plan_text(demo_plan_text(True), source="plan.toml")
        assert "demo-test" in plan.probes and tuple(plan.probe_revisions["demo-test"]) == ("first", "last")
        with pytest.raises(ValueError, match="demo must be one of"):
            registry.register(dataclasses.replace(spec, demo="sometimes"), replace=True)
    finally:
        registry.unregister("demo-test")
    assert "demo-test" not in demo_plan_text(True)


def test_demo_options_come_from_the_registry():
    """A demo probe's ``demo_options`` are its ``[probe_options]`` table in the demo's plan (checked at
    registration: an unknown option is refused)."""
    import dataclasses

    from taskspace.demo import demo_plan_text
    from taskspace.probes import registry
    from taskspace.probes.spec import SpaceSpec
    from taskspace.runs import parse_plan_text

    for quick in (True, False):
        plan = parse_plan_text(demo_plan_text(quick), source="plan.toml")
        for p in registry.probes():
            if p.demo and p.demo_options:
                assert p.name in plan.probes and plan.probe_options[p.name] == dict(p.demo_options)
    base = registry.get("steering")
    opt = base.options[0]
    spec = dataclasses.replace(base, name="demo-test", demo="largest", demo_options=((opt.name, opt.default),),
                               spaces=(SpaceSpec("demo_test", "a test space", main=True),))
    registry.register(spec)
    try:
        plan = parse_plan_text(demo_plan_text(True), source="plan.toml")
        assert plan.probe_options["demo-test"] == {opt.name: opt.default}
        with pytest.raises(ValueError, match="no option 'not_an_option'"):
            registry.register(dataclasses.replace(spec, demo_options=(("not_an_option", 1),)), replace=True)
    finally:
        registry.unregister("demo-test")


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_quick_end_to_end(quick_demo, tmp_path):
    """The README's command (``taskspace demo --quick``, default ``--out``) on a fresh working directory,
    run once per session by conftest's ``quick_demo`` (the console script of the built wheel; the same
    run tests/test_packaging.py and tests/test_docs.py check), then again by this checkout's console script
    on a copy of its run directory: a finished demo resumes with nothing to do."""
    out, r = quick_demo.out, quick_demo
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "figures").is_dir() and list((out / "figures").glob("*.png")) and list((out / "figures").glob("*.svg"))
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["findings"] and cmp["headline"]
    # every fine-tuning trained (no row of a transfer space is empty), and the headline says so
    from taskspace.demo import QUICK, demo_tasks

    records = list(out.glob("*/*/ftgd/*.json"))
    assert len(records) == 3 * len(demo_tasks(QUICK))  # three sizes, transfer on the last checkpoint
    for rec in records:
        ft = json.loads(rec.read_text())
        assert ft["status"] == "ok" and ft["best_step"] > 0 and ft["delta_norm"] > 0, (rec, ft["reason"])
    n = len(demo_tasks(QUICK))
    # every row is measured; a normalised row whose self-transfer is not measurably positive is left out
    # by rule (counted as masked, never as missing)
    head = cmp["headline"]
    cov = head["spaces"]["transfer_normalized"]["coverage"]
    assert cov["complete"] and cov["rows"] + len(cov["masked"]) == n and not cov["missing"]
    assert any(line.startswith(f"normalised transfer T̃ on {cov['rows']}/{n} rows") for line in head["lines"])
    assert f"on {cov['rows']}/{n} rows" in " ".join(r.stdout.split())  # rich may wrap the line
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete"
    assert [m["size"] for m in meta["models"]] == ["tiny", "small", "base"]
    for m in meta["models"]:
        assert m["control"] == "step0" and m["revisions"][0] == "step0" and len(m["revisions"]) >= 3
        last = out / m["slug"] / m["revisions"][-1]
        for name in ("gradients", "overlap", "transfer", "transfer_normalized"):
            assert (last / "spaces" / f"{name}.csv").exists(), (last, name)
        for rev in m["revisions"]:
            assert (out / m["slug"] / rev / "spaces" / "overlap.csv").exists()
            assert (out / m["slug"] / rev / "scores" / "tasks.csv").exists()
        assert (out / "models" / m["slug"] / m["revisions"][-1] / "config.json").exists()
    assert str(out.relative_to(r.cwd) / "report.html") in r.stdout.replace("\n", "")   # as the user named it
    assert "findings" in r.stdout
    assert f"transformers {meta['versions']['transformers']}" in r.stdout   # versions printed, one line
    assert isinstance(meta["torch_threads"], int)
    assert (out / "plan.toml").exists()
    # the probes ran in the worker processes that trained the models (started once per run, not per phase)
    done = [json.loads(line) for line in (out / ".jobs" / "log.jsonl").read_text().splitlines()]
    done = [e for e in done if e["event"] == "done"]
    trained = {e["pid"] for e in done if e["label"].startswith("pretrain ")}
    assert trained and {e["pid"] for e in done if not e["label"].startswith("pretrain ")} <= trained

    copy = tmp_path / "demo"                                   # the shared run directory stays as it is
    shutil.copytree(out, copy, symlinks=True)
    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1")
    again = subprocess.run(["taskspace", "demo", "--quick", "--out", str(copy)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert again.returncode == 0 and "0 job(s) run" in again.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_a_comparison_in_worker_processes_is_the_comparison_of_one_process(quick_demo, monkeypatch):
    """compare_run with two spawned workers (forced for a run this small) gives the comparison the demo's
    compare job computed in one process (the quick demo is below the size that starts workers): every
    summary, interval, p-value, trajectory and finding, to the bit."""
    from taskspace.analysis import compare as C

    assert quick_demo.returncode == 0, quick_demo.stderr[-2000:]
    written = json.loads((quick_demo.out / "comparison.json").read_text())
    monkeypatch.setattr(C, "PARALLEL_WORK", 0)
    spawned = json.loads(json.dumps(C.compare_run(quick_demo.out, workers=2, write=False)))
    for cmp in (written, spawned):
        cmp["provenance"].pop("created")
        cmp["provenance"]["plan"] = None       # run.json: rewritten with the final status after the compare job
        cmp.pop("run")                         # the demo ran with a relative path
        for cell in cmp["cells"]:
            cell.pop("path")
    assert spawned == written
    assert len(spawned["cells"]) >= 6 and spawned["dynamics"] and spawned["findings"]
