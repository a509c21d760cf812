"""The transfer probe and the entangled baseline: fine-tune on task a, evaluate on every task b (docs/design.md, "Probes").

Per task a (one at a time in each of ``settings.workers`` processes, so peak memory does not grow
with the number of tasks):

- ``transfer``: gradient differential ḡ_a on a's training pairs → mask ``M_a`` → FTGD → ``Δ_a``;
- ``baseline``: plain fine-tuning on a's good sentences, all parameters;

then every task's eval pairs are scored with ``θ_0 + Δ_a`` and the task's results are written
atomically. A re-run with the same settings skips tasks already done (resume after a kill); at the
end the spaces are assembled from the per-pair logs. Layout in ``out_dir`` (``P`` = transfer or
baseline)::

    spaces/P.csv|.json                       T[a,b]: mean-margin transfer (row a = fine-tuned on)
    spaces/P_normalized.csv|.json            T̃[a,b] = T[a,b] / |T[a,a]|
    spaces/P_accuracy.csv|.json              accuracy transfer
    spaces/P_accuracy_normalized.csv|.json
    scores/base.parquet                      base model, per eval pair
    scores/P.parquet                         per fine-tuned task, per eval pair (the per-sample log)
    scores/P/<task>.parquet                  the same, one file per fine-tuned task (resume unit)
    ftgd/<task>.json | baseline/<task>.json  status (ok | failed, why), steps, best step, loss curves,
                                             self-transfer, LM damage, mask size, seconds
    deltas/<task>.safetensors                sparse Δ_a (transfer; dense baseline deltas only on request,
                                             under deltas/baseline/)
    stats/P_tasks.csv                        one row per fine-tuned task (the JSONs as a table)

Each space's ``ci_low`` / ``ci_high`` hold 95% paired-bootstrap intervals over eval pairs.
"""
from __future__ import annotations

import gc
import multiprocessing
import pickle
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ...errors import TaskspaceError
from ...io import atomic_path, read_json, write_json
from ...progress import progress_bar
from ...provenance import hash_records, timestamp, torch_threads, versions
from ...scoring import Scorer
from ...spaces import TaskSpace
from ..finetune.deltas import applied, save_delta
from ..finetune.evaluation import METRICS, heldout_nll, lm_nll, self_transfer, transfer_matrices
from ..finetune.ftgd import finetune_lm, ftgd
from ..finetune.rows import row_keys, task_mask
from ..output import task_filename
from ..registry import by_method, get, runner_probes
from ..result import ProbeResult
from ..settings import LEVEL

# pyarrow is imported where rows are read back, ctypes where a worker returns memory to the system

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ...models.loading import LoadedModel
    from ...spaces import TaskSpace
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import ProbeSpec, RunContext

#: the methods (``ProbeSpec.method``) of the two probes this module runs: FTGD on the task's gradient mask
#: (the transfer probe), or plain fine-tuning of every parameter on the task's good sentences (the baseline)
FTGD, FULL = "ftgd", "full-finetune"
#: the timing of the gradient pass behind a task's mask (``stats/<probe>_timings.json``, beside ``finetune``
#: and ``eval``; the benchmarks read it): a stage of the fine-tuning, spelled like the gradients probe
MASK_TIMING = "gradients"


def fine_tuning_probe(probe: "ProbeSpec | str | None" = None, baseline: bool = False) -> "ProbeSpec":
    """The registry entry of the probe to run: ``probe`` (an entry or a name), else the FTGD transfer probe
    or, with ``baseline=True``, the entangled baseline (found by their ``method``)."""
    if probe is None:
        return by_method(FULL if baseline else FTGD)
    return get(probe) if isinstance(probe, str) else probe


def transfer_probe(
    loaded: "LoadedModel",
    suite: "Suite",
    settings: "ProbeSettings",
    out_dir: str | Path,
    *,
    baseline: bool = False,
    progress: bool = True,
    heldout: Sequence[str] | None = None,
    save_deltas: bool | None = None,
    on_task: Callable[[str, dict], None] | None = None,
    rows: Sequence[str] | None = None,
    base_from: str | Path | None = None,
    probe: "ProbeSpec | str | None" = None,
) -> dict[str, "TaskSpace"]:
    """Run the transfer probe (FTGD) or, with ``baseline=True``, the entangled baseline; write every
    result under ``out_dir`` and return the four spaces, keyed by ``probe + m`` for ``m`` in :data:`METRICS`.

    ``heldout``: sentences on which LM damage is measured (default: the good sentences of all eval
    pairs). ``save_deltas``: write ``Δ_a`` files (default: yes for FTGD's sparse deltas, no for the
    baseline's dense ones, which are the size of the model per task). ``on_task(task, record)`` is
    called as each task finishes (its files written), in the order they finish.

    ``rows``: fine-tune only these source tasks and return ``{}`` without assembling the spaces (one
    job per source task in a run; :func:`assemble_transfer` builds the spaces from the rows' files).
    ``base_from``: a folder where the base model's scores were already written (``scores/base.parquet``
    and ``stats/<probe>_base.json``), so a row job does not score the base model again. ``probe``: the
    registry entry (or name) to run instead of choosing by ``baseline`` (:func:`fine_tuning_probe`).

    With ``settings.workers > 1`` the tasks run in that many spawned processes, each with a copy of
    the model; like any spawning code, a script that calls this needs the
    ``if __name__ == "__main__":`` guard.
    """
    spec = fine_tuning_probe(probe, baseline)
    probe = spec.name
    out = Path(out_dir)
    save_deltas = (spec.method == FTGD) if save_deltas is None else save_deltas
    plan = _plan(loaded, suite, settings, probe, heldout)
    if rows is not None:
        unknown = [a for a in rows if a not in plan.tasks]
        if unknown:
            raise TaskspaceError(f"row task(s) {', '.join(unknown[:5])} are not among the probed tasks")
    timings = {"base_eval": 0.0, MASK_TIMING: 0.0, "finetune": 0.0, "eval": 0.0}
    t = time.perf_counter()
    cached = _cached_base(Path(base_from), probe, plan.base_key) if base_from is not None else None
    base_df, base_nll = cached if cached is not None else score_base(
        loaded, suite, settings, out, heldout=heldout, progress=progress, plan=plan, probe=spec)
    timings["base_eval"] = time.perf_counter() - t

    status_dir = out / spec.file("status")
    rows_dir = out / "scores" / probe
    wanted = list(rows) if rows is not None else plan.tasks
    t_tasks = time.perf_counter()
    job = _Job(probe=probe, settings=settings, train_by={}, dev_by={}, eval_pairs=plan.test.pairs,
               base_df=base_df, base_nll=base_nll, heldout=heldout, groups=plan.groups, out=out,
               rows_dir=rows_dir, save_deltas=save_deltas)
    workers = _fine_tune_rows(loaded, plan, job, wanted, status_dir, timings, progress=progress, on_task=on_task)
    timings["tasks_wall"] = time.perf_counter() - t_tasks
    timings["workers"] = workers
    if rows is not None:
        write_json(out / "stats" / f"{probe}_timings" / f"{hash_records(list(rows))[:12]}.json", timings)
        return {}
    return assemble_transfer(loaded.describe(), suite, settings, out, heldout=heldout, scorer=plan.scorer,
                             timings=timings, probe=spec)


def _fine_tune_rows(loaded: "LoadedModel", plan: "_Plan", job: "_Job", wanted: Sequence[str], status_dir: Path,
                    timings: dict, *, progress: bool, on_task: Callable[[str, dict], None] | None) -> int:
    """Fine-tune and evaluate each task of ``wanted`` not done before (``job`` without its training and
    dev pairs, which are filled in here; in ``job.settings.workers`` processes, or in this one), writing its status file as it finishes and adding its timings to
    ``timings``; returns the number of workers used."""
    probe = job.probe
    records: dict[str, dict] = {}
    model_desc = loaded.describe()
    with progress_bar(probe, total=len(wanted), fields=True, show=progress) as advance:
        for a in wanted:
            rec = _done(status_dir, job.rows_dir, a, plan.keys[a])
            if rec is not None:
                records[a] = rec
                advance(1, task=a, status="done before")
        todo = [a for a in wanted if a not in records]
        job = replace(job, train_by={a: plan.train_by[a] for a in todo},
                      dev_by={a: plan.dev_by.get(a, []) for a in todo})
        workers = max(1, min(job.settings.workers, len(todo)))
        results = (_in_workers(loaded, job, todo, workers) if workers > 1
                   else _in_process(loaded, plan.scorer, job, todo))
        for a, rec, task_timings in results:
            for k, v in task_timings.items():
                timings[k] += v
            rec.update({"task": a, "group": plan.groups[a], "probe": probe, "key": plan.keys[a],
                        "model": model_desc, "created": timestamp()})
            # the status file is written last: its presence (with this key) marks the task as done
            write_json(_task_path(status_dir, a, ".json"), rec)
            records[a] = rec
            advance(1, task=a, status=rec["status"])
            if on_task is not None:
                on_task(a, rec)
    return workers


@dataclass
class _Plan:
    """What every stage of one transfer run agrees on: tasks, splits, the scorer and the resume keys."""

    tasks: list[str]
    groups: dict[str, str]
    test: "Suite"
    train_by: dict
    dev_by: dict
    scorer: Any
    base_key: str
    keys: dict[str, str]


def _plan(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", probe: str,
          heldout: Sequence[str] | None) -> _Plan:
    splits = settings.splits(suite)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    tasks = suite.select(list(settings.tasks) if settings.tasks is not None else None).tasks
    n_test, n_train = test.counts(), train.counts()
    empty = [t for t in tasks if not n_test.get(t) or not n_train.get(t)]
    if empty:
        raise TaskspaceError(f"task(s) {', '.join(empty[:5])} have no training or eval pairs "
                             f"(pairs per task too few for --train-pairs/--dev-pairs/--eval-pairs)")
    scorer = _scorer(loaded, settings)
    train_by, dev_by = train.by_task(), dev.by_task()
    base_key, keys = row_keys(loaded, splits, tasks, settings, probe, heldout)
    return _Plan(tasks=tasks, groups={t: suite.group_of(t) for t in tasks}, test=test, train_by=train_by,
                 dev_by=dev_by, scorer=scorer, base_key=base_key, keys=keys)


def score_base(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", out_dir: str | Path, *,
               baseline: bool = False, heldout: Sequence[str] | None = None, progress: bool = True,
               plan: _Plan | None = None, probe: "ProbeSpec | str | None" = None) -> tuple["pd.DataFrame", float]:
    """The base model's per-pair scores on every eval pair and its LM NLL, written to
    ``scores/base.parquet`` and ``stats/<probe>_base.json`` in ``out_dir`` — or read from there when an
    earlier run with the same model, convention and eval pairs wrote them (the first stage of a
    transfer run; its row jobs and the assembly read it). ``probe`` / ``baseline``: as for
    :func:`transfer_probe`."""
    probe = fine_tuning_probe(probe, baseline).name
    plan = plan if plan is not None else _plan(loaded, suite, settings, probe, heldout)
    out = Path(out_dir)
    cached = _cached_base(out, probe, plan.base_key)
    if cached is not None:
        return cached
    rec_path, df_path = out / "stats" / f"{probe}_base.json", out / "scores" / "base.parquet"
    scorer, eval_pairs = plan.scorer, plan.test.pairs
    if progress:
        n_sent = len({s for p in eval_pairs for s in (p.good, p.bad)})
        with progress_bar(f"{probe}: scoring base model", total=n_sent) as adv:
            base_df = scorer.score_pairs(eval_pairs, progress=adv)
    else:
        base_df = scorer.score_pairs(eval_pairs)
    base_nll = heldout_nll(scorer, heldout) if heldout is not None else lm_nll(base_df, settings.reduction)
    _write_parquet(df_path, base_df)
    write_json(rec_path, {"key": plan.base_key, "lm_nll": base_nll, "convention": scorer.convention.to_dict(),
                          "model": loaded.describe()})
    return base_df, base_nll


def _cached_base(folder: Path, probe: str, key: str) -> tuple["pd.DataFrame", float] | None:
    """The base scores :func:`score_base` wrote into ``folder`` for the same ``key``, or None."""
    rec_path, df_path = folder / "stats" / f"{probe}_base.json", folder / "scores" / "base.parquet"
    if not (rec_path.exists() and df_path.exists()):
        return None
    try:
        rec = read_json(rec_path)
    except ValueError:
        return None
    if rec.get("key") != key:
        return None
    return pd.read_parquet(df_path), float(rec["lm_nll"])


def assemble_transfer(model_desc: dict | None, suite: "Suite", settings: "ProbeSettings", out_dir: str | Path, *,
                      baseline: bool = False, heldout: Sequence[str] | None = None, scorer: Any = None,
                      timings: dict | None = None, source: str | Path | None = None,
                      probe: "ProbeSpec | str | None" = None) -> dict[str, "TaskSpace"]:
    """The four spaces from the per-task files of every source task (written by :func:`transfer_probe`,
    in one run or in one job per row), into ``out_dir``; ``source`` is where those files are (default
    ``out_dir``; the base scores are then not copied). ``model_desc`` None: the description the base
    stage recorded. A task without its files is an error naming it. ``probe`` / ``baseline``: as for
    :func:`transfer_probe`."""
    spec = fine_tuning_probe(probe, baseline)
    probe = spec.name
    out = Path(out_dir)
    src = Path(source) if source is not None else out
    t = time.perf_counter()
    timings = dict(timings or {})
    tasks = suite.select(list(settings.tasks) if settings.tasks is not None else None).tasks
    groups = {a: suite.group_of(a) for a in tasks}
    status_dir, rows_dir = src / spec.file("status"), src / "scores" / probe
    records: dict[str, dict] = {}
    for a in tasks:
        path = _task_path(status_dir, a, ".json")
        if not path.exists():
            raise TaskspaceError(f"{probe}: no result for source task {a!r} in {src}")
        records[a] = read_json(path)
    base_df = pd.read_parquet(src / "scores" / "base.parquet")
    base_rec = read_json(src / "stats" / f"{probe}_base.json")
    model_desc = model_desc if model_desc is not None else base_rec.get("model", {})
    ok = [a for a in tasks if records[a]["status"] == "ok"]
    finetuned = _TaskLogs({a: _task_path(rows_dir, a, ".parquet") for a in ok})
    est = transfer_matrices(base_df, finetuned, tasks, bootstrap=settings.bootstrap, seed=settings.seed)
    failed = {a: records[a].get("reason") or records[a]["status"] for a in tasks if records[a]["status"] != "ok"}
    convention = scorer.convention.to_dict() if scorer is not None else base_rec.get("convention")
    prov_common = {
        "probe": probe, "created": timestamp(), "model": model_desc,
        "revision": model_desc.get("revision") if isinstance(model_desc, dict) else None,
        "convention": convention, "settings": settings.to_dict(),
        "suite": suite.select(tasks).describe(), "seed": settings.seed,
        "bootstrap": {"resamples": settings.bootstrap, "level": LEVEL, "paired": True,
                      "unit": "eval pair"},
        "lm_damage_text": "heldout sentences" if heldout is not None else "good sentences of all eval pairs",
        "failed_tasks": failed, "rows_measured": len(ok), "versions": versions(), "torch_threads": torch_threads(),
        "rows": "task fine-tuned on", "columns": "task evaluated",
    }
    spaces: dict[str, TaskSpace] = {}
    for m in METRICS:
        name = probe + m
        e = est[m]
        what = ("accuracy" if "accuracy" in m else "mean margin") + (
            " change / |self-transfer|" if "normalized" in m else " change")
        sp = TaskSpace(e.value, tasks, [groups[a] for a in tasks], name,
                       dict(prov_common, perf=what), e.low, e.high)
        sp.save(out / "spaces" / f"{name}.csv")
        spaces[name] = sp
    if ok:
        _concat_logs(out / "scores" / f"{probe}.parquet", finetuned, ok)
    _write_task_table(out / "stats" / f"{probe}_tasks.csv", [records[a] for a in tasks])
    timings["assemble"] = time.perf_counter() - t
    write_json(out / "stats" / f"{probe}_timings.json", timings)
    return spaces


@dataclass
class _Job:
    """What fine-tuning and evaluating one task needs besides the model (sent once to each worker);
    ``probe``: the name of the fine-tuning probe."""

    probe: str
    settings: "ProbeSettings"
    train_by: dict
    dev_by: dict
    eval_pairs: list
    base_df: "pd.DataFrame"
    base_nll: float
    heldout: Sequence[str] | None
    groups: dict
    out: Path
    rows_dir: Path
    save_deltas: bool

    def run(self, a: str, loaded: "LoadedModel", scorer: Any) -> tuple[dict, dict]:
        """Fine-tune on ``a``, evaluate on every task; (record, timings of this task)."""
        timings = {MASK_TIMING: 0.0, "finetune": 0.0, "eval": 0.0}
        rec = _run_task(a, probe=self.probe, loaded=loaded, scorer=scorer, settings=self.settings,
                        train_pairs=self.train_by[a], dev_pairs=self.dev_by[a], eval_pairs=self.eval_pairs,
                        base_df=self.base_df, base_nll=self.base_nll, heldout=self.heldout,
                        groups=self.groups, out=self.out, rows_dir=self.rows_dir,
                        save_deltas=self.save_deltas, timings=timings)
        _release_memory()
        return rec, timings


def _scorer(loaded: "LoadedModel", settings: "ProbeSettings") -> Any:
    """The scorer of a transfer run (the same in this process and in every worker)."""
    return Scorer(loaded.model, loaded.tokenizer, reduction=settings.reduction, prefix=settings.prefix,
                  batch_tokens=settings.batch_tokens)


def _in_process(loaded: "LoadedModel", scorer: Any, job: _Job, todo: list[str]) -> Iterator[tuple[str, dict, dict]]:
    """The tasks one after the other in this process."""
    for a in todo:
        rec, timings = job.run(a, loaded, scorer)
        yield a, rec, timings


# -- worker processes ----------------------------------------------------------------------------------
# Tasks are independent (each starts from θ_0, restored bit-exactly, with its own seeded batches and
# masks), so ``workers`` processes can take one task each. On a CPU, processes with one thread each get
# ~1.3–1.5× more out of the cores than one process with all threads, because a small model's matrices
# are too small to split well across threads. Each worker gets its own copy of the model, read from
# a file written with plain pickle (a tensor sent through multiprocessing's own pickler would be moved
# into shared memory, and the workers write into their parameters). Workers are spawned, never forked: a forked
# child of a process that has started torch's thread pool can deadlock.
_WORKER: dict[str, Any] = {}


def _worker_init(payload: str, threads: int) -> None:
    torch.set_num_threads(threads)
    with open(payload, "rb") as f:
        loaded, job = pickle.load(f)
    _WORKER.update(loaded=loaded, job=job, scorer=_scorer(loaded, job.settings))


def _worker_task(a: str) -> tuple[str, dict, dict]:
    rec, timings = _WORKER["job"].run(a, _WORKER["loaded"], _WORKER["scorer"])
    return a, rec, timings


def worker_threads(workers: int) -> int:
    """Threads per worker process: this process's torch threads shared out, at least one each."""
    return max(1, torch.get_num_threads() // max(workers, 1))


def _in_workers(loaded: "LoadedModel", job: _Job, todo: list[str], workers: int) -> Iterator[tuple[str, dict, dict]]:
    """The tasks in ``workers`` spawned processes; results as they finish (any order)."""
    # the model goes to the workers through a file, not through the pipe that starts them: a worker that
    # dies while starting (e.g. a script without the __main__ guard) then shows as a broken pool instead
    # of leaving this process blocked on a pipe nobody reads
    with tempfile.TemporaryDirectory(prefix="taskspace-workers-") as tmp:
        payload = Path(tmp) / "job.pkl"
        with open(payload, "wb") as f:
            pickle.dump((loaded, job), f, protocol=pickle.HIGHEST_PROTOCOL)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(str(payload), worker_threads(workers)))
        try:
            pending = {pool.submit(_worker_task, a) for a in todo}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        except BrokenProcessPool as e:
            raise TaskspaceError(f"a worker process died ({e}); finished tasks are kept — run the same "
                                 "command again to resume, with fewer --workers if memory ran out (a script "
                                 "that starts workers needs the `if __name__ == \"__main__\":` guard)") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_task(a: str, *, probe: str, loaded: "LoadedModel", scorer: Any, settings: "ProbeSettings",
              train_pairs: list, dev_pairs: list, eval_pairs: list, base_df: "pd.DataFrame",
              base_nll: float, heldout: Sequence[str] | None, groups: dict, out: Path, rows_dir: Path,
              save_deltas: bool, timings: dict) -> dict:
    """Fine-tune on one task, evaluate on all, write its per-pair log and delta; return its record
    (``probe``: the name of the fine-tuning probe, whose registry entry says how it fine-tunes and where its
    deltas go)."""
    spec = get(probe)
    model, tokenizer = loaded.model, loaded.tokenizer
    mask_info: dict = {"kind": "all parameters"}
    grad_seconds = 0.0
    if spec.method == FULL:
        res = finetune_lm(model, tokenizer, train_pairs, dev_pairs, settings)
    else:
        t = time.perf_counter()
        mask = task_mask(loaded, a, train_pairs, groups[a], settings)
        grad_seconds = time.perf_counter() - t
        timings[MASK_TIMING] += grad_seconds
        mask_info = {"kind": settings.mask_kind, "fraction": settings.mask_fraction,
                     "threshold": settings.mask_threshold}
        res = ftgd(model, tokenizer, train_pairs, dev_pairs, mask, settings)
        del mask
    timings["finetune"] += res.seconds
    rec = res.to_dict()
    rec["mask"] = mask_info
    rec["gradient_seconds"] = grad_seconds
    rec["eval_seconds"] = 0.0
    if not res.ok:
        return rec
    t = time.perf_counter()
    res.delta.meta.update({"task": a, "probe": probe, "model": loaded.describe(),
                           "best_step": res.best_step})
    with applied(model, res.delta):
        df = scorer.score_pairs(eval_pairs)
        nll = heldout_nll(scorer, heldout) if heldout is not None else lm_nll(df, settings.reduction)
    st = self_transfer(base_df, df, a)
    rec.update({"self_transfer": st["margin"], "self_transfer_accuracy": st["accuracy"],
                "lm_nll_base": base_nll, "lm_nll": nll, "lm_damage": nll - base_nll})
    rec["eval_seconds"] = time.perf_counter() - t
    timings["eval"] += rec["eval_seconds"]
    if save_deltas:
        save_delta(_task_path(out / spec.file("deltas"), a, ".safetensors"), res.delta)
    _write_parquet(_task_path(rows_dir, a, ".parquet"), df)
    return rec


def _done(status_dir: Path, rows_dir: Path, task: str, key: str) -> dict | None:
    """The record of a task finished earlier with the same key (and its per-pair log, if ok)."""
    path = _task_path(status_dir, task, ".json")
    if not path.exists():
        return None
    try:
        rec = read_json(path)
    except ValueError:
        return None
    if rec.get("key") != key:
        return None
    if rec.get("status") == "ok" and not _task_path(rows_dir, task, ".parquet").exists():
        return None
    return rec


def _task_path(folder: Path, task: str, suffix: str) -> Path:
    return Path(folder) / f"{task_filename(task)}{suffix}"


def _write_parquet(path: Path, df: "pd.DataFrame") -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


class _TaskLogs(Mapping):
    """Fine-tuned tasks' per-pair logs, read from disk when asked for (so at most one is in memory)."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths

    def __getitem__(self, task: str) -> "pd.DataFrame":
        return pd.read_parquet(self._paths[task])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _concat_logs(path: Path, logs: _TaskLogs, tasks: list[str]) -> None:
    """All tasks' per-pair logs as one parquet file with a ``finetuned_on`` column, written one task
    (one row group) at a time, so memory does not grow with the number of tasks."""
    import pyarrow as pa
    import pyarrow.parquet as pq


    with atomic_path(path) as tmp:
        writer = None
        try:
            for a in tasks:
                df = logs[a]
                df.insert(0, "finetuned_on", a)
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
                del df, table
        finally:
            if writer is not None:
                writer.close()


def _write_task_table(path: Path, records: list[dict]) -> None:


    cols = ["task", "group", "status", "reason", "steps_run", "best_step", "stopped_early", "mask_size",
            "mask_fraction", "self_transfer", "self_transfer_accuracy", "lm_nll_base", "lm_nll",
            "lm_damage", "delta_norm", "seconds", "gradient_seconds", "eval_seconds"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in records], columns=cols)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")


def _release_memory() -> None:
    """Free what the finished task allocated, and hand freed heap back to the OS (glibc keeps it
    otherwise, and tasks with longer sentences would raise the peak step by step)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass



def summary(spaces: dict[str, "TaskSpace"], probe: str, records_csv: str | Path | None = None) -> dict:
    """What the CLI prints: diagonal mean of T, within- vs between-group mean of T̃, failed tasks, LM damage."""
    T = spaces[probe]
    Tn = spaces[probe + "_normalized"]
    out: dict[str, Any] = {"probe": probe, "n_tasks": T.n_tasks,
                           "diagonal_mean": float(np.nanmean(np.diag(T.matrix)))
                           if np.isfinite(np.diag(T.matrix)).any() else float("nan"),
                           "normalized": Tn.within_between(),
                           "failed": T.provenance.get("failed_tasks", {})}
    if records_csv is not None and Path(records_csv).exists():
        df = pd.read_csv(records_csv)
        ok = df[df["status"] == "ok"]
        out["lm_damage_mean"] = float(ok["lm_damage"].mean()) if len(ok) else float("nan")
    return out


# -- the registry's entry points: the runner and the per-task stages of a run -------------------------------

def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str]) -> "ProbeResult":
    """FTGD transfer or the entangled baseline (each its own job): fine-tune per task, evaluate on all."""
    (spec,) = runner_probes(run, kinds, ctx)
    kind = spec.name
    out = Path(ctx.out) if ctx.out is not None else Path(tempfile.mkdtemp(prefix=f"taskspace-{kind}-"))
    spaces = transfer_probe(loaded, suite, settings, out, probe=spec, progress=ctx.progress,
                            heldout=ctx.options.get("heldout"), rows=ctx.rows)
    res = ProbeResult((kind,), spaces=spaces, workdir=out,
                      provenance=next(iter(spaces.values())).provenance if spaces else {})
    if spaces:
        info = summary(spaces, kind, out / "stats" / f"{kind}_tasks.csv")
        res.records[f"stats/{kind}_info.json"] = info
        notes = [f"diagonal mean of T (self-transfer, margin): {info['diagonal_mean']:.4g}"]
        if "lm_damage_mean" in info:
            notes.append(f"LM damage (mean change of held-out NLL, nats/token): {info['lm_damage_mean']:.4g}")
        failed = info["failed"]
        notes.append(f"{len(failed)} task(s) failed: " + "; ".join(f"{t} ({why})" for t, why in failed.items())
                     if failed else "failed tasks: none")
        res.extra["notes"] = notes
    return res


class TransferStages:
    """How a run splits transfer / baseline into jobs: the base model's scores once (``base``), one
    fine-tuning per source task (``row``, reading the published base scores from ``cell``) and the
    assembly of the spaces from every row's published files (``assemble``). ``kind``: the probe's name;
    ``options``: its prepared options (``heldout``)."""

    @staticmethod
    def base(kind: str, loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", out: Path,
             options: dict) -> dict:
        score_base(loaded, suite, settings, out, probe=kind, heldout=options.get("heldout"), progress=True)
        return {"stage": "base"}

    @staticmethod
    def row(kind: str, loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", out: Path, row: str,
            cell: Path, options: dict) -> dict:
        transfer_probe(loaded, suite, settings, out, probe=kind, progress=False, rows=[row], base_from=cell,
                       heldout=options.get("heldout"))
        return {"row": row}

    @staticmethod
    def assemble(kind: str, suite: "Suite", settings: "ProbeSettings", out: Path, cell: Path,
                 options: dict) -> dict:
        spaces = assemble_transfer(None, suite, settings, out, probe=kind, source=cell,
                                   heldout=options.get("heldout"))
        return {name: sp.within_between() for name, sp in spaces.items()}
