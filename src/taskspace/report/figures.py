"""Static figures (matplotlib) of a compared run, as PNG and SVG in ``RUN/figures/``:
heatmaps ordered by group with separators and labels (diverging colormap centred at 0 for signed
spaces), each beside its control and the difference; clustered heatmaps with dendrograms; per-group
generalisation bars with error bars; dynamics over checkpoints; model sizes side by side.

Heatmaps and clustered heatmaps are drawn for the headline spaces (:func:`static_spaces`: gradient,
overlap, normalised transfer, as the headline reports them) at each model's final checkpoint; every
space of every checkpoint is in the report's interactive explorer, and drawing them all statically cost
more than every probe of the quick demo together (124 files for nine probes)."""
from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..analysis.clustering import cluster_space
from ..analysis.collect import RunData
from ..analysis.findings import label
from ..analysis.hypothesis import group_blocks, group_order
from ..io import atomic_path
from ..probes.registry import generalization_spaces, is_signed_space, main_spaces
from ..progress import progress_bar
from ..provenance import usable_cpus
from ..spaces import TaskSpace

# matplotlib and scipy are imported where a figure is drawn: importing the report does not touch matplotlib's
# backend

#: resolution of the PNGs (dots per inch); the SVGs are vector
PNG_DPI = 130
#: fewer figures than this per worker process are saved faster in this process than a worker starts up
MIN_FIGURES_PER_WORKER = 6


def _figure(**kwargs):
    """A new :class:`matplotlib.figure.Figure`, made without pyplot: it needs no backend, so drawing or saving
    one never changes the process's backend (a notebook keeps its own), and it shows inline in Jupyter."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def is_signed(space: TaskSpace) -> bool:
    """Whether the space's values carry a sign: what its registry entry says (overlap, a Jaccard index,
    does not), unless the data disagree (a negative entry is always shown on a diverging scale)."""
    m = space.matrix[np.isfinite(space.matrix)]
    return bool(is_signed_space(space.kind) or (m.size > 0 and m.min() < 0))


def ordered(space: TaskSpace) -> TaskSpace:
    """The space with tasks ordered so that each group is contiguous."""
    return space.select([space.tasks[i] for i in group_order(space.groups)])


def _offdiag(m: np.ndarray) -> np.ndarray:
    v = m[~np.eye(m.shape[0], dtype=bool)]
    return v[np.isfinite(v)]


def _vmax(*mats: np.ndarray) -> float:
    # Off-diagonal only: self-similarity (1 for cosine, Jaccard and T̃) would wash out the rest.
    vals = np.concatenate([np.abs(_offdiag(m)) for m in mats] or [np.zeros(1)])
    off = vals[vals > 0]
    # A robust top (99th percentile) so one huge self-transfer does not wash out the rest.
    return float(np.percentile(off, 99)) if off.size else 1.0


def draw_heatmap(ax, space: TaskSpace, *, signed: bool | None = None, vmax: float | None = None,
                 title: str = "", colorbar: bool = True, show_groups: bool = True):
    """Draw ``space`` (already ordered by group) on ``ax`` with group separators and group labels."""
    signed = is_signed(space) if signed is None else signed
    m = space.matrix
    if signed:
        v = vmax if vmax is not None else _vmax(m)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
    else:
        v = vmax if vmax is not None else (float(_offdiag(m).max()) if _offdiag(m).size else 1.0)
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=v, interpolation="nearest")
    blocks = group_blocks(space.groups)
    for _, _, stop in blocks[:-1]:
        ax.axhline(stop - 0.5, color="k", lw=0.6)
        ax.axvline(stop - 0.5, color="k", lw=0.6)
    if show_groups:
        centers = [(a + b - 1) / 2 for _, a, b in blocks]
        names = [_short(g) for g, _, _ in blocks]
        ax.set_yticks(centers)
        ax.set_yticklabels(names, fontsize=6)
        ax.set_xticks(centers)
        ax.set_xticklabels(names, fontsize=6, rotation=60, ha="right")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    return im


def _short(group: str, n: int = 22) -> str:
    g = group.replace("_", " ")
    return g if len(g) <= n else g[: n - 1] + "…"


def fig_space(space: TaskSpace, control: TaskSpace | None = None, *, title: str = "",
              control_label: str = "control"):
    """One space, or three panels: trained, control (same colour scale), trained − control."""
    a = ordered(space)
    if control is None:
        fig = _figure(figsize=(5.6, 5))
        ax = fig.subplots()
        draw_heatmap(ax, a, title=title)
        fig.tight_layout()
        return fig
    tasks = [t for t in a.tasks if t in set(control.tasks)]
    a = a.select(tasks)
    c = control.select(tasks)
    signed = is_signed(a) or is_signed(c)
    v = _vmax(a.matrix, c.matrix) if signed else float(max([_offdiag(a.matrix).max(initial=0),
                                                            _offdiag(c.matrix).max(initial=0)]) or 1.0)
    d = TaskSpace(a.matrix - c.matrix, a.tasks, a.groups, a.kind + "_difference")
    fig = _figure(figsize=(15, 5))
    axes = fig.subplots(1, 3)
    draw_heatmap(axes[0], a, signed=signed, vmax=v, title=title)
    draw_heatmap(axes[1], c, signed=signed, vmax=v, title=control_label)
    draw_heatmap(axes[2], d, signed=True, title="difference (trained − control)")
    fig.tight_layout()
    return fig


def fig_clustered(space: TaskSpace, *, title: str = "", absolute: bool = False):
    """Average-linkage dendrogram over the heatmap in leaf order, with a strip coloured by group."""
    from matplotlib import gridspec
    from matplotlib.patches import Rectangle
    from scipy.cluster.hierarchy import dendrogram

    cl = cluster_space(space, absolute=absolute)
    tasks = cl["tasks"]
    fig = _figure(figsize=(5.6, 6.2))
    gs = gridspec.GridSpec(3, 2, height_ratios=[1.2, 0.18, 5], width_ratios=[20, 1], hspace=0.02, wspace=0.05)
    ax_d = fig.add_subplot(gs[0, 0])
    ax_s = fig.add_subplot(gs[1, 0])
    ax_h = fig.add_subplot(gs[2, 0])
    ax_c = fig.add_subplot(gs[2, 1])
    if len(tasks) >= 2:
        dendrogram(np.asarray(cl["linkage"]), ax=ax_d, no_labels=True, color_threshold=0,
                   above_threshold_color="0.3")
    ax_d.axis("off")
    order = [tasks[i] for i in cl["order"]]
    sub = space.select(order)
    groups = list(dict.fromkeys(space.groups))
    cmap = _cmap("tab20")
    colors = np.array([[cmap(groups.index(g) % 20)] for g in sub.groups]).transpose(1, 0, 2)
    ax_s.imshow(colors, aspect="auto", interpolation="nearest")
    ax_s.set_xticks([])
    ax_s.set_yticks([])
    ax_s.set_ylabel("group", rotation=0, fontsize=6, ha="right", va="center")
    signed = is_signed(sub)
    m = np.abs(sub.matrix) if absolute else sub.matrix
    shown = TaskSpace(m, sub.tasks, sub.groups, sub.kind)
    im = draw_heatmap(ax_h, shown, signed=signed and not absolute, colorbar=False, show_groups=False)
    if len(order) <= 40:
        ax_h.set_yticks(range(len(order)))
        ax_h.set_yticklabels([_short(t, 30) for t in order], fontsize=5)
    fig.colorbar(im, cax=ax_c).ax.tick_params(labelsize=6)
    ari = cl["ari"]
    fig.suptitle(f"{title}\nclusters vs groups: ARI {ari:+.2f}" if np.isfinite(ari) else title, fontsize=9)
    handles = [Rectangle((0, 0), 1, 1, color=cmap(i % 20)) for i in range(len(groups))]
    fig.legend(handles, [_short(g) for g in groups], loc="lower center", ncol=min(4, len(groups)),
               fontsize=6, frameon=False)
    fig.subplots_adjust(bottom=0.05 + 0.018 * ((len(groups) + 3) // 4), top=0.9)
    return fig


def fig_generalization(table: dict, *, title: str = "", columns: Sequence[str] | None = None):
    """Grouped bars: one group of bars per linguistic group, one bar per column, error bars = std."""
    groups = table["groups"]
    cols = list(columns or table["columns"])
    fig = _figure(figsize=(max(6, 0.7 * len(groups) * max(1, len(cols)) ** 0.5 + 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(cols))
    x = np.arange(len(groups))
    cmap = _cmap("viridis")
    for j, col in enumerate(cols):
        mean = [_num(table["cells"][g].get(col, {}).get("mean")) for g in groups]
        std = [_num(table["cells"][g].get(col, {}).get("std")) for g in groups]
        ax.bar(x + (j - (len(cols) - 1) / 2) * width, np.nan_to_num(mean), width,
               yerr=np.nan_to_num(std), capsize=2, label=col, color=cmap(j / max(1, len(cols) - 1) * 0.9),
               error_kw={"lw": 0.7})
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels([_short(g) for g in groups], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("mean ± std within group")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and np.isfinite(x) else np.nan


def fig_dynamics(slug: str, per_space: dict, control_gaps: dict | None = None):
    """Three panels over checkpoints: Spearman with the next and the final space; within − between
    per probe (control as a dashed line); per-group generalisation per step when transfer is present."""
    names = [n for n in main_spaces() if n in per_space] or list(per_space)
    gen_name = next((n for n in generalization_spaces() if n in per_space and "generalization" in per_space[n]),
                    None)
    k = 3 if gen_name else 2
    fig = _figure(figsize=(5 * k, 3.8))
    axes = fig.subplots(1, k)
    for i, name in enumerate(names):
        d = per_space[name]
        revs = d["revisions"]
        x = np.arange(len(revs))
        color = f"C{i}"
        axes[0].plot(x, [_num(v) for v in d["rho_final"]], "-o", color=color, label=f"{label(name)}: with final")
        axes[0].plot(x[:-1] + 0.5, [_num(v) for v in d["rho_next"]], ":s", color=color, ms=4,
                     label=f"{label(name)}: with next")
        axes[1].errorbar(x, [_num(v) for v in d["difference"]], yerr=[_num(v) for v in d["se_difference"]],
                         fmt="-o", color=color, capsize=2, label=label(name))
        if control_gaps and name in control_gaps and control_gaps[name] is not None:
            axes[1].axhline(control_gaps[name], color=color, ls="--", lw=0.8)
    for ax in axes[:2]:
        ax.set_xticks(np.arange(len(revs)))
        ax.set_xticklabels(revs, fontsize=7, rotation=30)
    axes[0].set_ylim(-0.1, 1.05)
    axes[0].set_ylabel("Spearman ρ between task spaces")
    axes[0].legend(fontsize=6, frameon=False)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_ylabel("within − between (dashed: control)")
    axes[1].legend(fontsize=6, frameon=False)
    if gen_name:
        t = per_space[gen_name]["generalization"]
        for j, g in enumerate(t["groups"]):
            y = [_num(t["cells"][g].get(r, {}).get("mean")) for r in t["columns"]]
            axes[2].plot(np.arange(len(y)), y, "-o", ms=3, color=_cmap("tab20")(j % 20), label=_short(g))
        axes[2].set_xticks(np.arange(len(t["columns"])))
        axes[2].set_xticklabels(t["columns"], fontsize=7, rotation=30)
        axes[2].axhline(0, color="k", lw=0.5)
        axes[2].set_ylabel(f"per-group {label(gen_name)}")
        axes[2].legend(fontsize=5, frameon=False, ncol=2)
    fig.suptitle(f"{slug}: over training", fontsize=10)
    fig.tight_layout()
    return fig


def fig_sizes(sizes: dict):
    """Within and between per model size (final checkpoints), one panel per probe."""
    names = [n for n in main_spaces() if n in sizes] or list(sizes)
    fig = _figure(figsize=(3.6 * len(names), 3.6))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = sizes[name]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [_num(r["within"]) for r in rows], 0.4, label="within", color="C3")
        ax.bar(x + 0.2, [_num(r["between"]) for r in rows], 0.4, label="between", color="C7")
        ax.set_xticks(x)
        ax.set_xticklabels([r["model"] + (f"\n{r['n_parameters'] / 1e6:.2g}M" if r.get("n_parameters") else "")
                            for r in rows], fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(label(name), fontsize=9)
        ax.legend(fontsize=6, frameon=False)
    fig.suptitle("model sizes side by side (final checkpoints)", fontsize=10)
    fig.tight_layout()
    return fig


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x"


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Save ``fig`` as ``name.png`` and ``name.svg`` in ``out_dir`` (atomically), each cut to the figure's
    tight bounding box plus ``savefig.pad_inches``, as ``savefig(bbox_inches="tight")`` does.

    savefig's "tight" draws a figure twice per format (once to find the box, once to render). Here one
    raster draw finds the box and is the PNG (cut out of it, with the figure's face colour where the padded
    box reaches past the figure), and the SVG is drawn once with that box: two draws instead of four. The
    PNG is the same picture up to a shift of under half a pixel."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    dpi = fig.get_dpi()
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(PNG_DPI)
    try:
        canvas.draw()
        renderer = canvas.get_renderer()
        box = fig.get_tightbbox(renderer).padded(matplotlib.rcParams["savefig.pad_inches"])
        png = _cut(np.asarray(renderer.buffer_rgba()), box, PNG_DPI, fig.get_facecolor())
    finally:
        fig.set_dpi(dpi)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    with atomic_path(paths[0]) as tmp:
        imsave(tmp, png, format="png", dpi=PNG_DPI)
    with atomic_path(paths[1]) as tmp:
        fig.savefig(tmp, format="svg", bbox_inches=box)
    return paths


def _cut(pixels: np.ndarray, box, dpi: float, face) -> np.ndarray:
    """The part of a rendered figure (``pixels``: rows from the top × columns × RGBA) inside ``box``
    (inches from the bottom left), sized as savefig sizes a tight figure (whole pixels, rounded down);
    where the box reaches past the figure, the figure's face colour."""
    from matplotlib.colors import to_rgba

    height, width = pixels.shape[:2]
    w, h = int(box.width * dpi), int(box.height * dpi)
    left, top = round(box.x0 * dpi), round(height - box.y1 * dpi)
    out = np.empty((h, w, 4), np.uint8)
    out[...] = np.round(np.asarray(to_rgba(face)) * 255).astype(np.uint8)
    y0, y1, x0, x1 = max(top, 0), min(top + h, height), max(left, 0), min(left + w, width)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = pixels[y0:y1, x0:x1]
    return out


def static_spaces(run: RunData, cmp: dict) -> list[str]:
    """The spaces drawn as static heatmaps: the main spaces the headline reports (gradient, overlap,
    normalised transfer; registry order), or the run's first main space when it has none of them."""
    shown = [n for n in main_spaces() if n in run.probes] or list(run.probes)
    head = cmp.get("headline", {}).get("spaces", {})
    return [n for n in shown if n in head] or shown[:1]


def write_figures(run: RunData, cmp: dict, out_dir: str | Path, *, workers: int = 1) -> dict[str, list[Path]]:
    """Every figure of the report into ``out_dir``; returns ``{figure name: [png, svg]}`` (in drawing order).

    ``workers`` > 1: that many spawned processes make and save the figures (each job pickles: a function
    over plain data); the files are the same as with one process. Like any spawning code, a script that
    asks for workers needs the ``if __name__ == "__main__":`` guard; the default draws in this process."""
    out_dir = Path(out_dir)
    jobs = _figure_jobs(run, cmp)
    workers = min(workers, len(jobs) // MIN_FIGURES_PER_WORKER)
    with progress_bar("drawing figures", len(jobs)) as advance:
        if workers > 1:
            return _save_in_workers(jobs, out_dir, workers, advance)
        out: dict[str, list[Path]] = {}
        for name, make in jobs:
            out[name] = save(make(), out_dir, name)
            advance()
        return out


def save_workers() -> int:
    """Processes that make and save a report's figures from the command line: one per usable CPU, at most 4."""
    return usable_cpus(at_most=4)


def _save_in_workers(jobs: list, out_dir: Path, workers: int, advance: Callable[..., None]) -> dict[str, list[Path]]:
    """Hand each figure's job (a picklable partial over plain data) to one of ``workers`` spawned processes,
    which makes the figure and saves it."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {pool.submit(_make_and_save, make, str(out_dir), name): name for name, make in jobs}
        done: dict[str, list[Path]] = {}
        for fut in as_completed(pending):
            done[pending[fut]] = [Path(p) for p in fut.result()]
            advance()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return {name: done[name] for name, _ in jobs}


def _make_and_save(make: Callable[[], object], out_dir: str, name: str) -> list[str]:
    """:func:`save` of the figure ``make()`` draws, in a worker process."""
    return [str(p) for p in save(make(), Path(out_dir), name)]


def _figure_jobs(run: RunData, cmp: dict) -> list[tuple[str, Callable[[], object]]]:
    """``(figure name, function that makes the figure)`` for every figure of the report, in drawing order.
    Each function is a :func:`functools.partial` of a module-level function over plain data, so it pickles:
    worker processes make the figures as well as save them."""
    jobs: list[tuple[str, Callable[[], object]]] = []
    shown = static_spaces(run, cmp)
    for m in run.models:
        if m.final is not None:
            rev = m.revisions[-1]
            cell, ctrl = m.cells[rev], m.control_of(rev)     # drawn beside its control
            for name in shown:
                if name in cell.spaces:
                    c = ctrl.spaces.get(name) if ctrl is not None else None
                    jobs.append((f"heatmap_{_slug(m.slug)}_{_slug(rev)}_{name}", partial(
                        fig_space, cell.spaces[name], c, title=f"{label(name)} · {m.slug} @ {rev}",
                        control_label=f"control: {ctrl.revision}" if ctrl else "")))
            for name in shown:
                if name in m.final.spaces:
                    jobs.append((f"clustered_{_slug(m.slug)}_{name}", partial(
                        fig_clustered, m.final.spaces[name], title=f"{label(name)} · {m.slug} @ {m.final.revision}")))
    for name, g in cmp.get("generalization", {}).items():
        jobs.append((f"generalization_{name}", partial(
            fig_generalization, g["by_checkpoint"], title=f"per-group generalisation ({label(name)}), every checkpoint")))
        if len(g["by_size"]["columns"]) > 1:
            jobs.append((f"generalization_sizes_{name}", partial(
                fig_generalization, g["by_size"],
                title=f"per-group generalisation ({label(name)}) by model size, final checkpoints")))
    cells = {c["id"]: c for c in cmp.get("cells", [])}
    for slug, per in cmp.get("dynamics", {}).items():
        if per:
            m = next(x for x in run.models if x.slug == slug)
            gaps = {}
            if m.control and f"{slug}@{m.control}" in cells and m.control not in m.revisions:
                sp = cells[f"{slug}@{m.control}"]["spaces"]
                gaps = {n: sp[n][sp[n].get("reading", "signed")]["difference"] for n in per if n in sp}
            jobs.append((f"dynamics_{_slug(slug)}", partial(fig_dynamics, slug, per, gaps)))
    if len(run.models) > 1 and cmp.get("sizes"):
        jobs.append(("sizes", partial(fig_sizes, cmp["sizes"])))
    return jobs
