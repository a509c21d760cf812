"""The example plans parse and pass their dry run offline (hub access is impossible here)."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import BLIMP, REPO

PYTHIA = REPO / "examples" / "pythia.toml"


def _taskspace(*args: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1", HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "taskspace", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_pythia_example_dry_run_lists_every_job(tmp_path):
    """Three sizes × six checkpoints + init control, every probe; transfer and baseline only where
    [probe_revisions] says, one job per task. With the local BLiMP (or the toy suite without it)."""
    from taskspace.runs import load_plan

    plan = load_plan(PYTHIA)
    assert [m.name for m in plan.models] == [f"EleutherAI/pythia-{s}" for s in ("70m", "160m", "410m")]
    assert all(m.control == "init" and len(m.revisions) == 6 for m in plan.models)
    spec = str(BLIMP) if BLIMP.is_dir() else "toy"
    local = tmp_path / "pythia.toml"
    local.write_text(PYTHIA.read_text().replace('spec = "blimp"', f'spec = "{spec}"'))
    r = _taskspace("run", str(local), "--out", str(tmp_path / "run"), "--dry-run")
    assert r.returncode == 0, r.stderr
    n_tasks = 67 if spec != "toy" else 40
    labels = re.findall(r"│ ((?:score|gradients\+overlap|transfer|baseline)[^│]*?)\s*│ pending", r.stdout)
    text = " ".join(labels)
    for size in ("70m", "160m", "410m"):
        for rev in ("step0", "step512", "step143000", "init"):
            assert f"score pythia-{size}@{rev}" in text and f"gradients+overlap pythia-{size}@{rev}" in text
        assert f"transfer base pythia-{size}@step143000" in text and f"transfer base pythia-{size}@init" in text
        assert f"transfer pythia-{size}@step512" not in text
        rows = [lab for lab in labels if lab.startswith("transfer ") and f"pythia-{size}@step143000" in lab
                and " base " not in lab and lab != f"transfer pythia-{size}@step143000"]
        assert len(rows) == n_tasks
    assert "pending" in r.stdout and "done" not in r.stdout.replace("already done", "")
    assert not (tmp_path / "run" / "run.json").exists()


def test_pythia_example_offline_suite_is_one_line(tmp_path):
    r = _taskspace("run", str(PYTHIA), "--out", str(tmp_path / "run"), "--dry-run")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "hub" in lines[0]
