"""Running a plan: lock the run directory, expand the grid into jobs, skip what is done, execute the rest.

The checkpoints of a model trained inside the run exist only after its training, so a run grows while it
runs (:mod:`.expand` makes the jobs; :mod:`.dryrun` lists the same jobs without running them):

1. the pretraining jobs (one per ``pretrain`` model), and the probe jobs of every other model;
2. as each model's training ends, its probe jobs: one per probe × revision (the control included) — a
   model's probes do not wait for a larger model's training;
3. once every model's jobs are known, ``compare`` and ``report``, which depend on all of them.

Among the jobs that are ready, a local executor with several workers starts the one the cost model
(:mod:`.estimate`) expects to take longest, so that long single jobs do not run alone at the end.

Layout of a run directory (docs/design.md, "Files")::

    RUN/run.json                       the resolved plan, versions, suite data hash, status
    RUN/plan.toml                      a copy of the plan file (when run from a file)
    RUN/models/<slug>/stepN/           models trained inside the run
    RUN/<slug>/<revision>/             one probe folder per model checkpoint (scores/, spaces/, stats/, …)
    RUN/comparison.json, report.html, figures/
    RUN/.jobs/                         done-records, staging folders, log (see taskspace.runs.store)
    RUN/.lock                          held while a process works on the run
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ..errors import InputError, TaskspaceError
from ..io import write_json, write_text
from ..provenance import timestamp, torch_threads, versions
from . import dryrun
from .estimate import Workload
from .executors import Executor, Outcome, make_executor
from .expand import (
    ResolvedModel,
    check_executor,
    check_models,
    finish_jobs,
    load_plan_suite,
    plan_suite_info,
    pretrain_jobs,
    probe_jobs,
    resolve_model,
)
from .jobs import Job
from .lock import RunLock
from .plan import ModelSpec, Plan
from .result import RunResult
from .store import JobStore


def run_plan(plan: Plan, run_dir: str | Path, *, executor: str | Executor | None = None,
             dry_run: bool = False, plan_text: str | None = None) -> RunResult:
    """Execute ``plan`` into ``run_dir``; resumes a killed run and skips finished jobs.

    ``executor``: ``"local"``, ``"ray"``, an :class:`Executor`, or None for the plan's choice.
    ``dry_run``: list every job (those of models trained in the run too), whether it is done, per-kind
    totals and a cost estimate, offline, writing nothing (:func:`taskspace.runs.dryrun.dry_run`).
    A second process on the same ``run_dir`` gets :class:`~taskspace.errors.RunLockedError`.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("the run directory is a file", file=run_dir)
    if dry_run:
        return dryrun.dry_run(plan, run_dir, executor)
    t0 = time.perf_counter()
    result = RunResult(run_dir)
    # everything a run would refuse is refused here, before run.json, plan.toml, .jobs/ or .lock exist
    suite_info = preflight(plan, run_dir, executor)
    with RunLock(run_dir):
        store = JobStore(run_dir)
        store.clean_staging()
        if plan_text is not None:
            write_text(run_dir / "plan.toml", plan_text)
        own_executor = not isinstance(executor, Executor)
        ex = executor if isinstance(executor, Executor) else _make_executor(plan, run_dir, executor)
        try:
            growth = _Growth(plan, run_dir, suite_info, store, result)
            _write_run_json(run_dir, plan, None, suite_info, "running")
            _execute(ex, store, growth.first_jobs(), result, growth)
        finally:
            if own_executor:
                ex.close()
        result.seconds = time.perf_counter() - t0
        status = "complete" if not result.failed else "failed"
        _write_run_json(run_dir, plan, growth.models(), suite_info, status, result)
    if result.failed:
        raise TaskspaceError(_failure_line(result))
    return result

def preflight(plan: Plan, run_dir: Path, executor: str | Executor | None = None) -> dict:
    """Check what a run would refuse, writing nothing; returns the suite's info.

    The executor kind (and that Ray is installed), the suite, and every model: the revisions and control
    of a model trained in the run are among the checkpoints its training will save, and its corpus file is
    one its training accepts; a local model's
    folder, revisions and control exist, and each checkpoint loads as far as it can without its weights
    (:func:`~taskspace.models.loading.check_model_folder`: config, tokenizer, weight shapes), every
    sentence fits its context, and the ``[probe_revisions]`` name revisions it has.
    """
    check_executor(plan, executor)
    suite = load_plan_suite(plan)
    check_models(plan, run_dir, lambda: suite.pairs)
    return plan_suite_info(plan, suite)

def _make_executor(plan: Plan, run_dir: Path, kind: str | None) -> Executor:
    e = plan.executor
    kind = kind or e.kind
    opts = ({"workers": e.workers, "threads": e.threads()} if kind == "local" else
            {"address": e.address, "num_cpus": e.num_cpus, "cpus_per_job": e.cpus_per_job})
    return make_executor(kind, run_dir, **opts)

def _execute(ex: Executor, store: JobStore, jobs: Sequence[Job], result: RunResult, growth: "_Growth") -> None:
    for job in _not_done(jobs, store, result):
        ex.submit(job)
    result.outcomes.extend(ex.gather(more=growth.more, cost=growth.cost))


def _not_done(jobs: Sequence[Job], store: JobStore, result: RunResult) -> list[Job]:
    """``jobs`` less those done before (recorded as skipped)."""
    todo = []
    for job in jobs:
        if store.is_done(job.key):
            result.skipped.append(job)
            store.log("skip", job.key, job.label)
        else:
            todo.append(job)
    return todo


class _Growth:
    """A run's jobs, made as they become known: each model's probe jobs once its weights exist (at the
    start, or when its training in the run ends), then ``compare`` and ``report`` once every model's are
    made. A failed training adds nothing more: the run ends with the jobs already queued, and fails."""

    def __init__(self, plan: Plan, run_dir: Path, suite_info: dict, store: JobStore, result: RunResult) -> None:
        self.plan, self.run_dir, self.suite_info, self.store, self.result = plan, run_dir, suite_info, store, result
        self.pre = pretrain_jobs(plan, run_dir)
        trained = [m for m in plan.models if m.pretrain is not None]
        self.trains = {j.key: m for j, m in zip(self.pre, trained)}
        self.resolved: dict[int, ResolvedModel] = {}
        self.jobs_of: dict[int, list[Job]] = {}
        self.stopped = False
        n_tasks = max(1, suite_info["n_tasks"])
        self.work = Workload(n_tasks, suite_info["n_pairs"] / n_tasks, plan.settings.to_dict())
        self.sizes: dict[str, int | None] = {}          # model name → parameters (for the cost model)

    def first_jobs(self) -> list[Job]:
        """The pretraining jobs, and the probe jobs of every model whose weights exist already."""
        jobs = list(self.pre)
        for key, m in self.trains.items():
            if self.store.is_done(key):
                jobs += self._expand(m)
        for m in self.plan.models:
            if m.pretrain is None:
                jobs += self._expand(m)
        return jobs

    def more(self, outcome: Outcome) -> list[Job]:
        """Called as each job ends: after a training, its model's probe jobs (those not done before)."""
        m = self.trains.get(outcome.job.key)
        if m is None or self.stopped:
            return []
        if outcome.status != "done":
            self.stopped = True
            return []
        return _not_done(self._expand(m), self.store, self.result)

    def _expand(self, m: ModelSpec) -> list[Job]:
        i = self.plan.models.index(m)
        r = resolve_model(self.plan, m, self.run_dir)
        self.resolved[i] = r
        self.sizes[r.name] = dryrun.model_parameters(self.plan, r)[0]
        self.jobs_of[i] = probe_jobs(self.plan, [r], self.suite_info, self.run_dir)
        jobs = list(self.jobs_of[i])
        if len(self.resolved) == len(self.plan.models):
            # every model is known: run.json names them before compare reads it
            _write_run_json(self.run_dir, self.plan, self.models(), self.suite_info, "running")
            everything = [j for k in sorted(self.jobs_of) for j in self.jobs_of[k]]
            jobs += finish_jobs(self.plan, everything)
        return jobs

    def models(self) -> list[ResolvedModel] | None:
        """Every model resolved, in plan order (None until all are)."""
        if len(self.resolved) < len(self.plan.models):
            return None
        return [self.resolved[i] for i in range(len(self.plan.models))]

    def cost(self, job: Job) -> float | None:
        """A job's estimated seconds (:mod:`.estimate`), for the order of ready jobs."""
        if job.kind == "pretrain":
            return dryrun.pretrain_estimate(self.trains[job.key].pretrain).seconds
        model = job.spec.get("model") or {}
        return dryrun.job_estimate(job, self.sizes.get(model.get("name")), model.get("dtype", "float32"),
                                   self.work).seconds

def _failure_line(result: RunResult) -> str:
    bad = [o for o in result.outcomes if o.status == "failed"]
    blocked = [o for o in result.outcomes if o.status == "blocked"]
    first = bad[0] if bad else blocked[0]
    notes = [f"and {len(bad) - 1} more failed job(s)"] if len(bad) > 1 else []
    if blocked:
        notes.append(f"{len(blocked)} job(s) not run")
    notes.append(f"see {result.run_dir / '.jobs' / 'log.jsonl'}; finished jobs are kept, rerun to retry")
    return f"job {first.job.label} failed: {first.error} ({'; '.join(notes)})"

def _write_run_json(run_dir: Path, plan: Plan, models: Sequence[ResolvedModel] | None, suite_info: dict,
                    status: str, result: RunResult | None = None) -> None:
    d = plan.to_dict()
    if models is not None:
        d["models"] = [m.to_dict() for m in models]
    d["suite"] = suite_info
    d["versions"] = versions()
    # can move a float's last bits, like a version; local workers run cpus_per_job threads each
    e = plan.executor
    d["torch_threads"] = e.threads() if e.kind == "local" and e.workers > 1 else torch_threads()
    d["status"] = status
    d["updated"] = timestamp()
    if result is not None:
        d["jobs"] = {"done": sum(o.status == "done" for o in result.outcomes),
                     "skipped": len(result.skipped),
                     "failed": len(result.failed),
                     "seconds": round(result.seconds, 3)}
    write_json(run_dir / "run.json", d)
