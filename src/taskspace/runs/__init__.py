"""Resumable runs: a plan (models × revisions × probes × suite × settings) expanded into keyed jobs.

>>> from taskspace.runs import load_plan, run_plan
>>> result = run_plan(load_plan("plan.toml"), "runs/gutenberg")   # resumes; skips finished jobs

Modules, in the order data flows: :mod:`.plan` (TOML → :class:`Plan`), :mod:`.jobs` (keys, execution of
one job), :mod:`.store` (staging, publishing, done-records), :mod:`.lock` (one process per run
directory), :mod:`.executors` (local, Ray), :mod:`.expand` (the plan resolved, checked and expanded into
jobs), :mod:`.runner` (the two phases of a run) and :mod:`.dryrun` (the same jobs listed, nothing run).
"""
from .executors import Executor, LocalExecutor, Outcome, RayExecutor, make_executor
from .expand import ResolvedModel
from .jobs import Job, execute_job, job_key, model_fingerprint
from .lock import RunLock
from .plan import ExecutorSpec, ModelSpec, Plan, PretrainSpec, SuiteSpec, load_plan, parse_plan, parse_plan_text
from .result import RunResult
from .runner import run_plan
from .store import JobStore

__all__ = [
    "ExecutorSpec", "Executor", "Job", "JobStore", "LocalExecutor", "ModelSpec", "Outcome", "Plan",
    "PretrainSpec", "RayExecutor", "ResolvedModel", "RunLock", "RunResult", "SuiteSpec", "execute_job",
    "job_key", "load_plan", "make_executor", "model_fingerprint", "parse_plan", "parse_plan_text", "run_plan",
]
