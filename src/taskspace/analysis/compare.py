"""Compare task spaces with theory, with their controls, across checkpoints and across model sizes.

:func:`compare_run` reads a RUN directory (or one probe DIR), computes everything in docs/design.md,
"Comparing with theory", and writes ``comparison.json``:

``schema``, ``run``, ``provenance`` (versions, created, plan, analysis settings, per-cell provenance),
``models`` (slug, name, size, n_parameters, revisions, control), ``probes`` (space names found),
``cells`` (one per model × revision: per-space summaries against H, signed and absolute; per-module
gradient gaps; distributedness; FTGD status; ``versus_control``; ``reliability`` per halves space
found in ``spaces/halves/``; and ``tables``: every per-task table a probe declares with the role ``table``,
as rows, by path), ``generalization`` (per normalised transfer space: rows = groups, columns =
checkpoints, and the per-size view), ``dynamics`` (per model and space), ``sizes`` (per space: one row
per model at its final checkpoint), ``size_deltas`` (per space: largest − smallest model), ``findings``
and ``headline``.

Uncertainty: every summary of a space carries a 95% bootstrap interval over tasks next to its value
(``difference_ci``, ``rho_ci``, ``rho_ratio_ci``, per-group ``ci``; :mod:`taskspace.analysis.bootstrap`), and
the findings' verdicts follow from the intervals of the changes they test. A space with a halves space
beside it gets its split-half reliability and noise ceiling (:mod:`taskspace.analysis.reliability`).
"""
from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..io import write_json
from ..probes.registry import all_spaces, generalization_spaces, space_reading
from ..progress import progress_bar
from ..provenance import timestamp, versions
from ..spaces import TaskSpace
from .bootstrap import LEVEL, RESAMPLES, bootstrap_space, paired_delta
from .bootstrap import SCHEME as BOOTSTRAP_SCHEME
from .clustering import cluster_space
from .collect import ABOVE_CHANCE_RULE, Cell, ModelCells, RunData, above_chance_tasks, load_run, restrict_run
from .distributedness import summarize_distributedness
from .dynamics import gap_trend, space_dynamics, stability
from .findings import findings, headline
from .generalization import generalization_table, table_to_dict
from .hypothesis import hypothesis_space
from .inference import ari_permutation_p, auc, bh, gap_permutation_p, min_p, read, rho_max
from .reliability import reliability
from .stats import complete_tasks, coverage, mantel, remove_task_effects, spearman_offdiagonal, within_between

SCHEMA = "taskspace.comparison/1"


def summarize_space(space: TaskSpace, *, permutations: int = 999, seed: int = 0,
                    bootstrap: int = RESAMPLES, related: str | None = None, reading: str | None = None) -> dict:
    """A task space against the hypothesis space H, read in its declared direction.

    ``related`` (``"higher"``/``"lower"``) and ``reading`` (``"signed"``/``"absolute"``) default to what
    the space's registry entry declares (:class:`~taskspace.probes.spec.SpaceSpec`). ``signed`` and
    ``absolute`` each hold: ``within`` / ``between`` (means of the per-group means, in the space's own
    units), ``difference`` (the mean of per-group contrasts, *oriented*: positive = related tasks are
    more related in the declared direction, so for erasure it is between − within), ``groups`` (each
    group's contrast), ``rho`` (Spearman of the oriented space with H) and ``auc`` (P(within cell
    outranks between cell)). Only the declared reading is tested: it alone carries ``p`` (one-sided
    Mantel, on the space with each task's main effects removed: :func:`~.stats.remove_task_effects`),
    ``rho_ratio`` (ρ ÷ ``rho_max``, the ρ a perfectly grouped space reaches under H's ties) and the
    interval of ``auc``; the other reading is shown, never tested (``p`` None).

    ``ari`` (declared reading) with ``ari_p`` (permutation of group labels); ``min_p``: the smallest p a
    permutation test over these groups can give. Tasks with missing entries (a failed fine-tuning) are
    left out of ρ, the tests and clustering and listed in ``dropped``. With ``bootstrap`` resamples
    (0: none), 95% intervals over tasks (``*_ci``), or ``interval_withheld`` with the reason.
    """
    sign, absolute_default = space_reading(space.kind)
    sign = sign if related is None else (1.0 if related == "higher" else -1.0)
    declared = reading or ("absolute" if absolute_default else "signed")
    keep = complete_tasks(space.matrix)
    dropped = [t for t, k in zip(space.tasks, keep) if not k]
    sub = space.select([t for t, k in zip(space.tasks, keep) if k])
    h = hypothesis_space(sub.groups)
    out: dict[str, Any] = {"kind": space.kind, "n_tasks": space.n_tasks, "n_groups": len(set(space.groups)),
                           "related": "higher" if sign > 0 else "lower", "reading": declared,
                           "dropped": dropped,
                           "coverage": coverage(space.matrix, space.tasks, space.provenance.get("rows_masked") or ()),
                           "rho_max": rho_max(sub.groups), "min_p": min_p(sub.groups, permutations)}
    for name, absolute in (("signed", False), ("absolute", True)):
        m = read(space.matrix, sign, absolute)
        wb = within_between(m, space.groups)
        units = 1.0 if absolute or sign > 0 else -1.0        # within / between back in the space's units
        entry = {**wb, "within": units * wb["within"], "between": units * wb["between"],
                 "groups": {g: {**v, "within": units * v["within"], "between": units * v["between"]}
                            for g, v in wb["groups"].items()},
                 "rho": spearman_offdiagonal(m[np.ix_(keep, keep)], h), "auc": auc(m[np.ix_(keep, keep)], sub.groups),
                 "p": None, "tested": name == declared}
        if name == declared:
            # the test, after each task's main effects are removed (stats.remove_task_effects): a task
            # similar to everything must not make its group look related; ρ and the AUC stay descriptive
            mt = mantel(remove_task_effects(m[np.ix_(keep, keep)]), h, permutations=permutations, seed=seed)
            entry["p"] = mt["p"]
            entry["rho_ratio"] = (entry["rho"] / out["rho_max"]
                                  if math.isfinite(entry["rho"]) and out["rho_max"] > 0 else float("nan"))
            out["permutations"], out["exact"] = mt["permutations"], mt["exact"]
        out[name] = entry
    cl = cluster_space(space, sign=sign, absolute=declared == "absolute")
    out["ari"] = cl["ari"]
    out["ari_p"] = ari_permutation_p(cl["labels"], cl["groups"], cl["ari"], permutations=permutations, seed=seed)
    if bootstrap > 0:
        b = bootstrap_space(space, resamples=bootstrap, seed=seed, sign=sign, declared=declared)
        for name in ("signed", "absolute"):
            entry = b.pop(name)
            if sign < 0 and name == "signed":     # within / between intervals back in the space's units
                for k in ("within_ci", "between_ci"):
                    entry[k] = [-entry[k][1], -entry[k][0]]
            out[name].update(entry)
        out["interval_withheld"] = b.pop("withheld", None)
        out["bootstrap"] = b
    return out


def _reliability_entry(halves: TaskSpace, full: TaskSpace | None, bootstrap: int, seed: int) -> dict:
    """:func:`~taskspace.analysis.reliability.reliability` of a halves space (with the full space beside it)."""
    try:
        return reliability(halves, full, resamples=bootstrap, seed=seed)
    except ValueError as e:  # not a halves space: say so in the comparison instead of failing the run
        return {"error": str(e)}


def _versus(trained: dict, control: dict) -> dict:
    """Trained against control in the declared reading of the space."""
    keys = ("within", "between", "difference", "rho", "auc")
    reading = trained.get("reading", "signed")
    t = {k: trained[reading].get(k) for k in keys}
    c = {k: control[reading].get(k) for k in keys}
    return {"reading": reading, "trained": t, "control": c,
            "difference": {k: (t[k] - c[k]) if t[k] is not None and c[k] is not None else None for k in keys}}


def _nan(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else float("nan")


def _gain_test(control: TaskSpace, trained: TaskSpace, sign: float, absolute: bool, permutations: int,
               seed: int) -> dict:
    """The permutation test of trained − control: over the tasks both spaces share and both have
    complete, the gap of ``read(trained) − read(control)`` against random relabellings of the tasks
    (:func:`~taskspace.analysis.inference.gap_permutation_p`; H0: training added no group structure).
    Returns ``p``, ``p_permutations``, ``p_tasks``."""
    shared = set(trained.tasks)
    tasks = [t for t in control.tasks if t in shared]
    c, t = control.select(tasks), trained.select(tasks)
    diff = read(t.matrix, sign, absolute) - read(c.matrix, sign, absolute)
    keep = complete_tasks(diff)
    groups = [g for g, k in zip(c.groups, keep) if k]
    test = gap_permutation_p(remove_task_effects(diff[np.ix_(keep, keep)]), groups, permutations=permutations,
                             seed=seed)
    return {"p": test["p"], "p_permutations": test["permutations"], "p_tasks": int(keep.sum())}


def _part_gap(space: TaskSpace, name: str) -> dict:
    """A per-module / per-layer space's within, between and oriented gap (descriptive: no test)."""
    sign, absolute = space_reading(name)
    wb = within_between(read(space.matrix, sign, absolute), space.groups)
    units = 1.0 if absolute or sign > 0 else -1.0
    return {"within": units * wb["within"], "between": units * wb["between"], "difference": wb["difference"]}


def _ftgd_summary(ftgd: dict[str, dict]) -> dict | None:
    if not ftgd:
        return None
    failed = sorted(t for t, r in ftgd.items() if str(r.get("status", "ok")) != "ok")
    damage = [r.get("lm_damage") for r in ftgd.values()]
    damage = [float(d) for d in damage if isinstance(d, (int, float)) and math.isfinite(d)]
    return {"n_tasks": len(ftgd), "n_failed": len(failed), "failed": failed,
            "lm_damage_mean": float(np.mean(damage)) if damage else None}


def _accuracy(cell: Cell) -> float | None:
    if cell.scores is None or "accuracy" not in cell.scores:
        return None
    v = cell.scores["accuracy"].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


class _Summaries:
    """Memoised space summaries, so a control shared by several checkpoints is tested once."""

    def __init__(self, permutations: int, seed: int, bootstrap: int = RESAMPLES) -> None:
        self.permutations, self.seed, self.bootstrap = permutations, seed, bootstrap
        self._cache: dict[int, dict] = {}

    def __call__(self, space: TaskSpace) -> dict:
        key = id(space)
        if key not in self._cache:
            self._cache[key] = summarize_space(space, permutations=self.permutations, seed=self.seed,
                                               bootstrap=self.bootstrap)
        return self._cache[key]

    def known(self, spaces: Sequence[TaskSpace], summaries: Sequence[dict]) -> None:
        """Take the summaries of ``spaces`` computed elsewhere (they are the same: each is seeded)."""
        for space, summary in zip(spaces, summaries):
            self._cache[id(space)] = summary

    def of(self, spaces: Sequence[TaskSpace]) -> list[tuple[TaskSpace, dict]]:
        """``(space, summary)`` for those of ``spaces`` already summarised (to send with a cell to a worker)."""
        return [(sp, self._cache[id(sp)]) for sp in spaces if id(sp) in self._cache]


def _sharing(cell: Cell) -> TaskSpace | None:
    """The cell's parameter-sharing space (the first the registry marks ``sharing``), if present."""
    return next((cell.spaces[s.name] for _, s in all_spaces() if s.sharing and s.name in cell.spaces), None)


def _records(df: "Any") -> list[dict]:
    """A per-task table as JSON rows (NaN → null)."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else
                 v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in df.to_dict("records")]


def _cell_entry(model: ModelCells, cell: Cell, control: Cell | None, summarize: _Summaries,
                progress) -> dict:
    spaces = {}
    for name, space in cell.spaces.items():
        summary = summarize(space)
        reading = summary["reading"]
        # a copy: the cached summary of a shared control gets the q of each table it appears in
        spaces[name] = {**summary, reading: dict(summary[reading])}
        progress()
    # one table of tests per checkpoint: Benjamini–Hochberg over its spaces' declared p-values
    names = list(spaces)
    for name, q in zip(names, bh([_nan(spaces[n][spaces[n]["reading"]]["p"]) for n in names])):
        spaces[name][spaces[name]["reading"]]["q"] = q
    reliability = {name: _reliability_entry(h, cell.spaces.get(name), summarize.bootstrap, summarize.seed)
                   for name, h in cell.halves.items()}
    for name, rel in reliability.items():
        if name in spaces and "error" not in rel:
            # beside the space's own numbers, without the per-task rows (those are in the cell's entry)
            spaces[name]["reliability"] = {k: v for k, v in rel.items() if k != "tasks"}
    parts = {space: {name: _part_gap(s, space) for name, s in per.items()} for space, per in cell.parts.items()}
    dist = summarize_distributedness(cell.distributedness, _sharing(cell))
    ftgd = {probe: _ftgd_summary(records) for probe, records in cell.finetuning.items()}
    entry = {"id": f"{model.slug}@{cell.revision}", "model": model.slug, "revision": cell.revision,
             "path": str(cell.path), "untrained": cell.untrained, "n_parameters": cell.n_parameters,
             "is_control": model.control == cell.revision, "spaces": spaces, "parts": parts,
             "distributedness": dist, "finetuning": ftgd, "accuracy": _accuracy(cell),
             "control": None, "versus_control": {}, "reliability": reliability,
             "tables": {rel: _records(df) for rel, df in cell.tables.items()}}
    if control is not None:
        entry["control"] = control.revision
        for name in cell.spaces.keys() & control.spaces.keys():
            entry["versus_control"][name] = _versus(spaces[name], summarize(control.spaces[name]))
            # trained − control gap, paired over the tasks both share (the same resampled tasks in both)
            sign, absolute = _reading(name)
            entry["versus_control"][name]["difference_ci"] = paired_delta(
                control.spaces[name], cell.spaces[name], statistic="difference", resamples=summarize.bootstrap,
                seed=summarize.seed, sign=sign, absolute=absolute)["ci"]
            entry["versus_control"][name].update(_gain_test(
                control.spaces[name], cell.spaces[name], sign, absolute, summarize.permutations, summarize.seed))
        # the trained − control tests of one checkpoint are one table: Benjamini–Hochberg over its spaces
        vnames = list(entry["versus_control"])
        for name, q in zip(vnames, bh([_nan(entry["versus_control"][n].get("p")) for n in vnames])):
            entry["versus_control"][name]["q"] = q
        cdist = summarize_distributedness(control.distributedness, _sharing(control))
        entry["distributedness_control"] = cdist
    return entry


def _cell_job(model: ModelCells, cell: Cell, control: Cell | None, known: list[tuple[TaskSpace, dict]],
              permutations: int, seed: int, bootstrap: int) -> dict:
    """:func:`_cell_entry` in a worker process, with the summaries computed before (``known``; pickled with
    the cell, so each space is the cell's own object)."""
    summarize = _Summaries(permutations, seed, bootstrap)
    summarize.known([sp for sp, _ in known], [sm for _, sm in known])
    return _cell_entry(model, cell, control, summarize, lambda: None)


def _summary_job(space: TaskSpace, permutations: int, seed: int, bootstrap: int) -> dict:
    return summarize_space(space, permutations=permutations, seed=seed, bootstrap=bootstrap)


#: below this much resampling work (Σ over spaces of tasks² × resamples; 2·10⁷ is about 3 s in one process:
#: a 40-task space at 1,000 resamples takes 0.26 s) a comparison runs in this process: starting worker
#: processes (about a second each, importing numpy, scipy and pandas) would cost more than they save
PARALLEL_WORK = 2e7


@contextmanager
def _pool(workers: int, work: float) -> Iterator[Executor | None]:
    """Spawned worker processes for a comparison large enough to gain from them; else None (this process)."""
    if workers <= 1 or work < PARALLEL_WORK:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _map(pool: Executor | None, fn: Callable[..., Any], items: Sequence[tuple], advance: Callable[[], None]) -> list:
    """``[fn(*item) for item in items]``, in ``pool`` when given (results in the order of ``items``)."""
    if pool is None:
        out = []
        for item in items:
            out.append(fn(*item))
            advance()
        return out
    futures = [pool.submit(fn, *item) for item in items]
    for _ in as_completed(futures):
        advance()
    return [f.result() for f in futures]


def compare_run(run_dir: str | Path, *, permutations: int = 999, seed: int = 0, write: bool = True,
                progress: bool = False, bootstrap: int = RESAMPLES, above_chance: bool = False,
                workers: int = 1) -> dict:
    """Compare every task space of a RUN (or of one probe DIR) with theory, controls, checkpoints and
    sizes; write ``comparison.json`` into it (atomically, with provenance) unless ``write=False``.
    ``bootstrap``: resamples over tasks for the intervals (0: none, and the verdicts that need an interval
    say "inconclusive"); ``seed`` seeds them and the permutation tests. ``above_chance``: also the whole
    comparison over the tasks above chance at every trained checkpoint (``above_chance`` key:
    :data:`~taskspace.analysis.collect.ABOVE_CHANCE_RULE`), beside the full one. ``workers`` > 1: a large
    comparison's summaries, checkpoint entries and trajectories are computed in that many spawned worker
    processes, each seeded as in one process, so the comparison is the same; a script that asks for workers
    needs the ``if __name__ == "__main__":`` guard.

    Returns the comparison as a plain dict (see the module docstring for its keys).
    """
    run = load_run(run_dir)
    out = _compare(run, permutations, seed, bootstrap, progress, workers)
    if above_chance:
        kept, decided = above_chance_tasks(run)
        entry: dict[str, Any] = {"rule": ABOVE_CHANCE_RULE, "decided_by": decided, "tasks": kept,
                                 "n_tasks": len(kept)}
        if decided and len(kept) >= 3:
            sub = _compare(restrict_run(run, kept), permutations, seed, bootstrap, False, workers)
            entry.update({k: sub[k] for k in ("cells", "findings", "headline", "dynamics", "sizes")})
        else:
            entry["skipped"] = ("no trained checkpoint has scores" if not decided else
                                f"only {len(kept)} task(s) above chance everywhere")
        out["above_chance"] = entry
    out["provenance"] = {
        "created": timestamp(), "versions": versions(), "plan": run.plan,
        "analysis": {"permutations": permutations, "seed": seed,
                     "test": "one-sided Mantel, Spearman, in each space's declared direction and reading; "
                             "Benjamini-Hochberg q over each checkpoint's spaces",
                     "bootstrap": {"resamples": bootstrap, "level": LEVEL, "scheme": BOOTSTRAP_SCHEME},
                     "gap": "mean over groups of (within-group mean - the group's mean with other tasks)",
                     "clustering": "average linkage on 1 - S of (S + S^T)/2 (S read as higher = related), "
                                   "cut at the number of groups",
                     "above_chance": ABOVE_CHANCE_RULE if above_chance else None},
        "cells": {f"{m.slug}@{c.revision}": _short_provenance(c.provenance) for m, c in run.cells()},
    }
    out = clean(out)
    if write:
        write_json(run.root / "comparison.json", out)
    return out


def _compare(run: RunData, permutations: int, seed: int, bootstrap: int, progress: bool, workers: int = 1) -> dict:
    """Everything of :func:`compare_run` but its provenance, for one (possibly restricted) run."""
    summarize = _Summaries(permutations, seed, bootstrap)
    # one entry per checkpoint; a control tree gets its own entry too (once: checkpoints share their control)
    entries: list[tuple[ModelCells, Cell, Cell | None, bool]] = []
    seen: set[str] = set()
    for model, cell in run.cells():
        entries.append((model, cell, model.control_of(cell.revision), False))
        seen.add(f"{model.slug}@{cell.revision}")
        if cell.control is not None and f"{model.slug}@{cell.control.revision}" not in seen:
            entries.append((model, cell.control, None, True))
            seen.add(f"{model.slug}@{cell.control.revision}")
    distinct: dict[int, TaskSpace] = {}
    for _, cell, ctrl, _ in entries:
        for sp in [*cell.spaces.values(), *(ctrl.spaces.values() if ctrl is not None else ())]:
            distinct.setdefault(id(sp), sp)
    spaces = list(distinct.values())
    work = sum(sp.n_tasks ** 2 for sp in spaces) * max(bootstrap, 1)
    total = len(spaces) + len(entries) + 3
    with progress_bar("comparing task spaces", total if progress else None) as advance, \
            _pool(workers, work) as pool:
        args = (permutations, seed, bootstrap)
        summarize.known(spaces, _map(pool, _summary_job, [(sp, *args) for sp in spaces], advance))
        # the trajectories across checkpoints and sizes do not wait for the checkpoints' entries
        pending = _map_later(pool, [(_generalization, (run, bootstrap, seed)), (_dynamics, (run, bootstrap, seed)),
                                    (_size_deltas, (run, bootstrap, seed))])
        if pool is None:
            cells = []
            for model, cell, ctrl, _ in entries:
                cells.append(_cell_entry(model, cell, ctrl, summarize, lambda: None))
                advance()
        else:
            jobs = [(model, cell, ctrl, summarize.of([*cell.spaces.values(),
                                                      *(ctrl.spaces.values() if ctrl is not None else ())]), *args)
                    for model, cell, ctrl, _ in entries]
            cells = _map(pool, _cell_job, jobs, advance)
        generalization, dynamics, size_deltas = [get() for get in pending]
        advance(3)
    for entry, (_, _, _, is_control) in zip(cells, entries):
        if is_control:
            entry["is_control"] = True
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "run": str(run.root),
        "kind": "probe_dir" if run.single_dir else "run",
        "models": [{"slug": m.slug, "name": m.name, "size": m.size, "n_parameters": m.n_parameters,
                    "revisions": m.revisions, "control": m.control,
                    "cells": [f"{m.slug}@{r}" for r in m.cells]} for m in run.models],
        "probes": run.probes,
        "cells": cells,
        "generalization": generalization,
        "dynamics": dynamics,
        "sizes": _sizes(run, cells),
        "size_deltas": size_deltas,
    }
    out["findings"] = findings(out)
    out["headline"] = headline(out)
    return out


def _map_later(pool: Executor | None, calls: Sequence[tuple[Callable[..., Any], tuple]]) -> list[Callable[[], Any]]:
    """Start ``calls`` in ``pool`` now (each ``(fn, args)``); one getter of each result. Without a pool the
    getters compute them."""
    if pool is None:
        return [partial(fn, *a) for fn, a in calls]
    futures = [pool.submit(fn, *a) for fn, a in calls]
    return [f.result for f in futures]


def compare_spaces(probe_dir: str | Path, **kwargs: Any) -> dict:
    """:func:`compare_run` for a single probe DIR (one model checkpoint, with its ``control/`` tree
    when there is one); writes ``DIR/comparison.json``."""
    return compare_run(probe_dir, **kwargs)


def _reading(name: str) -> tuple[float, bool]:
    return space_reading(name)


def _short_provenance(prov: dict) -> dict:
    keep = ("model", "revision", "convention", "settings", "suite", "probe", "seed", "created", "versions")
    return {k: prov[k] for k in keep if k in prov}


def _generalization(run: RunData, bootstrap: int = 0, seed: int = 0) -> dict:
    out = {}
    kw = {"bootstrap": bootstrap, "seed": seed}
    for name in generalization_spaces():
        by_cell = {f"{m.slug}@{c.revision}": c.spaces[name] for m, c in run.cells() if name in c.spaces}
        if not by_cell:
            continue
        finals = {m.slug: m.final.spaces[name] for m in run.models if m.final and name in m.final.spaces}
        out[name] = {"by_checkpoint": table_to_dict(generalization_table(by_cell, **kw)),
                     "by_checkpoint_abs": table_to_dict(generalization_table(by_cell, absolute=True, **kw)),
                     "by_size": table_to_dict(generalization_table(finals, **kw)),
                     "by_size_abs": table_to_dict(generalization_table(finals, absolute=True, **kw))}
    return out


def _size_deltas(run: RunData, bootstrap: int, seed: int) -> dict:
    """Per space: the largest model's final checkpoint minus the smallest's (``within`` and
    ``difference``), with paired intervals over their common tasks (finding 1)."""
    out: dict = {}
    for name in run.probes:
        finals = [m for m in run.models if m.final is not None and name in m.final.spaces]
        if len(finals) < 2:
            continue
        a, b = finals[0].final.spaces[name], finals[-1].final.spaces[name]
        sign, absolute = _reading(name)
        out[name] = {"from": finals[0].slug, "to": finals[-1].slug,
                     **{stat: paired_delta(a, b, statistic=stat, resamples=bootstrap, seed=seed, sign=sign,
                                           absolute=absolute)
                        for stat in ("within", "difference")}}
    return out


def _dynamics(run: RunData, bootstrap: int = 0, seed: int = 0) -> dict:
    out: dict = {}
    for m in run.models:
        if len(m.revisions) < 2:
            continue
        per = {}
        names = [n for n in run.probes if all(n in m.cells[r].spaces for r in m.revisions)]
        for name in names:
            cells = [m.cells[r] for r in m.revisions]
            sign, absolute = _reading(name)
            spaces = [c.spaces[name] for c in cells]
            untrained = [c.untrained for c in cells]
            d = space_dynamics(m.revisions, spaces, untrained=untrained, sign=sign, absolute=absolute)
            # the change of the gap from the first to the final checkpoint, paired over tasks
            d["delta"] = paired_delta(spaces[0], spaces[-1], statistic="difference", resamples=bootstrap, seed=seed,
                                      sign=sign, absolute=absolute)
            # finding 2: the gap's trend over every checkpoint; finding 3: noise-corrected stability
            d["trend"] = gap_trend(m.revisions, spaces, sign=sign, absolute=absolute, resamples=bootstrap, seed=seed,
                                   untrained=untrained)
            if bootstrap > 0:
                d["stability"] = stability(m.revisions, [c.halves.get(name) for c in cells], untrained=untrained,
                                           sign=sign, absolute=absolute, resamples=bootstrap, seed=seed)
            else:
                d["stability"] = {"verdict": "inconclusive", "reason": "no bootstrap (bootstrap = 0)"}
            if name in generalization_spaces():
                d["generalization"] = table_to_dict(generalization_table(
                    {r: m.cells[r].spaces[name] for r in m.revisions}, bootstrap=bootstrap, seed=seed))
            per[name] = d
        out[m.slug] = per
    return out


def _sizes(run: RunData, cells: list[dict]) -> dict:
    by_id = {c["id"]: c for c in cells}
    out: dict = {}
    for name in run.probes:
        rows = []
        for m in run.models:
            if m.final is None or name not in m.final.spaces:
                continue
            s = by_id[f"{m.slug}@{m.final.revision}"]["spaces"][name]
            d = s[s["reading"]]
            rows.append({"model": m.slug, "size": m.size, "n_parameters": m.n_parameters,
                         "revision": m.final.revision, **{k: d.get(k) for k in
                                                          ("within", "between", "difference", "se_difference",
                                                           "rho", "p", "auc", "within_ci", "difference_ci",
                                                           "rho_ci")},
                         "reading": s["reading"], "ari": s["ari"], "coverage": s.get("coverage")})
        if rows:
            out[name] = rows
    return out


def clean(obj: Any) -> Any:
    """Make ``obj`` strict JSON: non-finite floats become None, numpy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
