"""The built wheel is the whole package: installed (not editable) in a fresh environment, away from the
checkout, `taskspace demo --quick` runs from it and writes its report (issue 11, item 7)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def build_wheel(dest: Path, work: Path) -> Path:
    """The wheel of a clean copy of the sources (no build folders or egg-info land in the checkout)."""
    src = work / "source"
    (src / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src" / "taskspace", src / "src" / "taskspace",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # --no-build-isolation: build with the installed setuptools, nothing fetched from a registry
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dest), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = dest.glob("taskspace-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_installs_and_runs_the_quick_demo(tmp_path):
    wheel = build_wheel(tmp_path / "dist", tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "taskspace/py.typed" in names and "taskspace/report/template.html" in names
    assert "taskspace/suites/toy/grammar.py" in names and "taskspace/scoring/head.py" in names

    venv = tmp_path / "venv"
    # the installed torch, transformers, ... come from the system site; taskspace only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # --ignore-installed: the system site's (editable) taskspace of the same version must not count
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TASKSPACE_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    where = subprocess.run([str(py), "-c", "import taskspace; print(taskspace.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    assert Path(where).is_relative_to(venv), f"taskspace imported from {where}, not from the wheel"

    out = tmp_path / "demo"
    r = subprocess.run([str(venv / "bin" / "taskspace"), "demo", "--quick", "--out", str(out)], cwd=elsewhere,
                       env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "report.html").stat().st_size > 10_000
    assert "computed with: python" in r.stdout
