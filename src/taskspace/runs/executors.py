"""Executors: where a run's jobs execute. Submit jobs (each after the jobs it depends on), then gather.

- :class:`LocalExecutor` (default): on this machine. ``workers = 1``: in this process, one job after the
  other, with a progress bar over jobs; deterministic and the easiest to debug. ``workers = N``: N worker
  processes, each job with ``cpus_per_job`` torch threads, a job starting once the jobs it depends on
  are done. Small models use two threads poorly (measured in ``benchmarks/README.md``, "Demo"), so
  on a two-core machine two one-thread workers finish a grid of small jobs sooner than one process does.
- :class:`RayExecutor` (optional extra ``pip install taskspace[ray]``): each job becomes a Ray task;
  a job's dependencies are passed to it as object references, so Ray starts it only after them. The run
  directory must be on a file system every worker sees. Same jobs, same keys, same files → the same
  results as the local executor, to the bit when a job gets as many torch threads as a local run uses
  (``cpus_per_job``; float32 sums are grouped by thread, so 1 and 2 threads differ in the last bits).

An executor never decides *what* to run: the runner hands it only jobs that are not done, and
:func:`~taskspace.runs.jobs.execute_job` writes results and done-records itself, wherever it runs. Two hooks
let the runner shape a gather without knowing how the executor works: ``more(outcome)`` returns jobs to add
while it runs (a model's probe jobs once its training is done, not after every model's), and ``cost(job)``
estimates a job's seconds, so that a local executor with several workers starts the longest ready job
first (the long single jobs do not end up alone at the end of a run while the other workers idle).
"""
from __future__ import annotations

import multiprocessing
import os
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import TaskspaceError
from .jobs import Job, execute_job
from .store import JobStore

# ray (optional) and torch are imported inside the executors that use them: planning a run needs neither


@dataclass
class Outcome:
    """What became of one job: ``done``, ``failed`` (with ``error``) or ``blocked`` (a dependency failed)."""

    job: Job
    status: str
    seconds: float = 0.0
    error: str | None = None
    summary: dict = field(default_factory=dict)


#: ``more(outcome)``: jobs to add to a gather when a job ends (see :meth:`Executor.gather`)
MoreJobs = Callable[[Outcome], Sequence[Job]]
#: ``cost(job)``: a job's estimated seconds (None: unknown), for choosing among ready jobs
JobCost = Callable[[Job], "float | None"]


class Executor(ABC):
    """Runs jobs of one run directory while respecting their dependencies."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.store = JobStore(run_dir)
        self._jobs: list[Job] = []

    def submit(self, job: Job) -> None:
        """Queue ``job``. Its dependencies must be submitted before it or be done already."""
        _check_deps(job, {j.key for j in self._jobs}, self.store)
        self._jobs.append(job)

    @abstractmethod
    def gather(self, more: "MoreJobs | None" = None, cost: "JobCost | None" = None) -> list[Outcome]:
        """Run everything submitted; one :class:`Outcome` per job, in submission order (jobs that ``more``
        added after them). A failing job does not stop the others, only the jobs that depend on it
        (``blocked``).

        ``more(outcome)``, called here (not in a worker) as each job ends: jobs to run as well, whose
        dependencies are among the jobs of this gather or done. ``cost(job)``: its estimated seconds; an
        executor that chooses among ready jobs starts the most expensive first (else submission order).
        """

    def close(self) -> None:  # noqa: B027 (a hook: an executor that holds nothing need not override it)
        """Release what the executor holds (workers, connections)."""


class LocalExecutor(Executor):
    """Runs jobs on this machine: sequentially in submission order (a valid order: dependencies come
    first), or with ``workers`` > 1 in that many worker processes of ``threads`` torch threads each. The worker
    processes are started once and kept until :meth:`close`, so a run's later jobs (its probes, after the
    models it trains) does not pay for starting them and importing torch again."""

    def __init__(self, run_dir: str | Path, *, workers: int = 1, threads: int = 1) -> None:
        super().__init__(run_dir)
        if workers < 1 or threads < 1:
            raise TaskspaceError("an executor needs at least one worker and one thread per job")
        self.workers = workers
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        """Stop the worker processes (after the jobs they are running)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def gather(self, more: "MoreJobs | None" = None, cost: "JobCost | None" = None) -> list[Outcome]:
        from ..progress import progress_bar

        jobs, self._jobs = self._jobs, []
        if self.workers > 1 and (len(jobs) > 1 or more is not None):
            return self._gather_parallel(jobs, more, cost)
        outcomes: list[Outcome] = []
        failed: set[str] = set()
        with progress_bar("jobs", total=len(jobs), fields=True) as advance:
            i = 0
            while i < len(jobs):        # in submission order: `more` appends, so the list may grow
                job = jobs[i]
                i += 1
                advance(0, job=job.label)
                if any(d in failed for d in job.deps):
                    failed.add(job.key)
                    outcome = Outcome(job, "blocked", error="a job it depends on failed")
                    self.store.log("blocked", job.key, job.label)
                else:
                    try:
                        res = execute_job(job, self.run_dir)
                        outcome = Outcome(job, "done", res.get("seconds", 0.0), summary=res.get("summary", {}))
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001 - one job's failure must not stop the run
                        failed.add(job.key)
                        outcome = Outcome(job, "failed", error=_one_line(e))
                        self.store.log("fail", job.key, job.label, error=_one_line(e))
                outcomes.append(outcome)
                added = _added(more, outcome, jobs, self.store)
                jobs += added
                advance(1, **({"total": len(jobs)} if added else {}))
        return outcomes

    def _gather_parallel(self, jobs: list[Job], more: "MoreJobs | None", cost: "JobCost | None") -> list[Outcome]:
        """Worker processes (spawned: no state shared with this one); a job is sent once its dependencies
        are done — among ready jobs the one ``cost`` estimates longest, else the first submitted — and
        blocked when one of them failed."""
        from ..progress import progress_bar

        results: dict[str, Outcome] = {}
        waiting = list(jobs)
        order = {j.key: i for i, j in enumerate(jobs)}      # submission order: the tie-break, and "ours"
        estimate: dict[str, float] = {}
        running: dict[Any, Job] = {}

        def rank(job: Job) -> tuple[float, int]:
            if job.key not in estimate:
                estimate[job.key] = float(cost(job) or 0.0) if cost is not None else 0.0
            return (-estimate[job.key], order[job.key])

        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        pool = self._pool
        try:
            with progress_bar(f"jobs ({self.workers} workers)", total=len(jobs), fields=True) as advance:

                def end(outcome: Outcome) -> None:
                    results[outcome.job.key] = outcome
                    added = _added(more, outcome, jobs, self.store)
                    for j in added:
                        order[j.key] = len(jobs)
                        jobs.append(j)
                        waiting.append(j)
                    advance(1, **({"total": len(jobs)} if added else {}))

                while waiting or running:
                    for job in sorted(waiting, key=rank):
                        deps = [d for d in job.deps if d in order]
                        if any(d in results and results[d].status != "done" for d in deps):
                            waiting.remove(job)
                            self.store.log("blocked", job.key, job.label)
                            end(Outcome(job, "blocked", error="a job it depends on failed"))
                        elif len(running) < self.workers and all(d in results for d in deps):
                            waiting.remove(job)
                            running[pool.submit(_worker_execute, job.to_dict(), str(self.run_dir),
                                                self.threads)] = job
                            advance(0, job=job.label)
                    if not running:
                        continue    # jobs were blocked (or added): look at the waiting ones again
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = running.pop(fut)
                        res = fut.result()
                        if "error" in res:
                            self.store.log("fail", job.key, job.label, error=res["error"])
                            end(Outcome(job, "failed", error=res["error"]))
                        else:
                            end(Outcome(job, "done", res.get("seconds", 0.0), summary=res.get("summary", {})))
        except BaseException:
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return [results[j.key] for j in jobs]


class RayExecutor(Executor):
    """Runs each job as a Ray task (``ray`` is imported only here; it is an optional extra).

    ``address``: a running cluster (``ray://host:10001`` or ``auto``), or None for a local Ray started on
    this machine with ``num_cpus`` CPUs. ``cpus_per_job``: CPUs Ray reserves per job.
    """

    def __init__(self, run_dir: str | Path, *, address: str | None = None, num_cpus: int | None = None,
                 cpus_per_job: float = 1.0) -> None:
        super().__init__(run_dir)
        try:
            import ray
        except ImportError:
            raise TaskspaceError("executor 'ray' needs Ray: pip install 'taskspace[ray]' "
                                 "(or use executor kind = \"local\")") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kw["address"] = address
            elif num_cpus:
                kw["num_cpus"] = num_cpus
            ray.init(**kw)
        self._threads = max(1, int(cpus_per_job))
        self._remote = ray.remote(num_cpus=cpus_per_job, max_retries=0)(_ray_execute)

    def gather(self, more: "MoreJobs | None" = None, cost: "JobCost | None" = None) -> list[Outcome]:
        """Every job becomes a Ray task at once, its dependencies passed as object references; jobs that
        ``more`` adds become tasks as they come. Ray, not this process, orders the ready ones (``cost``
        is not used)."""
        from ..progress import progress_bar

        ray = self._ray
        jobs, self._jobs = self._jobs, []
        refs: dict[str, Any] = {}
        by_ref: dict[Any, Job] = {}

        def launch(new: Sequence[Job]) -> None:
            for job in new:
                dep_refs = [refs[d] for d in job.deps if d in refs]
                refs[job.key] = self._remote.remote(job.to_dict(), str(self.run_dir.resolve()), self._threads,
                                                    *dep_refs)
                by_ref[refs[job.key]] = job

        launch(jobs)
        results: dict[str, Outcome] = {}
        pending = list(by_ref)
        with progress_bar("jobs (ray)", total=len(jobs)) as advance:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    job = by_ref[ref]
                    try:
                        res = ray.get(ref)
                        results[job.key] = Outcome(job, "done", res.get("seconds", 0.0),
                                                   summary=res.get("summary", {}))
                    except Exception as e:  # noqa: BLE001 - RayTaskError wraps the job's own error
                        cause = getattr(e, "cause", None) or e
                        status = "blocked" if _blocked(job, results) else "failed"
                        results[job.key] = Outcome(job, status, error=_one_line(cause))
                        self.store.log(status if status == "blocked" else "fail", job.key, job.label,
                                       error=_one_line(cause))
                    added = _added(more, results[job.key], jobs, self.store)
                    launch(added)
                    jobs += added
                    pending += [refs[j.key] for j in added]
                    advance(1, **({"total": len(jobs)} if added else {}))
        return [results[j.key] for j in jobs]

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def _ray_execute(job: dict, run_dir: str, threads: int, *deps: Any) -> dict:
    """The Ray task: the same function the local executor calls, with a fixed number of torch threads
    (Ray would otherwise set one per reserved CPU through OMP_NUM_THREADS)."""
    import torch

    torch.set_num_threads(threads)
    return execute_job(job, run_dir, *deps)


def _worker_execute(job: dict, run_dir: str, threads: int) -> dict:
    """A local worker process's job: :func:`execute_job` with ``threads`` torch threads and no progress
    bars (they would interleave); its error comes back as one line (an exception need not pickle)."""
    import torch

    os.environ["TASKSPACE_NO_PROGRESS"] = "1"
    torch.set_num_threads(threads)
    try:
        return execute_job(job, run_dir)
    except Exception as e:  # noqa: BLE001 - one job's failure must not stop the run
        return {"error": _one_line(e)}


def _check_deps(job: Job, known: set[str], store: JobStore) -> None:
    """Every dependency of ``job`` is among ``known`` (the keys submitted before it) or done."""
    for dep in job.deps:
        if dep not in known and not store.is_done(dep):
            raise TaskspaceError(f"job {job.label} depends on a job that was neither submitted nor done")


def _added(more: "MoreJobs | None", outcome: Outcome, jobs: list[Job], store: JobStore) -> list[Job]:
    """The jobs ``more`` adds after ``outcome``, each checked like a submitted one (its dependencies are
    jobs of this gather, earlier ones among the added, or done)."""
    if more is None:
        return []
    added = list(more(outcome))
    known = {j.key for j in jobs}
    for job in added:
        _check_deps(job, known, store)
        known.add(job.key)
    return added


def _blocked(job: Job, results: dict[str, Outcome]) -> bool:
    return any(results.get(d) is not None and results[d].status != "done" for d in job.deps)


def make_executor(kind: str, run_dir: str | Path, **options: Any) -> Executor:
    """The executor named ``kind`` (``local`` or ``ray``) with its ``options`` (local: ``workers``,
    ``threads``; Ray: ``address``, ``num_cpus``, ``cpus_per_job``)."""
    if kind == "local":
        return LocalExecutor(run_dir, **options)
    if kind == "ray":
        return RayExecutor(run_dir, **options)
    raise TaskspaceError(f"unknown executor {kind!r}; choose local or ray")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(e).__name__}: {msg}" if not isinstance(e, TaskspaceError) else msg
