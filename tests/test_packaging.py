"""The built wheel is the whole package: installed (not editable) in a fresh environment, away from the
checkout, `taskspace demo --quick` runs from it and writes its report (issue 11, item 7).

The wheel is built, installed and its quick demo run once per session by conftest's ``quick_demo``
fixture, which tests/test_demo.py and tests/test_docs.py read too."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_wheel_installs_and_runs_the_quick_demo(quick_demo):
    names = set(zipfile.ZipFile(quick_demo.wheel).namelist())
    assert "taskspace/py.typed" in names and "taskspace/report/template.html" in names
    assert "taskspace/suites/toy/grammar.py" in names and "taskspace/scoring/head.py" in names

    where = Path(quick_demo.imported_from)
    assert where.is_relative_to(quick_demo.venv), f"taskspace imported from {where}, not from the wheel"
    assert not quick_demo.cwd.is_relative_to(REPO)   # away from the checkout

    assert quick_demo.returncode == 0, quick_demo.stderr[-3000:]
    assert (quick_demo.out / "report.html").stat().st_size > 10_000
    assert "computed with: python" in quick_demo.stdout
