"""The on-disk layout of one probe run in ``DIR`` (the run system and the analysis code read exactly this).

::

    DIR/spaces/gradients.csv|.json                     cosine of ḡ_a, ḡ_b over all parameters
    DIR/spaces/gradients_by_module/<module>.csv|.json  the same per module (embed, block0.attn, …)
    DIR/spaces/overlap.csv|.json                       Jaccard of the masks
    DIR/stats/distributedness.csv|.json                per task: norm, participation ratio, mask size, shares
    DIR/stats/<probe>_summary.json                     within / between / difference (+ control)
    DIR/masks/<task>.safetensors                       the masks, when asked for
    DIR/control/…                                      the same tree for the control model

The FTGD probes write ``spaces/transfer*.csv``, ``spaces/baseline*.csv``, ``deltas/<task>.safetensors``
and ``ftgd/<task>.json`` into the same DIR. Every file is written atomically.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import InputError
from ..io import atomic_path, write_json
from ..spaces import TaskSpace

# pandas is imported where a table is written: `import taskspace` and the command line start without it

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..spaces import TaskSpace

CONTROL_DIR = "control"
#: the folders of the layout itself (the probes' own folders are declared in their specs: ``ProbeSpec.files``)
LAYOUT_DIRS = ("spaces", "stats", "masks", "scores", "cards", CONTROL_DIR)
#: ``spaces/halves/<space>.csv``: the split-half pass (the probe on two disjoint halves of every task's pairs)
HALVES_DIR = "halves"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")


def task_filename(task: str) -> str:
    """A file-name stem for ``task``: the id itself when it is a safe name (BLiMP UIDs are), otherwise a
    sanitised form plus a short hash, so two different ids never share a file."""
    if _SAFE.fullmatch(task) and not task.endswith("."):
        return task
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("._")[:100] or "task"
    return f"{clean}-{hashlib.sha256(task.encode()).hexdigest()[:10]}"


def probe_dir(out: str | Path, control: bool = False) -> Path:
    """``DIR`` itself, or ``DIR/control`` for the control model's results."""
    return Path(out) / CONTROL_DIR if control else Path(out)


def space_path(out: str | Path, name: str, module: str | None = None) -> Path:
    """The CSV path of space ``name`` (``gradients``, ``overlap``, ``transfer_margin`` …) or of one
    module's gradient space. Always pass the ``.csv`` path to ``TaskSpace.load``: module names contain
    dots (``block0.attn``)."""
    base = Path(out) / "spaces"
    if module is not None:
        return base / f"{name}_by_module" / f"{module}.csv"
    return base / f"{name}.csv"


def write_space(out: str | Path, name: str, space: "TaskSpace", module: str | None = None) -> Path:
    """Write one task space into the layout; returns the CSV path."""
    return space.save(space_path(out, name, module))


def write_gradient_spaces(out: str | Path, space: "TaskSpace", by_module: Mapping[str, "TaskSpace"],
                          name: str | None = None) -> list[Path]:
    """``spaces/<name>.csv|.json`` and ``spaces/<name>_by_module/<module>.csv|.json`` (the gradients
    probe's); ``name``: by default the space's own (``space.kind``)."""
    name = name if name is not None else space.kind
    paths = [write_space(out, name, space)]
    for module, sp in by_module.items():
        paths.append(write_space(out, name, sp, module=module))
    return paths


def write_distributedness(out: str | Path, table: "pd.DataFrame", provenance: dict) -> Path:
    """``stats/distributedness.csv`` plus its provenance sidecar ``stats/distributedness.json``."""
    path = Path(out) / "stats" / "distributedness.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")
    write_json(path.with_suffix(".json"), {"columns": list(table.columns), "provenance": provenance})
    return path


def write_summary(out: str | Path, probe: str, summary: dict) -> Path:
    """``stats/<probe>_summary.json``: within / between / difference, trained and control."""
    path = Path(out) / "stats" / f"{probe}_summary.json"
    write_json(path, summary)
    return path


def mask_path(out: str | Path, task: str) -> Path:
    """``masks/<task>.safetensors``: where a task's mask goes (written by
    :func:`taskspace.probes.gradient.masks.write_masks`)."""
    return Path(out) / "masks" / f"{task_filename(task)}.safetensors"


def read_spaces(out: str | Path) -> dict[str, "TaskSpace"]:
    """Every task space under ``DIR/spaces``: ``{"gradients": …, "overlap": …, "transfer_margin": …,
    "gradients_by_module/block0.attn": …}`` (what exists)."""
    base = Path(out) / "spaces"
    found: dict[str, TaskSpace] = {}
    if not base.is_dir():
        return found
    for csv in sorted(base.glob("*.csv")):
        found[csv.stem] = TaskSpace.load(csv)
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        for csv in sorted(sub.glob("*.csv")):
            found[f"{sub.name}/{csv.name[:-4]}"] = TaskSpace.load(csv)
    return found


def read_distributedness(out: str | Path) -> "pd.DataFrame":
    """``stats/distributedness.csv`` as a DataFrame."""
    import pandas as pd


    path = Path(out) / "stats" / "distributedness.csv"
    if not path.exists():
        raise InputError("file not found", file=path)
    return pd.read_csv(path)
