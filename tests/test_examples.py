"""The example plans parse and pass their dry run offline (hub access is impossible here)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

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
    assert "pending" in r.stdout and not re.search(r"│ done\s*│", r.stdout)     # no job is done yet
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("hub_extra", [True, False], ids=["with datasets", "without datasets"])
def test_pythia_example_dry_runs_offline_with_no_cache_and_no_network(tmp_path, hub_extra):
    """Hub models and the hub suite ``blimp``, an empty Hugging Face cache, no HF_*_OFFLINE, and every
    HTTP(S) connection sent to a local socket that records it: the dry run succeeds without one
    connection, reports the models and the suite as unchecked (with and without ``datasets``), counts the
    per-task jobs from the 67 BLiMP paradigms taskspace knows, and writes nothing."""
    import importlib.util
    import os
    import socket

    if hub_extra and importlib.util.find_spec("datasets") is None:
        pytest.skip("the hub extra (datasets) is not installed")
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(16)
    trap.setblocking(False)
    proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
           and k.lower() not in ("no_proxy", "http_proxy", "https_proxy", "all_proxy")}
    env.update(HF_HOME=str(tmp_path / "hf"), HTTP_PROXY=proxy, HTTPS_PROXY=proxy, ALL_PROXY=proxy,
               http_proxy=proxy, https_proxy=proxy, TASKSPACE_NO_PROGRESS="1", COLUMNS="200")
    block = "" if hub_extra else "import sys; sys.modules['datasets'] = None; "   # as if not installed
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", block + "from taskspace.cli import main; main()", "run", str(PYTHIA),
                        "--out", str(run), "--dry-run"], capture_output=True, text=True, env=env, timeout=300)
    try:
        trap.accept()
        connected = True
    except BlockingIOError:
        connected = False
    finally:
        trap.close()
    assert r.returncode == 0, r.stderr
    assert not connected, "the dry run tried the network"
    assert not run.exists()
    out = " ".join(r.stdout.split())
    assert "suite blimp: unchecked" in out and "67 BLiMP paradigms × 1,000 pairs" in out
    assert ("`datasets` is not installed" in out) == (not hub_extra)
    for size in ("70m", "160m", "410m"):
        assert f"pythia-{size} (EleutherAI/pythia-{size}, hub): unchecked (not in the local Hugging Face cache" in out
    rows = re.search(r"│ transfer:row\s*│\s*(\d+)\s*│", r.stdout)
    assert rows and int(rows.group(1)) == 67 * 2 * 3          # last + init control, three sizes
    assert re.search(r"│ all\s*│\s*\d+\s*│\s*0\s*│", r.stdout)
