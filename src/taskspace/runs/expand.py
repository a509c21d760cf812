"""A plan resolved, checked and expanded into jobs — what a run executes and what a dry run lists.

The checkpoints of a model trained inside the run exist only after its training, so a run expands in steps
(:mod:`.runner`):

1. :func:`pretrain_jobs`: one job per ``pretrain`` model;
2. with a model's revisions resolved (:func:`resolve_model`; for a model trained in the run, once its
   training has ended): :func:`probe_jobs`, one job per probe × revision (the control included);
3. with every model's jobs made: :func:`finish_jobs`, ``compare`` and ``report``, which depend on all of them.

Everything a run would refuse is refused here, before anything is written: the executor kind
(:func:`check_executor`), the suite (:func:`load_plan_suite`) and every model (:func:`check_models`).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import InputError, ModelLoadError, TaskspaceError
from ..io import user_path
from ..models.loading import check_model_folder, list_revisions, resolve_device
from ..probes.registry import SCORE, get, job_kinds, job_of, plan_names
from ..probes.run import option_key, resolve_revision_word
from ..provenance import hash_records
from ..suites import load_suite
from .jobs import Job, job_key, model_fingerprint, settings_subset
from .plan import EXECUTOR_KINDS, REVISION_WORDS, ModelSpec, Plan

# the context check (transformers) is imported where a local model is checked: expanding a plan needs no model
# library

if TYPE_CHECKING:  # pragma: no cover
    from ..suites.schema import Suite
    from .executors import Executor

MAIN = "main"  # folder name of a model's default revision (no revision given)

@dataclass
class ResolvedModel:
    """A plan model with its folder and revisions known."""

    spec: ModelSpec
    name: str                          # what load_model gets: hub name or folder
    revisions: list[str | None]
    control: str | None

    @property
    def cells(self) -> list[str | None]:
        """Revisions to probe: the plan's, then the control if it is not among them."""
        return self.revisions + ([self.control] if self.control is not None and self.control not in self.revisions else [])

    def to_dict(self) -> dict:
        s = self.spec
        return {"name": self.name, "slug": s.slug, "size": s.size,
                "revisions": [rev_dir(r) for r in self.revisions],
                "control": rev_dir(self.control) if self.control is not None else None,
                "pretrain": s.pretrain.to_dict() if s.pretrain else None,
                "device": s.device, "dtype": s.dtype}

def rev_dir(revision: str | None) -> str:
    """Folder name of a revision (``main`` for the default one)."""
    return MAIN if revision is None else revision

def check_executor(plan: Plan, executor: str | Executor | None) -> None:
    """The executor kind is known, and Ray is installed when it is asked for."""
    kind = executor if isinstance(executor, str) else (plan.executor.kind if executor is None else None)
    if kind is not None:
        if kind not in EXECUTOR_KINDS:
            raise InputError(f"unknown executor {kind!r}; choose {' or '.join(EXECUTOR_KINDS)}", field="executor")
        if kind == "ray":
            if importlib.util.find_spec("ray") is None:
                raise TaskspaceError("executor 'ray' needs Ray: pip install 'taskspace[ray]' "
                                     "(or use executor kind = \"local\")")

def check_models(plan: Plan, run_dir: Path, pairs: "Callable[[], list | None]") -> list[ResolvedModel]:
    """Resolve and check every model of the plan (see :func:`preflight`); ``pairs()`` gives the suite's
    pairs for the context check (None: not known, skip it). Returns the resolved models."""
    from ..models.training_data import check_corpus_file

    resolved_all = []
    cached: list | None = None
    for m in plan.models:
        if m.pretrain is not None:
            check_corpus_file(m.pretrain.corpus)      # what its training would refuse, refused now
        resolved = resolve_model(plan, m, run_dir)
        resolved_all.append(resolved)
        for kind_ in job_kinds(score=True):
            cells_for(plan, resolved, kind_)  # an unknown revision in [probe_revisions] raises here
        check_option_revisions(plan, resolved)
        local = user_path(resolved.name)
        if m.pretrain is None and local.is_dir():
            # every sentence must fit the model's context (else scoring fails deep in the forward)
            from ..models.context import check_folder_fits

            if cached is None:
                cached = pairs()
            if cached is None:
                continue
            rev = next((r for r in resolved.revisions if r is not None), None)
            try:
                check_folder_fits(local / rev if rev else local, cached, prefix=plan.settings.prefix)
            except InputError as e:
                raise InputError(f"{e.message} ({resolved.name})", file=plan.source,
                                 field="suite.spec") from None
    return resolved_all

def check_option_revisions(plan: Plan, m: ResolvedModel) -> None:
    """A probe option that names a revision of the probed model (kind ``revision``, e.g. ablation's
    ``reference``) must name one that exists, checked before anything is written."""
    for name, raw in plan.probe_options.items():
        for opt in get(name).options:
            value = raw.get(opt.name)
            if opt.kind != "revision" or value is None:
                continue
            where = f"probe_options.{name}.{opt.name}"
            try:
                rev = resolve_revision_word(m.name, m.revisions[0], value)
            except InputError as e:
                raise InputError(e.message, file=plan.source, field=where) from None
            have = list_revisions(m.name) if user_path(m.name).is_dir() else None
            if have and rev != "init" and rev not in have:
                raise InputError(f"{rev!r} is not a revision of {m.spec.slug} ({', '.join(have)})",
                                 file=plan.source, field=where)

def plan_suite_info(plan: Plan, suite: "Suite | None" = None) -> dict:
    """What planning needs of the suite (its data hash keys every probe job): of ``suite`` when given
    (the plan's selection already made), else of the suite loaded here."""
    if suite is None:
        suite = load_plan_suite(plan)
    return {**plan.suite.to_dict(), **suite.describe(), "groups": suite.task_groups()}

def load_plan_suite(plan: Plan) -> "Suite":
    """The plan's suite with its task selection and limit; errors name the plan's fields."""
    s = plan.suite
    try:
        suite = load_suite(s.spec)
    except InputError as e:
        if e.file is None or e.file == s.spec:
            raise InputError(e.message, file=plan.source, field="suite.spec") from None
        raise
    if s.tasks or s.limit_per_task:
        try:
            suite = suite.select(list(s.tasks) if s.tasks else None, s.limit_per_task)
        except InputError as e:
            raise InputError(e.message, file=plan.source, field="suite.tasks") from None
    return suite

def pretrain_jobs(plan: Plan, run_dir: Path) -> list[Job]:
    """One job per model of the plan that is trained inside the run."""
    jobs = []
    for m in plan.models:
        if m.pretrain is None:
            continue
        inputs = {"pretrain": m.pretrain.to_dict()}
        key = job_key("pretrain", inputs)
        out = f"models/{m.slug}"
        spec = {"pretrain": m.pretrain.to_dict(), "out": out, "seed": m.pretrain.seed,
                "key_inputs_hash": hash_records([inputs])}
        jobs.append(Job("pretrain", key, f"pretrain {m.slug}", f"{out}:pretrain", spec))
    return jobs

def resolve_model(plan: Plan, m: ModelSpec, run_dir: Path) -> ResolvedModel:
    """The model's folder (or hub name), its revisions and its control, checked against what exists."""
    i = plan.models.index(m)
    where = f"models[{i}]"
    name = str((run_dir / "models" / m.slug).resolve()) if m.pretrain else m.name
    local = user_path(name)
    if m.pretrain is None and (name.startswith((".", "/", "~")) or local.exists()) and not local.is_dir():
        raise InputError(f"model folder {name} does not exist", file=plan.source, field=where + ".name")
    if m.pretrain is not None:
        # the checkpoints its training saves, known before it is trained (one rule: planned_checkpoints)
        available = [f"step{n}" for n in m.pretrain.planned_checkpoints()]
        is_local, single = True, False
    else:
        available = list_revisions(name)
        is_local = local.is_dir()
        single = is_local and (local / "config.json").exists()

    def check(r: str, field_name: str) -> str:
        if is_local and r not in available and not (r == "init" or r.startswith("init:")):
            if m.pretrain is not None:
                raise InputError(f"the model trained as {m.slug} will have no revision {r!r}; its training "
                                 f"saves {', '.join(available)}", file=plan.source, field=where + field_name)
            have = f"; it has: {', '.join(available)}" if available else "; it has no checkpoint sub-folders"
            raise InputError(f"model {name} has no revision {r!r}{have}", file=plan.source, field=where + field_name)
        return r

    if m.revisions == ("all",):
        if available:
            revisions: list[str | None] = list(available)
        elif not is_local and m.pretrain is None:
            raise InputError('"all" needs a local folder with stepN sub-folders; list the hub revisions '
                             'instead', file=plan.source, field=where + ".revisions")
        elif single:
            revisions = [None]
        else:
            raise InputError(f"{name} holds neither config.json nor checkpoint sub-folders",
                             file=plan.source, field=where + ".name")
    elif m.revisions == (None,):
        revisions = list(available) if (is_local and not single and available) else [None]
    else:
        revisions = [check(r, ".revisions") for r in m.revisions if r is not None]

    control = m.control
    if control == "first":
        if available:
            control = available[0]
        elif not is_local and revisions and revisions[0] is not None:
            control = revisions[0]
        else:
            raise InputError(f'control "first" needs checkpoints; {name} has none (use control = "init")',
                             file=plan.source, field=where + ".control")
    elif control is not None:
        control = check(control, ".control")
    if is_local and m.pretrain is None:
        # each checkpoint the run will load must be whole: config, tokenizer files, weights

        cells = revisions + ([control] if control is not None else [])
        fresh = [r for r in cells if r is not None and (r == "init" or r.startswith("init:"))]
        folders = {local / r if r is not None else local for r in cells if r not in fresh}
        if fresh:  # init[:SEED] takes its config and tokenizer from the first checkpoint
            folders.add(local / available[0] if available else local)
        for folder in sorted(folders):
            try:
                check_model_folder(folder)
            except ModelLoadError as e:
                raise InputError(str(e), file=plan.source, field=where + ".name") from None
    if m.device in ("auto", ""):
        # the key must name the device the numbers come from, not "whatever is there"


        m = replace(m, device=resolve_device(m.device))
    return ResolvedModel(spec=m, name=name, revisions=revisions, control=control)

def probe_jobs(plan: Plan, models: Sequence[ResolvedModel], suite_info: dict, run_dir: Path,
               fingerprint: "Callable[[str, str | None], dict | None]" = model_fingerprint) -> list[Job]:
    """The jobs of every probe × model × revision (the control included), in a stable order.

    Probes that share one pass share one job (``gradients`` and ``overlap``). A probe that splits into
    one job per source task (its registry entry's ``per_task``: transfer, baseline) becomes a ``P:base``
    job (the base model's scores), one ``P:row`` job per source task, and the assembly ``P``, so a Ray
    cluster spreads one checkpoint's fine-tunings over its workers; the assembled spaces are the same as
    one job's.

    ``fingerprint(name, revision)``: what identifies the weights (:func:`~.jobs.model_fingerprint`); a
    dry run passes one that answers None for a model not trained yet, and a job whose weights or suite
    data are not known yet gets the key ``""`` (listed, never looked up).
    """
    def key(kind: str, inputs: dict) -> str:
        if inputs["model"]["weights"] is None or inputs["suite"] is None:
            return ""
        return job_key(kind, inputs)

    settings = plan.settings.to_dict()
    kinds = [j for j in job_kinds(score=True) if any(job_of(p) == j for p in plan.probes)]
    tasks = list(suite_info["groups"])
    jobs = []
    by_cell: dict[tuple[str, str], str] = {}      # (dest, job kind) → key of the job that completes it
    for m in models:
        fingerprints: dict[str | None, dict] = {}
        for kind in kinds:
            names = [n for n in plan_names() if n in plan.probes and job_of(n) == kind and m.spec.runs(n)]
            if not names:
                continue  # `probes` of this [[models]] table leaves the kind out
            for rev in cells_for(plan, m, kind):
                if rev not in fingerprints:
                    fingerprints[rev] = fingerprint(m.name, rev)
                model = {"name": m.name, "revision": rev, "device": m.spec.device, "dtype": m.spec.dtype}
                inputs = {"model": {**{k: v for k, v in model.items() if k != "name"},
                                    "weights": fingerprints[rev]},
                          "suite": suite_info["data_hash"], "settings": settings_subset(kind, settings)}
                if fingerprints[rev] is not None and "hub" in fingerprints[rev]:
                    inputs["model"]["name"] = m.name
                dest = f"{m.spec.slug}/{rev_dir(rev)}"
                spec = {"model": model, "settings": settings, "seed": settings["seed"], "dest": dest,
                        "suite": {k: suite_info[k] for k in ("spec", "tasks", "limit_per_task", "data_hash")}}
                where = f"{m.spec.slug}@{rev_dir(rev)}"
                if kind == SCORE:       # the scoring job's key and spec name no probes
                    jobs.append(Job(kind, key(kind, inputs), f"{kind} {where}", f"{dest}:{kind}", spec, dest=dest))
                    continue
                spec["probes"] = inputs["probes"] = names
                spec["options"] = {n: plan.probe_options.get(n, {}) for n in names}
                inputs["options"] = {n: option_key(get(n), spec["options"][n]) for n in names}
                label = "+".join(names)
                if get(names[0]).stages is None:
                    needed = [get(n).job_kind for p in names for n in get(p).needs]
                    deps = tuple(by_cell[(dest, k)] for k in needed if (dest, k) in by_cell)
                    job = Job(kind, key(kind, inputs), f"{label} {where}", f"{dest}:{kind}", spec, dest=dest,
                              deps=deps)
                    by_cell[(dest, kind)] = job.key
                    jobs.append(job)
                    continue
                base_inputs = dict(inputs, settings=settings_subset(f"{kind}:base", settings))
                base = Job(f"{kind}:base", key(f"{kind}:base", base_inputs), f"{label} base {where}",
                           f"{dest}:{kind}:base", spec, dest=dest)
                rows = [Job(f"{kind}:row", key(f"{kind}:row", dict(inputs, row=a)), f"{label} {a} {where}",
                            f"{dest}:{kind}:row:{a}", dict(spec, row=a), dest=dest, deps=(base.key,))
                        for a in tasks]
                deps = tuple(j.key for j in rows)
                assemble = Job(kind, key(kind, dict(inputs, rows=sorted(deps))) if all(deps) else "", f"{label} {where}",
                               f"{dest}:{kind}", spec, dest=dest, deps=(base.key, *deps))
                by_cell[(dest, kind)] = assemble.key
                jobs += [base, *rows, assemble]
    return jobs

def cells_for(plan: Plan, m: ResolvedModel, kind: str) -> list[str | None]:
    """The revisions job ``kind`` runs on: all cells, or those named in ``[probe_revisions]``."""

    names = [p for p in plan.probe_revisions if job_of(p) == kind]
    if not names:
        return m.cells
    wanted: list[str | None] = []
    for p in names:
        for w in plan.probe_revisions[p]:
            if w == "first":
                r = [m.revisions[0]]
            elif w == "last":
                r = [m.revisions[-1]]
            elif w == "control":
                r = [m.control] if m.control is not None else []
            elif w in [rev_dir(c) for c in m.cells]:
                r = [c for c in m.cells if rev_dir(c) == w]
            else:
                have = ", ".join([*REVISION_WORDS] + [rev_dir(c) for c in m.cells])
                raise InputError(f"{w!r} is not a revision of {m.spec.slug} ({have})",
                                 file=plan.source, field=f"probe_revisions.{p}")
            wanted.extend(x for x in r if x not in wanted)
    return [c for c in m.cells if c in wanted]

def finish_jobs(plan: Plan, jobs: Sequence[Job]) -> list[Job]:
    """``compare`` and ``report`` after every probe job; keyed by the keys they read."""
    if not plan.report:
        return []
    deps = tuple(j.key for j in jobs)
    known = all(deps)          # a dry run lists jobs whose keys are not known yet ("")
    compare = Job("compare", job_key("compare", {"deps": sorted(deps)}) if known else "", "compare", "run:compare",
                  {"seed": 0}, deps=deps)
    report = Job("report", job_key("report", {"deps": [compare.key]}) if known else "", "report", "run:report",
                 {"seed": 0}, deps=(compare.key,))
    return [compare, report]
