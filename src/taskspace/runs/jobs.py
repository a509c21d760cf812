"""Jobs: the units of work of a run, their keys, and how each one is executed.

A *job* is one cell of the plan's grid — pretraining one model, or one probe on one model checkpoint —
or one of the closing steps (compare, report). Its *key* is a sha256 over everything its result depends
on: the job kind, the model's weights (a content fingerprint of the checkpoint's config, weights and
tokenizer files, or the hub name + revision), the suite's data hash, the settings the probe reads, the
device and dtype, and the versions of taskspace / torch / transformers. Same key → same result, so a
finished job is never recomputed; a changed setting changes the key and the job runs again.

Jobs are plain JSON-serialisable records (:class:`Job`), so an executor can ship them to another process
or machine; :func:`execute_job` runs one of them from that record alone.
"""
from __future__ import annotations

import gc
import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ModelLoadError, TaskspaceError
from ..faults import crash_point
from ..io import _json_default, write_text
from ..models.loading import list_revisions, load_model, resolve_local
from ..probes.output import write_summary
from ..probes.registry import SCORE, get, job_kinds, probes_of_job, reads_of_job
from ..probes.run import prepare_options, probe
from ..probes.settings import SCORING_SETTINGS, SPLIT_SETTINGS, ProbeSettings
from ..provenance import hash_records, timestamp, versions
from ..scoring import score
from ..suites import load_suite
from .store import JobStore

# torch, the analysis, the report and pretraining are imported inside the jobs that run them: keying and
# listing jobs (a dry run) needs none of them

# weight-defining files of a checkpoint folder (optimizer / resume state is not part of the model)
_MODEL_FILE_PATTERNS = ("config.json", "model*.safetensors", "pytorch_model*.bin", "tokenizer*.json",
                        "special_tokens_map.json", "vocab.*", "merges.txt", "*.model")
#: job kinds besides the probes' (which come from the registry; a per-task probe P also has the kinds
#: ``P:base`` and ``P:row``, see :func:`taskspace.runs.expand.probe_jobs`)
FIXED_KINDS = ("pretrain", SCORE, "compare", "report")


@dataclass(frozen=True)
class Job:
    """One unit of work.

    ``slot`` names what the job fills (``<model>/<revision>:<kind>``, ``models/<model>:pretrain``,
    ``run:compare``): a newer job of the same slot replaces an older one's results. ``dest`` is the
    folder (relative to RUN) its staged results are published into; None for jobs that write in place.
    ``deps`` are keys of jobs that must be done first.
    """

    kind: str
    key: str
    label: str
    slot: str
    spec: dict
    dest: str | None = None
    deps: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["deps"] = list(self.deps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(kind=d["kind"], key=d["key"], label=d["label"], slot=d["slot"], spec=d["spec"],
                   dest=d.get("dest"), deps=tuple(d.get("deps", ())))


def job_key(kind: str, inputs: dict) -> str:
    """The key of a job: sha256 over its kind, its inputs and the versions that can change a number."""
    return hash_records([{"kind": kind, "inputs": inputs, "versions": _key_versions()}])


@lru_cache(maxsize=1)
def _key_versions() -> dict[str, str]:
    v = versions()
    return {k: v[k] for k in ("taskspace", "torch", "transformers", "tokenizers")}


def settings_subset(kind: str, settings: dict) -> dict:
    """The settings a job of ``kind`` depends on: what the probes computed by that job read (their
    registry entries' ``reads``; the scoring settings for the scoring job)."""
    job, _, stage = kind.partition(":")
    reads = reads_of_job(job)
    if stage == "base":          # the base model's scores: only the eval split and the scoring convention
        reads = tuple(r for r in reads if r in SPLIT_SETTINGS + SCORING_SETTINGS)
    return {k: settings[k] for k in reads}


# -- model fingerprints --------------------------------------------------------------------------

def model_fingerprint(name: str, revision: str | None) -> dict:
    """What identifies the weights of ``name`` at ``revision``.

    A local checkpoint folder: sha256 over its config, weight and tokenizer files (their content, so a
    retrained checkpoint gets a new key even at the same path). A fresh initialisation (``init[:SEED]``):
    the fingerprint of the checkpoint whose config it uses, plus the seed. A hub model: its name and
    revision (the hub cannot be read offline; pin a commit hash as revision for exact keys).
    """
    if revision is not None and (revision == "init" or revision.startswith("init:")):
        revs = list_revisions(name)
        base = model_fingerprint(name, revs[0] if revs else None)
        seed = int(revision.split(":", 1)[1]) if ":" in revision else 0
        return {"init_from": base, "init_seed": seed}
    local = resolve_local(name, revision)
    if local is None:
        return {"hub": name, "revision": revision}
    return {"sha256": _folder_hash(str(local.resolve()), _folder_stamp(local))}


def _folder_stamp(folder: Path) -> tuple:
    """(name, size, mtime) of the weight-defining files: the cache key of :func:`_folder_hash`."""
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _model_files(folder))


def _model_files(folder: Path) -> list[Path]:
    found = {p for pat in _MODEL_FILE_PATTERNS for p in folder.glob(pat) if p.is_file()}
    return sorted(found, key=lambda p: p.name)


@lru_cache(maxsize=256)
def _folder_hash(folder: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for p in _model_files(Path(folder)):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


# -- execution -----------------------------------------------------------------------------------

def execute_job(job: Job | dict, run_dir: str | Path, *_deps: Any) -> dict:
    """Run one job from its record alone and mark it done; returns a short summary.

    Extra positional arguments are ignored: a distributed executor passes the results of the job's
    dependencies there, so the job starts only after them.
    """
    job = Job.from_dict(job) if isinstance(job, dict) else job
    store = JobStore(run_dir)
    if store.is_done(job.key):  # e.g. a retried worker; never compute twice
        return {"label": job.label, "skipped": True}
    runner = _RUNNERS.get(job.kind) or _probe_runner(job.kind)
    _seed_everything(job.spec.get("seed", 0))
    store.log("start", job.key, job.label)
    started, t0 = timestamp(), time.perf_counter()
    try:
        return _execute(job, runner, store, run_dir, started, t0)
    except BaseException:
        _MODEL.clear()                       # a job that failed may have left the weights anywhere
        raise


def _execute(job: Job, runner: Callable[..., Any], store: Any, run_dir: str | Path, started: str,
             t0: float) -> dict:
    record = {"kind": job.kind, "label": job.label, "slot": job.slot, "spec": job.spec,
              "deps": list(job.deps), "started": started}
    if job.dest is not None:
        staging = store.staging_dir(job.key)
        summary = runner(job.spec, staging, Path(run_dir))
        crash_point("before_publish")
        record.update(summary=summary, seconds=round(time.perf_counter() - t0, 3))
        files = store.publish(job.key, staging, job.dest, record)
    else:
        summary, files = runner(job.spec, None, Path(run_dir))
        crash_point("before_publish")
        record.update(summary=summary, seconds=round(time.perf_counter() - t0, 3))
        store.mark_done(job.key, files, record)
    store.log("done", job.key, job.label, seconds=record["seconds"], files=len(files))
    return {"label": job.label, "skipped": False, "seconds": record["seconds"], "summary": summary}


def _seed_everything(seed: int) -> None:
    """Every job starts from the same random state, whatever ran before it in this process — so a
    resumed run, which skips finished jobs, computes exactly what an uninterrupted one does."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)




# -- the job kinds -------------------------------------------------------------------------------

# A process that runs many jobs of one run (the local executor, a Ray worker) loads the suite once and
# keeps the last model it loaded: a transfer checkpoint is T + 2 jobs on the same model, and loading the
# suite (the toy suite is generated) and the weights again for each would cost more than a small model's
# fine-tuning. Every probe leaves the weights as it found them (FTGD and ablation restore bit-exactly),
# and a job that fails drops the cached model, so a cached model is the checkpoint on disk.
_SUITES: dict[str, Any] = {}
_MODEL: dict[str, Any] = {}


def _load_suite(spec: dict):
    s = spec["suite"]
    key = json.dumps(s, sort_keys=True)
    if key in _SUITES:
        return _SUITES[key]
    suite = load_suite(s["spec"])
    if s.get("tasks") or s.get("limit_per_task"):
        suite = suite.select(s.get("tasks"), s.get("limit_per_task"))
    if suite.data_hash != s["data_hash"]:   # (the key holds the data hash: an edited file is read again)
        raise TaskspaceError(f"the suite {s['spec']} changed while the run was planned (data hash "
                             f"{suite.data_hash[:12]} ≠ {s['data_hash'][:12]}); run again to replan")
    _SUITES.clear()
    _SUITES[key] = suite
    return suite


def _load_model(spec: dict):
    m = spec["model"]
    rev = m["revision"]
    if rev is not None and (rev == "init" or rev.startswith("init:")):     # a fresh init of the first one's config
        revs = list_revisions(m["name"])
        rev = revs[0] if revs else None
    try:
        local = resolve_local(m["name"], rev)
    except ModelLoadError:
        local = None                         # load_model below says what is wrong
    # the files' names, sizes and mtimes: a checkpoint rewritten at the same path is loaded again
    stamp = _folder_stamp(local) if local is not None else None
    key = json.dumps([m, stamp], sort_keys=True)
    if key not in _MODEL:
        _MODEL.clear()                       # at most one model held
        _MODEL[key] = load_model(m["name"], m["revision"], device=m["device"], dtype=m["dtype"])
    return _MODEL[key]


def _settings(spec: dict):
    d = dict(spec["settings"])
    d.pop("tasks", None)
    return ProbeSettings(**d)


def _run_score(spec: dict, out: Path, run_dir: Path) -> dict:
    s = spec["settings"]
    res = score(_load_model(spec), _load_suite(spec), reduction=s["reduction"], prefix=s["prefix"],
                batch_tokens=s["batch_tokens"], seed=s["seed"], progress=True)
    res.save(out / "scores")
    return {"accuracy": res.accuracy, "n_pairs": int(len(res.pairs))}


def _probe_runner(kind: str) -> Callable[..., Any]:
    """The runner of a probe job: ``P`` (the whole probe, or the assembly of a per-task probe),
    ``P:base`` or ``P:row``."""
    job, _, stage = kind.partition(":")
    if job not in job_kinds() or stage not in ("", "base", "row"):
        raise TaskspaceError(f"unknown job kind {kind!r}")
    return lambda spec, out, run_dir: _run_probe(spec, out, run_dir, job, stage)


def _options(spec: dict, kind: str) -> dict:
    """The options of probe ``kind`` as its runner reads them (files read, a reference revision loaded
    like the probed model), from the raw values the plan gave (``spec["options"][kind]``)."""
    m = spec["model"]
    return prepare_options(get(kind), spec.get("options", {}).get(kind, {}), model=m["name"],
                           revision=m["revision"],
                           load=lambda rev: load_model(m["name"], rev, device=m["device"], dtype=m["dtype"]))


def _job_options(spec: dict, kinds: tuple[str, ...]) -> dict:
    """The options of a job's probes in one namespace (probes that share a job, like ``das`` and ``mdas``,
    read their options by the same names): a value the plan set for any of them wins over another's
    default (the plan refuses two different values for one name)."""
    raw = spec.get("options", {})
    out: dict = {}
    explicit: set[str] = set()
    for kind in kinds:
        for k, v in _options(spec, kind).items():
            if k in raw.get(kind, {}):
                out[k] = v
                explicit.add(k)
            elif k not in explicit and k not in out:
                out[k] = v
    return out


def _run_probe(spec: dict, out: Path, run_dir: Path, job: str, stage: str) -> dict:
    kinds = tuple(spec.get("probes") or [p.name for p in probes_of_job(job)])
    if stage or get(kinds[0]).stages is not None:
        return _run_stage(spec, out, run_dir, kinds[0], stage)
    from ..probes.controls import summarize_with_control

    loaded = _load_model(spec)
    # a probe that reuses other probes' results reads them from the checkpoint's folder (never writes there)
    reads_cell = any(get(k).needs for k in kinds)
    options = _job_options(spec, kinds)
    res = probe(loaded, _load_suite(spec), kinds, _settings(spec), progress=True,
                out=run_dir / spec["dest"] if reads_cell else None, **options)
    res.save(out)
    summary = {}
    for kind in kinds:
        for s in get(kind).spaces:
            if s.main and s.name in res.spaces:
                wb = summarize_with_control(res.spaces[s.name], None)
                write_summary(out, get(kind).summary_name(s.name),
                              dict(wb, probe=kind, space=s.name, model=loaded.describe(), settings=spec["settings"],
                                   options=get(kind).key_options(spec.get("options", {}).get(kind, {}))))
                summary[s.name] = wb["trained"]
    return _jsonable(summary)


def _run_stage(spec: dict, out: Path, run_dir: Path, kind: str, stage: str) -> dict:
    """One stage of a probe that splits into one job per source task (its registry entry's ``stages``):
    ``base``, ``row`` (one source task, reading what the base job published into the cell) or the
    assembly (stage ``""``, reading every row's published files)."""
    stages = get(kind).load_stages()
    cell = run_dir / spec["dest"]
    if stage == "base":
        return stages.base(kind, _load_model(spec), _load_suite(spec), _settings(spec), out, _options(spec, kind))
    if stage == "row":
        loaded, suite = _load_model(spec), _load_suite(spec)
        # A row ends with a full garbage collection (to free its fine-tuning's cycles before the next
        # row); with the ~400k objects this process holds (imports, suite, model) that cost ~0.1-0.3 s
        # per row, as much as a toy model's fine-tuning. Frozen, they are skipped: the row's collection
        # scans what the row made. Unfrozen after, so the process's own collections see them again.
        gc.freeze()
        try:
            return stages.row(kind, loaded, suite, _settings(spec), out, spec["row"], cell, _options(spec, kind))
        finally:
            gc.unfreeze()
    return stages.assemble(kind, _load_suite(spec), _settings(spec), out, cell, _options(spec, kind))


def _run_pretrain(spec: dict, out: None, run_dir: Path) -> tuple[dict, list[str]]:
    """Pretraining writes into ``RUN/models/<slug>/`` itself (it checkpoints and resumes on its own);
    a folder left by a pretraining with other inputs (another key) is cleared first."""
    from ..models.pretrain import pretrain

    p = spec["pretrain"]
    folder = run_dir / spec["out"]
    marker = folder.with_name(folder.name + ".key")
    if folder.exists() and (not marker.exists() or marker.read_text().strip() != spec["key_inputs_hash"]):
        shutil.rmtree(folder)
    write_text(marker, spec["key_inputs_hash"] + "\n")
    kwargs: dict[str, Any] = {"steps": p["steps"], "seed": p["seed"], "progress": True}
    if p.get("checkpoints") is not None:
        kwargs["checkpoints"] = p["checkpoints"]
    if p.get("sentences") is not None:
        kwargs["sentences"] = p["sentences"]
    crash_point("pretrain")
    pretrain(p["corpus"], p["size"], folder, **kwargs)
    files = sorted(q.relative_to(run_dir).as_posix() for q in folder.rglob("*") if q.is_file())

    return {"checkpoints": list_revisions(str(folder))}, files


def _run_compare(spec: dict, out: None, run_dir: Path) -> tuple[dict, list[str]]:
    from ..analysis import compare_run
    from ..provenance import usable_cpus

    result = compare_run(run_dir, workers=usable_cpus(at_most=4))
    return _headline(result), ["comparison.json"]


def _run_report(spec: dict, out: None, run_dir: Path) -> tuple[dict, list[str]]:
    from ..report import build_report, save_workers

    path = Path(build_report(run_dir, workers=save_workers()))
    files = [path.relative_to(run_dir).as_posix()] if path.is_relative_to(run_dir) else []
    fig = run_dir / "figures"
    if fig.is_dir():
        files += sorted(q.relative_to(run_dir).as_posix() for q in fig.rglob("*") if q.is_file())
    return {"report": str(path)}, files


def _headline(result: Any) -> dict:
    if isinstance(result, dict):
        for key in ("headline", "findings"):
            if key in result:
                return {key: _jsonable(result[key])}
    return {}


def _jsonable(obj: Any) -> Any:
    """Keep only what JSON can hold (summaries go into done-records)."""
    try:
        return json.loads(json.dumps(obj, default=_json_default))
    except (TypeError, ValueError):
        return {}


_RUNNERS: dict[str, Callable[..., Any]] = {
    "pretrain": _run_pretrain,
    SCORE: _run_score,
    "compare": _run_compare,
    "report": _run_report,
}
