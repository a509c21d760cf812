"""`taskspace demo --quick` end to end through the real console script (the README's first command)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess

import pytest

PARTS = {
    "taskspace.suites.toy": "toy_suite",
    "taskspace.models.pretrain": "pretrain",
    "taskspace.probes.similarity": "run_gradient_probes",
    "taskspace.probes.transfer": "transfer_probe",
    "taskspace.analysis": "compare_run",
    "taskspace.report": "build_report",
}


def _missing_part() -> str | None:
    for module, name in PARTS.items():
        try:
            if not hasattr(importlib.import_module(module), name):
                return f"{module}.{name}"
        except ImportError:
            return module
    return None


def test_demo_plan_is_a_valid_plan_with_three_sizes_and_every_stage(tmp_path):
    pytest.importorskip("taskspace.suites.toy")
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


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    missing = _missing_part()
    if missing:
        pytest.skip(f"the demo needs {missing}, which is not there yet")
    out = tmp_path / "demo"
    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1")
    r = subprocess.run(["taskspace", "demo", "--quick", "--out", str(out)], capture_output=True, text=True,
                       env=env, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "figures").is_dir() and list((out / "figures").glob("*.png")) and list((out / "figures").glob("*.svg"))
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["findings"] and cmp["headline"]
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
    assert str(out / "report.html") in r.stdout.replace("\n", "")
    assert "findings" in r.stdout
    assert f"transformers {meta['versions']['transformers']}" in r.stdout   # versions printed, one line
    assert isinstance(meta["torch_threads"], int)
    assert (out / "plan.toml").exists()

    again = subprocess.run(["taskspace", "demo", "--quick", "--out", str(out)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert again.returncode == 0 and "0 job(s) run" in again.stdout
