"""Running a plan: lock the run directory, expand the grid into jobs, skip what is done, execute the rest.

Two phases, because the checkpoints of a model trained inside the run exist only after its training
(:mod:`.expand` makes the jobs of each; :mod:`.dryrun` lists the same jobs without running them):

1. pretraining jobs (one per ``pretrain`` model);
2. with every model's revisions resolved: one job per probe × model × revision (the control included),
   then ``compare`` and ``report``, which depend on all of them.

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
from .executors import Executor, make_executor
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
from .plan import Plan
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
        models: list[ResolvedModel] | None = None
        try:
            # phase 1: models trained in the run
            pre_jobs = pretrain_jobs(plan, run_dir)
            _write_run_json(run_dir, plan, None, suite_info, "running")
            result = _execute(ex, store, pre_jobs, result)
            if any(o.job.kind == "pretrain" for o in result.failed):
                raise TaskspaceError(_failure_line(result))
            # phase 2: probes, then compare and report
            models = [resolve_model(plan, m, run_dir) for m in plan.models]
            _write_run_json(run_dir, plan, models, suite_info, "running")
            jobs = probe_jobs(plan, models, suite_info, run_dir)
            jobs += finish_jobs(plan, jobs)
            result = _execute(ex, store, jobs, result)
        finally:
            if own_executor and ex is not None:
                ex.close()
        result.seconds = time.perf_counter() - t0
        status = "complete" if not result.failed else "failed"
        _write_run_json(run_dir, plan, models, suite_info, status, result)
    if result.failed:
        raise TaskspaceError(_failure_line(result))
    return result

def preflight(plan: Plan, run_dir: Path, executor: str | Executor | None = None) -> dict:
    """Check what a run would refuse, writing nothing; returns the suite's info.

    The executor kind (and that Ray is installed), the suite, and every model: the revisions and control
    of a model trained in the run are among the checkpoints its training will save; a local model's
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

def _execute(ex: Executor, store: JobStore, jobs: Sequence[Job], result: RunResult) -> RunResult:
    todo = []
    for job in jobs:
        if store.is_done(job.key):
            result.skipped.append(job)
            store.log("skip", job.key, job.label)
        else:
            todo.append(job)
    for job in todo:
        ex.submit(job)
    if todo:
        result.outcomes.extend(ex.gather())
    return result

def _failure_line(result: RunResult) -> str:
    bad = [o for o in result.outcomes if o.status == "failed"]
    blocked = [o for o in result.outcomes if o.status == "blocked"]
    first = bad[0] if bad else blocked[0]
    more = len(bad) - 1
    tail = (f" (and {more} more failed job(s)" if more > 0 else " (") + \
           (f"; {len(blocked)} job(s) not run" if blocked else "") + \
           f"; see {result.run_dir / '.jobs' / 'log.jsonl'}; finished jobs are kept, rerun to retry)"
    return f"job {first.job.label} failed: {first.error}" + tail.replace(" (;", " (")

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
