"""The report: figures (PNG + SVG), the self-contained report.html, and a headless Chromium check that
its heatmaps are drawn (issue 5, item 3)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from taskspace.spaces import TaskSpace
from test_analysis import GROUPS4, TASKS4, block_space, make_run

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A two-size × three-checkpoint run, reported once through the real CLI."""
    root = make_run(tmp_path_factory.mktemp("report") / "run")
    r = run_cli("report", root, "--permutations", "99")
    assert r.returncode == 0, r.stderr
    return root, r


def test_report_cli_writes_figures_and_page(reported):
    root, r = reported
    assert str(root / "report.html") in r.stdout
    assert (root / "comparison.json").exists()
    names = ["sizes", "generalization_transfer_normalized", "generalization_sizes_transfer_normalized"]
    for slug in ("toy-tiny", "toy-small"):
        names.append(f"dynamics_{slug}")
        for space in ("gradients", "overlap", "transfer_normalized"):   # the headline's spaces
            names.append(f"clustered_{slug}_{space}")
            names.append(f"heatmap_{slug}_step300_{space}")              # the final checkpoint
    for n in names:
        png, svg = root / "figures" / f"{n}.png", root / "figures" / f"{n}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", n
        head = svg.read_text()[:2000]
        assert "<svg" in head, n
    # earlier checkpoints are drawn by the interactive explorer only (static heatmaps of every space and
    # checkpoint cost more than the quick demo's probes)
    assert not list((root / "figures").glob("heatmap_*_step100_*")) and not list((root / "figures").glob("heatmap_*_step0_*"))
    assert {p.stem for p in (root / "figures").glob("*.png")} == set(names)
    assert not list((root / "figures").glob(".*.tmp"))


def test_report_is_self_contained_and_carries_the_numbers(reported):
    root, _ = reported
    page = (root / "report.html").read_text()
    cmp = json.loads((root / "comparison.json").read_text())
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", page)
    assert not re.search(r"<img[^>]+src=[\"']?https?:", page)
    assert "Plotly" in page and len(page) > 3_000_000  # plotly.js inlined
    data = json.loads(re.search(r'<script type="application/json" id="ts-data">(.*?)</script>', page,
                                re.S).group(1))
    tn = data["cells"]["toy-small@step300"]["transfer_normalized"]
    assert tn["lo"] is not None and tn["hi"] is not None  # the CI reaches the hover
    assert tn["groups"] == sorted(tn["groups"], key=GROUPS4.index)  # ordered by group
    default = data["views"][data["default_view"]]
    assert [p["cell"] for p in default["panels"]] == ["toy-small@step300", "toy-small@step0", "toy-small@step300"]
    assert default["panels"][2]["minus"] == "toy-small@step0"
    h = cmp["headline"]["spaces"]["transfer_normalized"]
    assert f"{h['rho']:+.3f}" in page and f"{h['within']:+.3f}" in page
    for f in cmp["findings"]:
        assert f["this_run"].replace("&", "&amp;")[:60] in page
    assert "Provenance" in page and cmp["provenance"]["versions"]["numpy"] in page


def test_heatmap_figures_order_groups_and_show_the_difference():
    from taskspace.report.figures import draw_heatmap, fig_space, ordered

    perm = [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]  # interleave the groups
    s = block_space(0.6, 0.05, seed=2)
    mixed = s.select([TASKS4[i] for i in perm])
    o = ordered(mixed)
    assert o.groups == GROUPS4 and np.allclose(o.matrix, s.matrix)
    ctrl = block_space(0.1, 0.05, seed=3)
    fig = fig_space(mixed, ctrl.select([TASKS4[i] for i in perm]), title="t")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    trained, control, diff = (np.asarray(ax.images[0].get_array()) for ax in panels)
    assert np.allclose(trained, s.matrix) and np.allclose(control, ctrl.matrix)
    assert np.allclose(diff, s.matrix - ctrl.matrix)  # trained − control, not the other way round
    lo, hi = panels[0].images[0].get_clim()
    assert lo == -hi and hi > 0  # diverging scale centred at 0
    lines = [ln for ln in panels[0].lines]
    assert sorted({ln.get_ydata()[0] for ln in lines if ln.get_ydata()[0] == ln.get_ydata()[-1]}) == [2.5, 5.5, 8.5]
    import matplotlib.pyplot as plt

    plt.close(fig)
    ov = TaskSpace(np.abs(s.matrix), s.tasks, s.groups, "overlap")
    fig2, ax = plt.subplots()
    lo, hi = draw_heatmap(ax, ov).get_clim()
    assert lo == 0 and hi > 0
    plt.close(fig2)


def _chromium(args: list[str], user_dir: Path) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={user_dir}", "--virtual-time-budget=5000"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_draws_the_heatmaps(reported, tmp_path):
    from PIL import Image

    root, _ = reported
    url = (root / "report.html").resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # plotly rendered three heatmap traces (trained, control, difference) into its SVG layers
    assert dom.stdout.count('class="heatmaplayer') >= 3
    assert dom.stdout.count('<g class="hm"') == 3
    shot = tmp_path / "shot.png"
    r = _chromium(["--window-size=1400,1700", f"--screenshot={shot}", url], tmp_path / "profile2")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (1700, 1400)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # not a blank page
    below_headline = img[700:]
    red = (below_headline[..., 0] > 150) & (below_headline[..., 1] < 120) & (below_headline[..., 2] < 120)
    # within-group blocks are strongly positive: the diverging scale's reds fill whole blocks
    assert red.sum() > 5000, red.sum()
    rows = np.flatnonzero(red.sum(1) > 20)
    cols = np.flatnonzero(red.sum(0) > 20)
    assert rows.size > 100 and cols.size > 100  # spread over the heatmap, not one stray line


def test_atomic_writes_leave_no_temp_file_on_error(tmp_path):
    from taskspace.io import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"half a figure")
            raise RuntimeError("killed while drawing")
    assert list(tmp_path.iterdir()) == []


def test_rebuilt_report_removes_temp_files_of_a_killed_build(reported):
    """``kill -9`` during a report skips atomic_path's cleanup; the next build removes what is left.
    The rebuild saves its figures in this process, the command line in worker processes: the same PNGs."""
    from taskspace.report import build_report, save_workers
    from taskspace.report.figures import MIN_FIGURES_PER_WORKER

    root, _ = reported
    pngs = {p.name: p.read_bytes() for p in (root / "figures").glob("*.png")}
    stale = [root / "figures" / ".sizes.png.k1ll3d.tmp", root / "figures" / ".heatmap_x.svg.abc.tmp",
             root / ".report.html.q9.tmp"]
    for f in stale:
        f.write_bytes(b"half a file")
    keep = root / ".jobs-note.tmp.txt"          # not one of atomic_path's names: left alone
    keep.write_text("x")
    build_report(root, permutations=99)
    assert not any(f.exists() for f in stale)
    assert keep.exists() and not list((root / "figures").glob(".*.tmp"))
    assert len(pngs) >= 2 * MIN_FIGURES_PER_WORKER          # enough figures for the CLI to save in workers
    if save_workers() > 1:                     # the CLI saved in workers: the files must not depend on it
        assert {p.name: p.read_bytes() for p in (root / "figures").glob("*.png")} == pngs
