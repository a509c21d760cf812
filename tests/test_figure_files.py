"""How the report's figure files are written: one raster draw per PNG cut to savefig's tight box, and a
comparison reused while it is newer than the run's results."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")


def _figure(text_past_edge: bool):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.imshow(np.arange(64.0).reshape(8, 8), cmap="RdBu_r")
    ax.set_title("a title")
    ax.set_yticks(range(8), [f"task {i}" for i in range(8)])
    if text_past_edge:            # reaches past the figure's left edge: the tight box grows the picture
        fig.text(-0.15, 0.5, "a label outside the figure", rotation=90)
    fig.tight_layout()
    return fig


@pytest.mark.parametrize("text_past_edge", [False, True])
def test_png_is_the_tight_savefig_picture(tmp_path, text_past_edge):
    """The PNG has savefig(bbox_inches="tight")'s size and, up to a sub-pixel shift, its pixels; where the
    box reaches past the figure the picture is the figure's face colour (white), not black or transparent."""
    from PIL import Image

    from taskspace.report.figures import PNG_DPI, save

    ref = io.BytesIO()
    _figure(text_past_edge).savefig(ref, format="png", dpi=PNG_DPI, bbox_inches="tight")
    expected = np.asarray(Image.open(ref).convert("RGBA")).astype(int)
    png, svg = save(_figure(text_past_edge), tmp_path, "f")
    got = np.asarray(Image.open(png).convert("RGBA")).astype(int)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 6                   # antialiased edges move by under a pixel
    assert (np.abs(got - expected).max(axis=2) > 64).mean() < 0.05
    assert (got[..., 3] == 255).all()
    if text_past_edge:
        assert (got[:, :3, :3] > 250).all()                     # the grown margin is white
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]


def test_cut_fills_what_lies_past_the_figure_with_the_face_colour():
    from matplotlib.transforms import Bbox

    from taskspace.report.figures import _cut

    pixels = np.zeros((10, 20, 4), np.uint8)                   # 10 rows × 20 columns at 10 dpi: 2 × 1 inches
    pixels[..., 3] = 255
    out = _cut(pixels, Bbox([[-0.5, 0.2], [1.0, 1.3]]), 10, "red")
    assert out.shape == (11, 15, 4)
    assert (out[:3, :, 0] == 255).all() and (out[:3, :, 1] == 0).all()      # above the figure: 0.3 in
    assert (out[:, :5, 0] == 255).all()                                      # left of it: 0.5 in
    assert (out[3:, 5:, :3] == 0).all()                                      # the figure itself


def test_a_fresh_comparison_is_reused_when_only_run_json_is_newer(tmp_path):
    """A run rewrites run.json with its final status after its report job; `taskspace report` afterwards
    must not compare the run again. A newer result file does make the comparison stale."""
    from taskspace.report.html import _comparison_is_fresh

    cmp = tmp_path / "comparison.json"
    result = tmp_path / "m" / "step1" / "spaces" / "gradients.csv"
    result.parent.mkdir(parents=True)
    for p, t in ((result, 100), (cmp, 200), (tmp_path / "run.json", 300), (tmp_path / "figures" / "x.json", 400)):
        p.parent.mkdir(exist_ok=True)
        p.write_text("{}")
        os.utime(p, (t, t))
    assert _comparison_is_fresh(cmp, tmp_path)
    os.utime(result, (250, 250))
    assert not _comparison_is_fresh(cmp, tmp_path)
