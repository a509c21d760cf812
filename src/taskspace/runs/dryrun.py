"""``taskspace run PLAN --dry-run``: every job of the plan, whether it is done, per-kind totals and a cost
estimate — offline, writing nothing.

- **Everything a run would refuse is refused**, with the same one-line errors: the plan, the executor, the
  suite, every local model folder as far as it can be checked without its weights (config, tokenizer,
  weight shapes against the config, context length), revisions and ``[probe_revisions]``.
- **Models trained in the run are listed with their jobs**: their checkpoints are known before training
  (:func:`taskspace.models.presets.planned_checkpoints`, the rule pretraining follows); their jobs' keys
  depend on the trained weights, so they are known (and can be found done) only after training.
- **No network.** A hub model is looked up in the local Hugging Face cache only
  (:func:`~taskspace.models.loading.hub_cache_lookup`): found → its revision is checked and its size read
  from its config; not found → reported *unchecked* (the run downloads it). The hub suite ``blimp`` is read
  from ``datasets``' local cache when every paradigm is there (offline), else reported *unchecked*, with
  the 67 BLiMP paradigms taskspace knows and BLiMP's 1,000 pairs a paradigm (× the plan's limit) standing
  in for the counts.
- **Nothing is written**: no run directory, no ``.lock``, no ``.jobs/``, no ``run.json``. A run directory
  that exists is only read (its done-records), without taking the lock.
- **Cost**: :mod:`taskspace.runs.estimate` (seconds and peak memory per job, its assumptions stated there).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import user_path
from ..models.loading import config_parameter_count, hub_cache_lookup, list_revisions, parameter_count
from ..probes.registry import SCORE, get, probes_of_job, reads_of_job
from .estimate import Cost, Workload, job_cost
from .executors import Outcome
from .expand import (
    check_executor,
    check_models,
    finish_jobs,
    load_plan_suite,
    plan_suite_info,
    pretrain_jobs,
    probe_jobs,
)
from .jobs import Job, model_fingerprint
from .plan import Plan
from .result import RunResult
from .store import JobStore

# the hub's libraries (optional), the BLiMP reader and the presets are imported where they are needed: a dry
# run starts without them

#: pairs per paradigm in the BLiMP release (and the hub dataset)
BLIMP_PAIRS_PER_TASK = 1000


@dataclass
class PlannedJob:
    """One job of a dry run: its state (``done``, ``pending``; ``pending*``: its key is known only after
    the model is trained or the suite is read) and its estimated cost."""

    job: Job
    state: str
    cost: Cost


@dataclass
class DryRun:
    """What a dry run found: the jobs, the models' sizes, and what it could not check offline."""

    jobs: list[PlannedJob] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gpu: bool = False

    def totals(self) -> list[dict]:
        """One row per job kind, in order of first appearance: count, done, estimated seconds (sum over the
        jobs not done) and the largest peak memory of a job of that kind."""
        rows: OrderedDict[str, dict] = OrderedDict()
        for pj in self.jobs:
            r = rows.setdefault(pj.job.kind, {"kind": pj.job.kind, "jobs": 0, "done": 0, "seconds": 0.0,
                                             "peak_bytes": 0.0, "unknown": 0})
            r["jobs"] += 1
            if pj.state == "done":
                r["done"] += 1
                continue
            if pj.cost.seconds is None:
                r["unknown"] += 1
            else:
                r["seconds"] += pj.cost.seconds
            if pj.cost.peak_bytes is not None:
                r["peak_bytes"] = max(r["peak_bytes"], pj.cost.peak_bytes)
        return list(rows.values())


def dry_run(plan: Plan, run_dir: Path, executor: Any = None) -> RunResult:
    """List every job of ``plan`` for ``run_dir`` with its state and cost; run nothing, write nothing."""
    check_executor(plan, executor)
    view = DryRun()
    suite, suite_note = _suite_offline(plan)
    if suite is not None:
        suite_info = plan_suite_info(plan, suite)
        n_tasks, n_pairs = len(suite.tasks), len(suite.pairs)
    else:
        tasks = _blimp_tasks(plan)
        per_task = min(plan.suite.limit_per_task or BLIMP_PAIRS_PER_TASK, BLIMP_PAIRS_PER_TASK)
        suite_info = {**plan.suite.to_dict(), "data_hash": None, "groups": {t: None for t in tasks}}
        n_tasks, n_pairs = len(tasks), len(tasks) * per_task
    view.notes.append(suite_note)
    models = check_models(plan, run_dir, lambda: suite.pairs if suite is not None else None)

    store = JobStore(run_dir)                          # reads done-records only; creates nothing
    pre = pretrain_jobs(plan, run_dir)
    trained = {j.spec["out"].split("/", 1)[1]: store.is_done(j.key) for j in pre}
    untrained = {str((run_dir / "models" / slug).resolve()) for slug, done in trained.items() if not done}

    def fingerprint(name: str, revision: str | None) -> dict | None:
        return None if name in untrained else model_fingerprint(name, revision)

    jobs = probe_jobs(plan, models, suite_info, run_dir, fingerprint=fingerprint)
    jobs += finish_jobs(plan, jobs)

    settings = plan.settings.to_dict()
    work = Workload(n_tasks, n_pairs / max(1, n_tasks), settings)
    sizes: dict[str, tuple[int | None, str]] = {}
    for m in models:
        n, how = model_parameters(plan, m)
        sizes[m.name] = (n, how)
        view.models.append({"slug": m.spec.slug, "name": m.name, "parameters": n, "from": how,
                            "device": m.spec.device, "dtype": m.spec.dtype,
                            "revisions": [r if r is not None else "main" for r in m.cells]})
        view.gpu = view.gpu or m.spec.device.startswith(("cuda", "mps"))
        if m.spec.pretrain is not None and not trained.get(m.spec.slug):
            p = m.spec.pretrain
            view.notes.append(f"{m.spec.slug}: trained in the run ({p.corpus}, {p.size}, "
                              f"{p.planned_checkpoints()[-1]} steps; checkpoints {', '.join(m.revisions)}); "
                              "its jobs' keys are known once it is trained")
        if m.spec.pretrain is None and not user_path(m.name).is_dir():
            view.notes.append(_hub_note(m))

    dtype_of = {m.name: m.spec.dtype for m in models}
    for j in pre:
        slug = j.spec["out"].split("/", 1)[1]
        spec = next(m.spec for m in models if m.spec.slug == slug)
        view.jobs.append(PlannedJob(j, "done" if trained[slug] else "pending", pretrain_estimate(spec.pretrain)))
    for j in jobs:
        state = "done" if j.key and store.is_done(j.key) else ("pending" if j.key else "pending*")
        model = (j.spec.get("model") or {}).get("name")
        n = sizes.get(model, (None, ""))[0] if model else None
        view.jobs.append(PlannedJob(j, state, job_estimate(j, n, dtype_of.get(model, "float32"), work)))

    result = RunResult(run_dir)

    result.skipped = [pj.job for pj in view.jobs if pj.state == "done"]
    result.outcomes = [Outcome(pj.job, pj.state) for pj in view.jobs if pj.state != "done"]
    result.dry = view
    return result


def job_estimate(job: Job, n_params: int | None, dtype: str, work: Workload) -> Cost:
    """The estimated cost of a probe, ``score``, ``compare`` or ``report`` job (:mod:`.estimate`) on a model
    of ``n_params`` parameters; a run also uses it to start the longest ready job first."""
    if job.kind in ("compare", "report", SCORE):
        return job_cost(job.kind, n_params, dtype, work)
    base = job.kind.partition(":")[0]
    specs = probes_of_job(base)
    return job_cost(job.kind, n_params, dtype, work, reads=reads_of_job(base),
                    per_task=any(p.per_task for p in specs), staged=get(specs[0].name).stages is not None,
                    subspace_steps=_subspace_steps(job, specs))


def _subspace_steps(job: Job, specs: Any) -> float:
    """Steps of one task's subspace trainings in ``job``: each of its probes with a ``rotation_steps``
    option trains rotation_steps steps per layer swept (its ``layer`` option: one; none: a sweep)."""
    from .estimate import SWEPT_LAYERS

    total = 0.0
    for spec in specs:
        defaults = {o.name: o.default for o in spec.options}
        if "rotation_steps" not in defaults:
            continue
        opts = {**defaults, **(job.spec.get("options") or {}).get(spec.name, {})}
        total += opts["rotation_steps"] * (1 if opts.get("layer") is not None else SWEPT_LAYERS)
    return total


def pretrain_estimate(spec: Any) -> Cost:
    """The estimated cost of training ``spec`` (a plan model's ``pretrain`` table) in the run."""
    from ..models.presets import estimated_parameters, get_preset

    return job_cost("pretrain", estimated_parameters(spec.size, spec.corpus), "float32", None,
                    pretrain={"steps": spec.planned_checkpoints()[-1], "batch_size": get_preset(spec.size).batch_size})


def model_parameters(plan: Plan, m: Any) -> tuple[int | None, str]:
    """The model's parameter count and where it was read, without loading weights."""
    if m.spec.pretrain is not None:
        from ..models.presets import estimated_parameters

        p = m.spec.pretrain
        return estimated_parameters(p.size, p.corpus), f"the {p.size} preset"
    local = user_path(m.name)
    if local.is_dir():
        revs = [r for r in m.revisions if r is not None and not r.startswith("init")]
        folder = local / revs[0] if revs else local
        if not (folder / "config.json").is_file():
            have = list_revisions(m.name)
            folder = local / have[0] if have else local
        n = parameter_count(folder)
        return n, "safetensors header" if n is not None else "unknown (weights not in safetensors)"
    for rev in m.cells:
        status, path = hub_cache_lookup(m.name, rev)
        if status == "cached":
            n = config_parameter_count(path)
            return n, "config in the local cache" if n is not None else "unknown (config not buildable)"
    return None, "unknown (not in the local Hugging Face cache)"


def _hub_note(m: Any) -> str:
    found: dict[str, list[str]] = {"cached": [], "absent": [], "unknown": []}
    for rev in m.cells:
        status, _ = hub_cache_lookup(m.name, rev)
        found[status].append(rev if rev is not None else "main")
    parts = []
    if found["cached"]:
        parts.append(f"checked in the local Hugging Face cache: {', '.join(found['cached'])}")
    if found["absent"]:
        parts.append(f"the local cache records no such revision: {', '.join(found['absent'])} "
                     "(the run fails there unless the hub has it now)")
    if found["unknown"]:
        parts.append(f"unchecked (not in the local Hugging Face cache; the run downloads them): "
                     f"{', '.join(found['unknown'])}")
    return f"{m.spec.slug} ({m.name}, hub): " + "; ".join(parts)


# -- the suite, offline ----------------------------------------------------------------------------

def _blimp_tasks(plan: Plan) -> list[str]:
    from ..suites.blimp import BLIMP_UIDS

    tasks = list(plan.suite.tasks) if plan.suite.tasks else list(BLIMP_UIDS)
    unknown = [t for t in tasks if t not in BLIMP_UIDS]
    if unknown:
        raise InputError(f"not BLiMP paradigm(s): {', '.join(unknown)}", file=plan.source, field="suite.tasks")
    return tasks


def _suite_offline(plan: Plan) -> tuple[Any, str]:
    """The plan's suite and a line saying how it was checked; (None, line) for the hub suite ``blimp``
    when it cannot be read offline."""
    if plan.suite.spec != "blimp":
        suite = load_plan_suite(plan)
        return suite, f"suite {plan.suite.spec}: {len(suite.tasks)} tasks, {len(suite.pairs):,} pairs (checked)"
    tasks = _blimp_tasks(plan)
    per = plan.suite.limit_per_task
    counts = (f"{len(tasks)} BLiMP paradigms × {min(per or BLIMP_PAIRS_PER_TASK, BLIMP_PAIRS_PER_TASK):,} pairs "
              f"({'the plan' + chr(39) + 's limit' if per and per < BLIMP_PAIRS_PER_TASK else 'BLiMP' + chr(39) + 's size'})")
    try:
        import datasets
    except ImportError:
        return None, (f"suite blimp: unchecked (`datasets` is not installed: pip install 'taskspace[hub]'); "
                      f"counted as {counts}")
    cache = Path(os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE)))
    root = cache / "nyu-mll___blimp"
    if not all(any((root / t).glob("*/*/dataset_info.json")) for t in tasks):
        return None, (f"suite blimp: unchecked (not in the local datasets cache {cache}; the run loads it from "
                      f"the hub); counted as {counts}")
    with _offline(datasets):
        suite = load_plan_suite(plan)
    return suite, (f"suite blimp: {len(suite.tasks)} tasks, {len(suite.pairs):,} pairs (checked, from the "
                   f"local datasets cache)")


class _offline:
    """``datasets`` and ``huggingface_hub`` in offline mode for the block (their flags are read when they
    are imported, so setting the environment now would be too late)."""

    def __init__(self, datasets_mod: Any) -> None:
        self.ds = datasets_mod

    def __enter__(self) -> None:
        import huggingface_hub.constants as hub_constants

        self.saved = [(self.ds.config, "HF_HUB_OFFLINE", self.ds.config.HF_HUB_OFFLINE),
                      (hub_constants, "HF_HUB_OFFLINE", hub_constants.HF_HUB_OFFLINE)]
        if hasattr(self.ds.config, "HF_DATASETS_OFFLINE"):
            self.saved.append((self.ds.config, "HF_DATASETS_OFFLINE", self.ds.config.HF_DATASETS_OFFLINE))
        for obj, name, _ in self.saved:
            setattr(obj, name, True)

    def __exit__(self, *exc: object) -> None:
        for obj, name, value in self.saved:
            setattr(obj, name, value)
