"""Read what the probes and the run system wrote: one probe DIR (one model checkpoint) or a RUN
directory holding one probe DIR per model × revision (docs/design.md, "Files"). Bad files become one-line
:class:`~taskspace.errors.InputError` naming file, line and field."""
from __future__ import annotations

import copy
import csv as csvmod
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..probes.output import HALVES_DIR, LAYOUT_DIRS
from ..probes.registry import all_spaces, probes, space_spec
from ..spaces import TaskSpace
from ..suites.splits import parse_half
from .dynamics import revision_key, step_of

# Size labels in the order of growing models, used when no parameter count is recorded.
SIZE_ORDER = ("nano", "micro", "tiny", "mini", "small", "medium", "base", "large", "xl", "xxl")
#: folders of a run or a probe DIR that are never a model or a checkpoint: the run's own, the probe layout's,
#: and every folder a registered probe declares it writes (``ProbeSpec.files``)
_RUN_DIRS = ("figures", "models", ".jobs", *LAYOUT_DIRS)


def _skip_dirs() -> set[str]:
    return {*_RUN_DIRS, *(path.split("/", 1)[0] for p in probes() for _, path in p.files)}


@dataclass
class Cell:
    """The outputs of the probes on one model checkpoint (one probe DIR)."""

    path: Path
    model: str
    revision: str | None
    spaces: dict[str, TaskSpace] = field(default_factory=dict)
    #: per-module / per-layer spaces: {space name: {part: TaskSpace}} (spaces/<name>_by_<by>/<part>.csv)
    parts: dict[str, dict[str, TaskSpace]] = field(default_factory=dict)
    distributedness: pd.DataFrame | None = None
    #: per fine-tuning probe (its declared ``status`` folder): {task: status record}
    finetuning: dict[str, dict[str, dict]] = field(default_factory=dict)
    scores: pd.DataFrame | None = None
    cards: pd.DataFrame | None = None   # vocabulary task cards (a probe's declared ``cards`` table)
    #: per-task tables a probe declares with the role ``table`` (one row per task), by their path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: halves spaces (``spaces/halves/<space>.csv``: the probe run with ``halves=True``), by space name
    halves: dict[str, TaskSpace] = field(default_factory=dict)
    control: "Cell | None" = None  # a control tree written inside this DIR (``DIR/control/``)

    @property
    def id(self) -> str:
        return f"{self.model}@{self.revision}" if self.revision else self.model

    @property
    def provenance(self) -> dict:
        for s in [*self.spaces.values(), *self.halves.values()]:
            if s.provenance:
                return s.provenance
        return {}

    @property
    def n_parameters(self) -> int | None:
        return n_parameters_of(self.provenance)

    @property
    def untrained(self) -> bool:
        r = str(self.revision or "")
        return step_of(r) == 0 or r == "init" or r.startswith("init:")


@dataclass
class ModelCells:
    """One model of a run: its checkpoints in training order and its control."""

    slug: str
    name: str
    size: str | None
    revisions: list[str]            # training order, controls that are fresh initialisations excluded
    control: str | None             # the revision that serves as control (may also be in revisions)
    cells: dict[str, Cell]          # every revision found, control included

    @property
    def n_parameters(self) -> int | None:
        for c in self.cells.values():
            if c.n_parameters:
                return c.n_parameters
        return None

    @property
    def final(self) -> Cell | None:
        return self.cells[self.revisions[-1]] if self.revisions else None

    def control_of(self, revision: str) -> Cell | None:
        """The control cell to compare ``revision`` with (its own ``control/`` tree first)."""
        cell = self.cells[revision]
        if cell.control is not None:
            return cell.control
        if self.control and self.control != revision and self.control in self.cells:
            return self.cells[self.control]
        return None


@dataclass
class RunData:
    """Everything found under a RUN directory (or a single probe DIR seen as a one-cell run)."""

    root: Path
    plan: dict | None
    models: list[ModelCells]
    single_dir: bool = False

    def cells(self) -> list[tuple[ModelCells, Cell]]:
        return [(m, m.cells[r]) for m in self.models for r in _cell_order(m)]

    @property
    def probes(self) -> list[str]:
        names: dict[str, None] = {}
        for _, c in self.cells():
            for k in c.spaces:
                names.setdefault(k)
        return list(names)


def _cell_order(m: ModelCells) -> list[str]:
    extra = [r for r in m.cells if r not in m.revisions]
    return sorted(extra, key=revision_key) + m.revisions


def n_parameters_of(prov: dict) -> int | None:
    """``model.n_parameters`` from a provenance dict (also accepted at the top level)."""
    for src in (prov.get("model") if isinstance(prov.get("model"), dict) else {}, prov):
        v = src.get("n_parameters")
        if isinstance(v, (int, float)) and v > 0:
            return int(v)
    return None


# -- files --------------------------------------------------------------------------------------------
def load_space(path: Path) -> TaskSpace:
    """:meth:`TaskSpace.load` with malformed CSV turned into an InputError naming line and field."""
    try:
        space = TaskSpace.load(path)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, pd.errors.ParserError) as e:
        raise _locate_csv_error(Path(path).with_suffix(".csv"), e) from None
    # an all-missing space is a result when its sidecar says how it was computed (every fine-tuning
    # failed, or no accuracy moved so T̃ = T / |T[a,a]| is undefined): compare and the report mark it by
    # its coverage. Without provenance, nothing says it is not a broken file.
    if not np.isfinite(space.matrix).any() and space.n_tasks > 0 and not space.provenance:
        raise InputError("no finite value in the task space", file=Path(path).with_suffix(".csv"))
    return space


def _locate_csv_error(csv: Path, err: Exception) -> InputError:
    sidecar = csv.with_suffix(".json")
    if isinstance(err, KeyError):
        return InputError(f"missing key {err}", file=sidecar, field=str(err).strip("'\""))
    try:
        with open(csv, newline="", encoding="utf-8") as f:
            rows = list(csvmod.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        return InputError(f"unreadable CSV ({e})", file=csv)
    if not rows:
        return InputError("empty CSV", file=csv)
    header = rows[0]
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            return InputError(f"{len(row)} fields, the header has {len(header)}", file=csv, line=i)
        for name, value in zip(header[1:], row[1:]):
            if value.strip() == "":
                continue
            try:
                float(value)
            except ValueError:
                return InputError(f"not a number: {value!r}", file=csv, line=i, field=name)
    return InputError(f"malformed task space ({err})", file=csv)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON ({e.msg})", file=path, line=e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable ({e})", file=path) from None
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", file=path)
    return obj


def _read_table(path: Path, required: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"malformed CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                         file=path) from None
    for col in required:
        if col not in df.columns:
            raise InputError("missing column", file=path, field=col)
    for col in [c for c in df.columns if c in numeric or str(c).startswith("share:")]:
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"not a number: {df[col].iloc[i]!r}", file=path, line=i + 2, field=str(col))
        df[col] = vals
    return df


def is_probe_dir(path: Path) -> bool:
    """True when ``path`` holds a ``spaces/`` folder with at least one task space (or halves space)."""
    return (path / "spaces").is_dir() and (any((path / "spaces").glob("*.csv"))
                                           or any((path / "spaces" / HALVES_DIR).glob("*.csv")))


#: the rule compare applies to a normalised space (a :class:`SpaceSpec` with ``normalizes``)
NORMALIZATION_RULE = ("rows kept where the interval of the self-transfer T[a, a] (bootstrap over eval pairs) lies "
                      "above 0; other rows are left out, so a self-transfer near 0 cannot blow a row up")


def mask_unreliable_rows(name: str, space: TaskSpace, spaces: dict[str, TaskSpace]) -> TaskSpace:
    """A normalised space (``T[a, b] / |T[a, a]|``) without the rows whose denominator is not measurably
    positive: the row of ``a`` is kept when the interval of ``T[a, a]`` in the space it normalises lies
    above 0 (:data:`NORMALIZATION_RULE`), else it becomes NaN and is listed in the provenance's
    ``rows_masked``. Spaces without an interval on that diagonal are returned as they are."""
    spec = space_spec(name)
    raw = spaces.get(spec.normalizes) if spec is not None and spec.normalizes else None
    if raw is None or raw.ci_low is None or raw.tasks != space.tasks:
        return space
    low = np.diag(raw.ci_low)
    finite_row = np.isfinite(space.matrix).any(axis=1)
    drop = finite_row & ~(np.isfinite(low) & (low > 0))
    if not drop.any():
        return space
    m = space.matrix.copy()
    m[drop, :] = np.nan
    prov = dict(space.provenance, rows_masked=[t for t, d in zip(space.tasks, drop) if d],
                rows_masked_rule=NORMALIZATION_RULE)
    return TaskSpace(m, list(space.tasks), list(space.groups), space.kind, prov, space.ci_low, space.ci_high)


def load_probe_dir(path: str | Path, *, model: str | None = None, revision: str | None = None) -> Cell:
    """Read one probe DIR: ``spaces/*.csv`` (+ sidecars), every per-module / per-layer folder the registry
    declares (``spaces/<name>_by_<by>/``), the tables the probes declare (distributedness, status records
    of fine-tunings, task cards, per-task tables), ``scores/tasks.csv``, ``spaces/halves/`` (2T × 2T halves spaces,
    :mod:`taskspace.analysis.reliability`) and a ``control/`` tree."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("folder not found", file=path)
    spaces = {}
    sdir = path / "spaces"
    if sdir.is_dir():
        for csv in sorted(sdir.glob("*.csv")):
            spaces[csv.stem] = load_space(csv)
    parts: dict[str, dict[str, TaskSpace]] = {}
    for _, s in all_spaces():
        folder = sdir / s.parts_folder if s.parts_folder else None
        if folder is not None and folder.is_dir():
            parts[s.name] = {csv.stem: load_space(csv) for csv in sorted(folder.glob("*.csv"))}
    dist = cards = None
    finetuning: dict[str, dict[str, dict]] = {}
    tables: dict[str, pd.DataFrame] = {}
    for p in probes():
        for role, rel in p.files:
            f = path / rel
            if role == "distributedness" and dist is None and f.exists():
                dist = _read_table(f, ("task",), ("grad_norm", "participation_ratio", "mask_size"))
            elif role == "cards" and cards is None and f.exists():
                cards = _read_table(f, ("task", "direction", "token"), ("rank", "cosine"))
            elif role == "table" and f.exists():
                tables[rel] = _read_table(f, ("task",), ())
            elif role == "status" and f.is_dir():
                records = {js.stem: _read_json(js) for js in sorted(f.glob("*.json"))}
                if records:
                    finetuning[p.name] = records
    halves = {}
    hdir = sdir / HALVES_DIR
    if hdir.is_dir():
        for csv in sorted(hdir.glob("*.csv")):
            halves[csv.stem] = load_space(csv)
    scores = None
    tpath = path / "scores" / "tasks.csv"
    if tpath.exists():
        scores = _read_table(tpath, ("task",), ("accuracy", "mean_margin"))
    prov = next((s.provenance for s in [*spaces.values(), *halves.values()] if s.provenance), {})
    pm = prov.get("model") if isinstance(prov.get("model"), dict) else {}
    name = model or pm.get("model") or path.name
    rev = revision if revision is not None else (pm.get("revision") or prov.get("revision"))
    spaces = {name: mask_unreliable_rows(name, space, spaces) for name, space in spaces.items()}
    cell = Cell(path=path, model=str(name), revision=None if rev is None else str(rev), spaces=spaces,
                parts=parts, distributedness=dist, finetuning=finetuning, scores=scores, cards=cards,
                tables=tables, halves=halves)
    if is_probe_dir(path / "control"):
        cell.control = load_probe_dir(path / "control", model=cell.model)
        if cell.control.revision in (None, cell.revision):
            cell.control.revision = f"{cell.revision or ''} control".strip()
    return cell


# -- runs ----------------------------------------------------------------------------------------------
def load_run(path: str | Path) -> RunData:
    """Read a RUN directory (``run.json`` optional: the tree is inferred without it) or a single probe
    DIR (seen as a run of one model and one checkpoint)."""
    root = Path(path)
    if not root.exists():
        raise InputError("folder not found", file=root)
    if not root.is_dir():
        raise InputError("not a folder (give a run directory or a probe output directory)", file=root)
    if is_probe_dir(root):
        cell = load_probe_dir(root)
        slug = Path(cell.model).name or "model"
        rev = cell.revision or "final"
        cell.revision = rev
        m = ModelCells(slug=slug, name=cell.model, size=None, revisions=[rev], control=None, cells={rev: cell})
        return RunData(root=root, plan=None, models=[m], single_dir=True)
    plan = _read_json(root / "run.json") if (root / "run.json").exists() else None
    entries = _plan_models(plan, root) if plan else []
    known = {e["slug"] for e in entries}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name in known or d.name in _skip_dirs() or d.name.startswith("."):
            continue
        if any(is_probe_dir(r) for r in d.iterdir() if r.is_dir()):
            entries.append({"slug": d.name, "name": d.name, "size": None, "revisions": None, "control": None})
    models = []
    for e in entries:
        m = _load_model(root, e)
        if m is not None:
            models.append(m)
    if not models:
        raise InputError("no task spaces found (expected RUN/<model>/<revision>/spaces/*.csv, "
                         "or a probe folder with spaces/)", file=root)
    models.sort(key=_size_key)
    return RunData(root=root, plan=plan, models=models)


def _plan_models(plan: dict, root: Path) -> list[dict]:
    run_json = root / "run.json"
    models = plan.get("models", [])
    if not isinstance(models, list):
        raise InputError("expected a list of models", file=run_json, field="models")
    out = []
    for i, m in enumerate(models):
        if not isinstance(m, dict):
            raise InputError(f"model {i} is not an object", file=run_json, field="models")
        slug = m.get("slug") or (Path(str(m.get("name", ""))).name if m.get("name") else None)
        if not slug or not isinstance(slug, str):
            raise InputError(f"model {i} has no slug", file=run_json, field="slug")
        revs = m.get("revisions")
        if revs is not None and not (isinstance(revs, list) and all(isinstance(r, str) for r in revs)):
            revs = None  # "all" or an unresolved pattern: take what is on disk
        out.append({"slug": slug, "name": str(m.get("name") or slug), "size": m.get("size"),
                    "revisions": revs, "control": m.get("control")})
    return out


def _load_model(root: Path, entry: dict) -> ModelCells | None:
    mdir = root / entry["slug"]
    if not mdir.is_dir():
        return None
    cells = {}
    for d in sorted(p for p in mdir.iterdir() if p.is_dir()):
        if is_probe_dir(d):
            cells[d.name] = load_probe_dir(d, model=entry["slug"], revision=d.name)
    if not cells:
        return None
    control = entry.get("control")
    on_disk = sorted(cells, key=revision_key)
    fresh = [r for r in on_disk if r == "init" or r.startswith("init:")]
    training = [r for r in on_disk if r not in fresh]
    if entry.get("revisions"):
        listed = [r for r in entry["revisions"] if r in cells and r not in fresh]
        training = sorted(listed, key=revision_key) or training
    if control == "first":
        control = training[0] if len(training) > 1 else None
    elif control in ("init",) and control not in cells:
        control = fresh[0] if fresh else None
    elif control is None and not any(c.control is not None for c in cells.values()):
        # No control named and no control tree inside the checkpoints: a fresh initialisation on disk, else the first checkpoint when training
        # has several (step0 is the natural control of a model trained from scratch).
        control = fresh[0] if fresh else (training[0] if len(training) > 1 else None)
    if control is not None and control not in cells:
        control = None
    return ModelCells(slug=entry["slug"], name=entry["name"], size=entry.get("size"),
                      revisions=training, control=control, cells=cells)


def _size_key(m: ModelCells) -> tuple:
    n = m.n_parameters
    label = str(m.size or "").lower()
    rank = SIZE_ORDER.index(label) if label in SIZE_ORDER else math.inf
    return (0 if n else 1, n or 0, rank, m.slug)


#: what "above chance" means for :func:`above_chance_tasks`
ABOVE_CHANCE_RULE = ("tasks whose accuracy's 95% interval (scores/tasks.csv, Wilson) lies above 0.5 at every trained "
                     "checkpoint with scores (untrained checkpoints and controls are at chance by design)")


def above_chance_tasks(run: RunData) -> tuple[list[str], list[str]]:
    """``(kept, cells)``: the tasks above chance at every trained checkpoint of the run that has scores
    (:data:`ABOVE_CHANCE_RULE`), in the first such cell's order, and the ids of the cells that decided."""
    kept: list[str] | None = None
    cells = []
    for _, cell in run.cells():
        if cell.untrained or cell.scores is None or "accuracy_ci_low" not in cell.scores:
            continue
        above = [str(t) for t, lo in zip(cell.scores["task"], cell.scores["accuracy_ci_low"]) if lo > 0.5]
        kept = above if kept is None else [t for t in kept if t in set(above)]
        cells.append(cell.id)
    return (kept or []), cells


def restrict_run(run: RunData, tasks: list[str]) -> RunData:
    """A copy of ``run`` whose every space (main, per-module / per-layer, halves; controls included) holds
    only ``tasks`` (those it has)."""
    keep = set(tasks)

    def sub(space: TaskSpace) -> TaskSpace:
        return space.select([t for t in space.tasks if t in keep])

    def half_sub(space: TaskSpace) -> TaskSpace:
        return space.select([t for t in space.tasks if (parse_half(t) or (t,))[0] in keep])

    def fix(cell: Cell) -> None:
        cell.spaces = {n: sub(s) for n, s in cell.spaces.items()}
        cell.parts = {n: {k: sub(s) for k, s in per.items()} for n, per in cell.parts.items()}
        cell.halves = {n: half_sub(s) for n, s in cell.halves.items()}
        if cell.control is not None:
            fix(cell.control)

    out = copy.deepcopy(run)
    seen: set[int] = set()
    for m in out.models:
        for c in m.cells.values():
            if id(c) not in seen:
                seen.add(id(c))
                fix(c)
    return out
