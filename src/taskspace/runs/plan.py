"""Plans: the grid models × revisions × probes × suite × settings of a run, read from TOML.

A plan file (``taskspace run PLAN.toml --out RUN``)::

    probes = ["score", "gradients", "overlap", "transfer"]   # top-level keys come before any [table]
    report = true                                              # compare + report when the jobs are done

    [suite]
    spec = "toy"                 # "toy" | a BLiMP folder | a .jsonl/.csv/.tsv file
    tasks = ["sva_simple", "sva_across_relative_clause"]      # optional; default all
    limit_per_task = 100         # optional

    [[models]]
    name = "../shared/models/gutenberg-gpt2-5m"   # hub name or local folder
    revisions = "all"            # or ["step300", "step2577"]; "all" = every stepN sub-folder
    control = "first"            # first | init | init:SEED | a revision | "none"

    [[models]]
    pretrain = {corpus = "toy", size = "small", steps = 400, seed = 0}   # trained inside the run

    [settings]                   # ProbeSettings fields (taskspace probe KIND --help)
    train_pairs = 50

    [[models]]
    name = "EleutherAI/pythia-410m"
    revisions = ["step143000"]
    probes = ["score", "gradients"]   # optional: this model runs only these of the plan's probes

    [probe_revisions]            # optional: run a costly probe only on some checkpoints
    transfer = ["last", "control"]

    [probe_options.latent]       # optional: a probe's own options (`taskspace probe NAME --help`)
    card_tokens = 20             # probes that run in one job (das, mdas) share their options by name

    [executor]
    kind = "local"               # or "ray"
    workers = 2                  # optional, local: worker processes of cpus_per_job torch threads each

Every mistake is an :class:`~taskspace.errors.InputError` naming the plan file, the line (where it can be
found) and the field, e.g. ``plan.toml, line 7, field 'models[1].revision': unknown key; did you mean
'revisions'?``.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, ModelLoadError
from ..io import user_path
from ..models.loading import DTYPES, check_revision_name
from ..probes.registry import SCORE, default_probes, get, names, plan_names
from ..probes.settings import ProbeSettings

# the presets are imported where a pretraining is checked: reading a plan needs no model library

PRETRAIN_SIZES = ("tiny", "small", "base")
EXECUTOR_KINDS = ("local", "ray")
REVISION_WORDS = ("first", "last", "control")
DEVICES = ("cpu", "cuda", "mps", "auto")
#: a model's device: one of DEVICES, or cuda:N (a GPU by index)
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|mps|auto)$")

_TOP_KEYS = ("probes", "report", "suite", "models", "settings", "probe_revisions", "probe_options",
             "executor")
_SUITE_KEYS = ("spec", "tasks", "limit_per_task")
_MODEL_KEYS = ("name", "pretrain", "slug", "size", "revisions", "control", "device", "dtype", "probes")
_PRETRAIN_KEYS = ("corpus", "size", "steps", "seed", "sentences", "checkpoints")
_EXECUTOR_KEYS = ("kind", "address", "num_cpus", "cpus_per_job", "workers")
_SETTINGS_KEYS = tuple(f.name for f in fields(ProbeSettings) if f.name != "tasks")
_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class PretrainSpec:
    """Train a model from scratch inside the run (``taskspace.models.pretrain.pretrain``)."""

    size: str
    corpus: str = "toy"
    steps: int | None = None
    seed: int = 0
    sentences: int | None = None
    checkpoints: tuple[int, ...] | None = None

    def planned_checkpoints(self) -> list[int]:
        """The steps its training saves (:func:`taskspace.models.presets.planned_checkpoints`)."""
        from ..models.presets import planned_checkpoints

        return planned_checkpoints(self.size, self.steps, self.checkpoints)

    def to_dict(self) -> dict:
        return {"corpus": self.corpus, "size": self.size, "steps": self.steps, "seed": self.seed,
                "sentences": self.sentences,
                "checkpoints": list(self.checkpoints) if self.checkpoints is not None else None}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the plan: an existing one (``name``) or one trained in the run (``pretrain``).

    ``revisions`` is a tuple of revision names, ``("all",)`` for every checkpoint sub-folder, or ``(None,)``
    for the model's only / default revision. ``control`` is ``first``, ``init[:SEED]``, a revision, or None.
    ``probes`` is the part of the plan's probes this model runs (None: all of them), e.g. a costly probe
    only on the largest model of a grid.
    """

    slug: str
    name: str | None = None
    pretrain: PretrainSpec | None = None
    size: str | None = None
    revisions: tuple[str | None, ...] = ("all",)
    control: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    probes: tuple[str, ...] | None = None

    def runs(self, probe: str) -> bool:
        """Whether this model runs ``probe`` (one of the plan's probes)."""
        return self.probes is None or probe in self.probes


@dataclass(frozen=True)
class SuiteSpec:
    """Which pairs the run uses: ``load_suite(spec).select(tasks, limit_per_task)``."""

    spec: str
    tasks: tuple[str, ...] | None = None
    limit_per_task: int | None = None

    def to_dict(self) -> dict:
        return {"spec": self.spec, "tasks": list(self.tasks) if self.tasks else None,
                "limit_per_task": self.limit_per_task}


@dataclass(frozen=True)
class ExecutorSpec:
    """Where jobs run: ``local`` (in-process, sequential) or ``ray`` (optional extra)."""

    kind: str = "local"
    address: str | None = None
    num_cpus: int | None = None
    cpus_per_job: float = 1.0
    workers: int = 1            # local: worker processes (1 = in this process, one job after the other)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "address": self.address, "num_cpus": self.num_cpus,
                "cpus_per_job": self.cpus_per_job, "workers": self.workers}

    def threads(self) -> int:
        """Torch threads of a job run in a worker (``cpus_per_job``, at least 1)."""
        return max(1, int(self.cpus_per_job))


@dataclass(frozen=True)
class Plan:
    """A validated plan. Build it with :func:`load_plan` (a file) or :func:`parse_plan` (a dict)."""

    suite: SuiteSpec
    models: tuple[ModelSpec, ...]
    probes: tuple[str, ...]
    settings: ProbeSettings
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    probe_revisions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    probe_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: bool = True
    source: str = "<plan>"

    def to_dict(self) -> dict:
        """The plan as written to ``RUN/run.json`` (before revisions are resolved)."""
        return {
            "suite": self.suite.to_dict(),
            "models": [{"name": m.name, "slug": m.slug, "size": m.size,
                        "revisions": [r for r in m.revisions], "control": m.control,
                        "pretrain": m.pretrain.to_dict() if m.pretrain else None,
                        "device": m.device, "dtype": m.dtype,
                        "probes": list(m.probes) if m.probes is not None else None} for m in self.models],
            "probes": list(self.probes),
            "probe_revisions": {k: list(v) for k, v in self.probe_revisions.items()},
            "probe_options": {k: dict(v) for k, v in self.probe_options.items()},
            "settings": self.settings.to_dict(),
            "executor": self.executor.to_dict(),
            "report": self.report,
            "source": self.source,
        }


# -- loading -------------------------------------------------------------------------------------

def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file (TOML)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("plan file not found", file=p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.object[e.start]:#04x}); a plan is a UTF-8 TOML file",
                         file=p, line=e.object.count(b"\n", 0, e.start) + 1) from None
    except OSError as e:
        raise InputError(f"cannot read the plan: {e.strerror or e}", file=p) from None
    return parse_plan_text(text, source=str(p), base_dir=p.parent)


def parse_plan_text(text: str, source: str = "<plan>", base_dir: str | Path | None = None) -> Plan:
    """Validate the TOML text of a plan; errors name ``source`` (and the line where it can be found)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) or "invalid TOML"
        raise InputError(f"invalid TOML: {msg}", file=source, line=int(m.group(1)) if m else None) from None
    except ValueError as e:  # tomllib, like json, raises a plain ValueError for an integer of > 4300 digits
        raise InputError(f"invalid TOML: {str(e).splitlines()[0]}", file=source) from None
    except RecursionError:  # e.g. 100,000 nested '['
        raise InputError("invalid TOML: nested too deeply", file=source) from None
    return parse_plan(data, source=source, text=text, base_dir=base_dir)


def parse_plan(data: Mapping[str, Any], source: str = "<plan>", text: str | None = None,
               base_dir: str | Path | None = None) -> Plan:
    """Validate a plan given as a dict (the parsed TOML).

    Relative paths (suite spec, model folders, corpus files) are looked up beside the plan file
    (``base_dir``) first, then in the current directory, and stored absolute, so every worker of a
    run finds them.
    """
    v = _Validator(source, text, base_dir)
    v.keys(data, _TOP_KEYS, "")
    for key in ("suite", "models"):
        if key not in data:
            v.fail(f"missing [{key}]" if key == "suite" else "missing [[models]] (at least one model)", key)

    suite = _parse_suite(v, data["suite"])
    if not isinstance(data["models"], list) or not data["models"]:
        v.fail("must be one or more [[models]] tables", "models")
    models = tuple(_parse_model(v, m, i) for i, m in enumerate(data["models"]))
    slugs = [m.slug for m in models]
    for i, s in enumerate(slugs):
        if s in slugs[:i]:
            v.fail(f"two models have the slug {s!r}; give one of them another `slug`", f"models[{i}].slug")

    known = plan_names()
    probes = data.get("probes", [SCORE, *default_probes()])
    if not isinstance(probes, list) or not probes or not all(isinstance(x, str) for x in probes):
        v.fail(f"must be a non-empty list of probe names ({', '.join(known)})", "probes")
    for i, pname in enumerate(probes):
        if pname not in known:
            v.fail(f"unknown probe {pname!r}{_suggest(pname, known)}; choose from "
                   f"{', '.join(known)}", f"probes[{i}]")
    probes = tuple(dict.fromkeys(probes))
    for i, m in enumerate(models):
        if m.probes is not None and "probes" not in data:
            # most often the plan's own `probes` written below [[models]], where TOML puts it in the table
            v.fail("a model's `probes` narrows the plan's top-level `probes`, which this plan does not set "
                   "(`probes` is also a top-level key: in TOML write it above the first [table])",
                   f"models[{i}].probes")
        for j, pname in enumerate(m.probes or ()):
            if pname not in probes:
                v.fail(f"probe {pname!r} is not in the plan's `probes` ({', '.join(probes)})",
                       f"models[{i}].probes[{j}]")

    report = data.get("report", True)
    if not isinstance(report, bool):
        v.fail("must be true or false", "report")

    settings = _parse_settings(v, data.get("settings", {}))
    probe_revisions = _parse_probe_revisions(v, data.get("probe_revisions", {}), probes)
    probe_options = _parse_probe_options(v, data.get("probe_options", {}), probes)
    executor = _parse_executor(v, data.get("executor", {}))
    return Plan(suite=suite, models=models, probes=probes, settings=settings, executor=executor,
                probe_revisions=probe_revisions, probe_options=probe_options, report=report,
                source=source)


# -- sections ------------------------------------------------------------------------------------

def _parse_suite(v: "_Validator", d: Any) -> SuiteSpec:
    v.table(d, "suite")
    v.keys(d, _SUITE_KEYS, "suite")
    spec = v.string(d, "spec", "suite", required=True)
    if spec != "blimp" and spec != "toy" and not spec.startswith("toy:"):
        spec = v.path(spec)
    tasks = d.get("tasks")
    if tasks is not None:
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t for t in tasks):
            v.fail("must be a list of task ids (or a comma-separated string)", "suite.tasks")
        tasks = tuple(dict.fromkeys(tasks))
    limit = v.integer(d, "limit_per_task", "suite", minimum=1)
    return SuiteSpec(spec=spec, tasks=tasks, limit_per_task=limit)


def _parse_model(v: "_Validator", d: Any, i: int) -> ModelSpec:
    where = f"models[{i}]"
    v.table(d, where)
    v.keys(d, _MODEL_KEYS, where)
    name = v.string(d, "name", where)
    if name is not None:
        name = v.path(name)
    pre = d.get("pretrain")
    if (name is None) == (pre is None):
        v.fail("give exactly one of `name` (an existing model) or `pretrain` (train it in the run)",
               where + (".name" if name is not None else ""))
    pretrain = _parse_pretrain(v, pre, where + ".pretrain") if pre is not None else None

    size = v.string(d, "size", where) or (pretrain.size if pretrain else None)
    slug = v.string(d, "slug", where) or _default_slug(name, pretrain)
    if not _SLUG_RE.match(slug):
        v.fail(f"slug {slug!r} must be letters, digits, '.', '_' or '-' (it names a folder)", where + ".slug")
    if slug in ("models",) or slug.startswith("."):
        v.fail(f"slug {slug!r} is reserved", where + ".slug")

    revs = d.get("revisions", "all" if pretrain else None)
    if revs is None:
        revisions: tuple[str | None, ...] = (None,)
    elif revs == "all":
        revisions = ("all",)
    elif isinstance(revs, str):
        revisions = (_revision(v, revs, where + ".revisions"),)
    elif isinstance(revs, list) and revs and all(isinstance(r, str) for r in revs):
        revisions = tuple(dict.fromkeys(_revision(v, r, where + ".revisions") for r in revs))
        if "all" in revisions:
            v.fail('"all" cannot be mixed with revision names', where + ".revisions")
    else:
        v.fail('must be "all" or a list of revision names (e.g. ["step300", "step2577"])', where + ".revisions")

    control = d.get("control", "first" if pretrain else None)
    if control is not None:
        if not isinstance(control, str) or not control:
            v.fail('must be "first", "init", "init:SEED", a revision name, or "none"', where + ".control")
        if control == "none":
            control = None
        elif control.startswith("init:") and not control[5:].isdigit():
            v.fail(f"{control!r}: the seed after 'init:' must be a non-negative integer", where + ".control")
        elif control not in ("first", "init") and not control.startswith("init:"):
            control = _revision(v, control, where + ".control")
    device = v.string(d, "device", where) or "cpu"
    if not _DEVICE_RE.match(device):
        v.fail(f"unknown device {device!r}{_suggest(device, DEVICES)}; choose cpu, cuda, cuda:N, mps or auto",
               where + ".device")
    dtype = v.string(d, "dtype", where) or "float32"

    if dtype.lower() not in DTYPES:
        v.fail(f"unknown dtype {dtype!r}{_suggest(dtype, DTYPES)}", where + ".dtype")
    probes = d.get("probes")
    if probes is not None:
        if not isinstance(probes, list) or not probes or not all(isinstance(x, str) and x for x in probes):
            v.fail("must be a non-empty list of probe names (those of the plan's `probes` this model runs)",
                   where + ".probes")
        probes = tuple(dict.fromkeys(probes))
    return ModelSpec(slug=slug, name=name, pretrain=pretrain, size=size, revisions=revisions,
                     control=control, device=device, dtype=DTYPES[dtype.lower()], probes=probes)


def _parse_pretrain(v: "_Validator", d: Any, where: str) -> PretrainSpec:
    v.table(d, where)
    v.keys(d, _PRETRAIN_KEYS, where)
    size = v.string(d, "size", where, required=True)
    if size not in PRETRAIN_SIZES:
        v.fail(f"unknown size {size!r}{_suggest(size, PRETRAIN_SIZES)}; choose from "
               f"{', '.join(PRETRAIN_SIZES)}", where + ".size")
    corpus = v.string(d, "corpus", where) or "toy"
    if corpus != "toy" and not corpus.startswith("toy:"):
        corpus = v.path(corpus)
    if corpus != "toy" and not corpus.startswith("toy:") and not Path(corpus).is_file():
        v.fail(f"corpus {corpus!r} is neither 'toy' nor an existing text file", where + ".corpus")
    steps = v.integer(d, "steps", where, minimum=1)
    seed = v.integer(d, "seed", where, minimum=0)
    sentences = v.integer(d, "sentences", where, minimum=1)
    ck = d.get("checkpoints")
    checkpoints = None
    if ck is not None:
        if not isinstance(ck, list) or not ck or not all(isinstance(x, int) and not isinstance(x, bool)
                                                          and x >= 0 for x in ck):
            v.fail("must be a list of non-negative step numbers", where + ".checkpoints")
        checkpoints = tuple(sorted(set(ck)))
    from ..models.presets import planned_checkpoints

    try:   # the rule pretraining follows, so a plan it would refuse is refused here
        planned_checkpoints(size, steps, checkpoints)
    except InputError as e:
        v.fail(e.message, where + ".checkpoints")
    return PretrainSpec(size=size, corpus=corpus, steps=steps, seed=seed or 0, sentences=sentences,
                        checkpoints=checkpoints)


def _parse_settings(v: "_Validator", d: Any) -> ProbeSettings:
    v.table(d, "settings")
    if "tasks" in d:
        v.fail("choose tasks under [suite] (`tasks = [...]`), not under [settings]", "settings.tasks")
    v.keys(d, _SETTINGS_KEYS, "settings")
    defaults = ProbeSettings()
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        ref = getattr(defaults, key)
        ok = (isinstance(value, bool) if isinstance(ref, bool)
              else isinstance(value, int) and not isinstance(value, bool) if isinstance(ref, int)
              else isinstance(value, (int, float)) and not isinstance(value, bool) if isinstance(ref, float)
              else isinstance(value, str) if isinstance(ref, str)
              else isinstance(value, (int, float)) and not isinstance(value, bool))  # optional float (None)
        if not ok:
            kind = type(ref).__name__ if ref is not None else "number"
            v.fail(f"must be a {kind}, got {value!r}", f"settings.{key}")
        kwargs[key] = float(value) if isinstance(ref, float) or ref is None else value
    try:
        return ProbeSettings(**kwargs)
    except InputError as e:
        v.fail(e.message, f"settings.{e.field}" if e.field else "settings")
    raise AssertionError("unreachable")


def _parse_probe_revisions(v: "_Validator", d: Any, probes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    v.table(d, "probe_revisions")
    v.keys(d, plan_names(), "probe_revisions")
    out: dict[str, tuple[str, ...]] = {}
    for probe, revs in d.items():
        where = f"probe_revisions.{probe}"
        if probe not in probes:
            v.fail(f"probe {probe!r} is not in `probes`", where)
        if isinstance(revs, str):
            revs = [revs]
        if not isinstance(revs, list) or not revs or not all(isinstance(r, str) and r for r in revs):
            v.fail('must be a list of revision names or the words "first", "last", "control"', where)
        out[probe] = tuple(dict.fromkeys(revs))
    return out


def _parse_probe_options(v: "_Validator", d: Any, probes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``[probe_options.NAME]``: each probe's own options, checked by its registry entry; a file an option
    names (kind ``sentences`` / ``folder``) is taken relative to the plan."""
    v.table(d, "probe_options")
    v.keys(d, tuple(names()), "probe_options")
    out: dict[str, dict[str, Any]] = {}
    for name, values in d.items():
        where = f"probe_options.{name}"
        if name not in probes:
            v.fail(f"probe {name!r} is not in `probes`", where)
        v.table(values, where)
        spec = get(name)
        try:
            checked = spec.check_options(values, source=v.source, where=where + ".")
        except InputError as e:
            v.fail(e.message, e.field or where)
        out[name] = {}
        for k in values:
            opt = spec.option(k)
            value = checked[k]
            if value is not None and opt.kind in ("sentences", "folder"):
                value = v.path(value)
                if opt.kind == "sentences" and not Path(value).is_file():
                    v.fail(f"file not found: {values[k]}", f"{where}.{k}")
            out[name][k] = value
    # probes that run in one job (das and mdas) read their options by the same names: one value each
    for a in out:
        for b in out:
            if a < b and get(a).job_kind == get(b).job_kind:
                for k in out[a].keys() & out[b].keys():
                    if out[a][k] != out[b][k]:
                        v.fail(f"{a} and {b} run in one job and share option {k!r}; give it one value "
                               f"({out[a][k]!r} vs {out[b][k]!r}), or set it for one of them only",
                               f"probe_options.{b}.{k}")
    return out


def _parse_executor(v: "_Validator", d: Any) -> ExecutorSpec:
    v.table(d, "executor")
    v.keys(d, _EXECUTOR_KEYS, "executor")
    kind = v.string(d, "kind", "executor") or "local"
    if kind not in EXECUTOR_KINDS:
        v.fail(f"unknown executor {kind!r}{_suggest(kind, EXECUTOR_KINDS)}; choose local or ray", "executor.kind")
    cpus = d.get("cpus_per_job", 1.0)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0:
        v.fail("must be a positive number", "executor.cpus_per_job")
    return ExecutorSpec(kind=kind, address=v.string(d, "address", "executor"),
                        num_cpus=v.integer(d, "num_cpus", "executor", minimum=1), cpus_per_job=float(cpus),
                        workers=v.integer(d, "workers", "executor", minimum=1) or 1)


# -- helpers -------------------------------------------------------------------------------------

def _default_slug(name: str | None, pretrain: PretrainSpec | None) -> str:
    if pretrain is not None:
        corpus = "toy" if pretrain.corpus == "toy" else Path(pretrain.corpus).stem
        return f"{corpus}-{pretrain.size}"
    base = Path(str(name).rstrip("/")).name or str(name)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"


def _revision(v: "_Validator", r: str, where: str) -> str:
    """A revision names a checkpoint, never a path (the one rule of
    :func:`~taskspace.models.loading.check_revision_name`)."""
    try:
        check_revision_name(r)
    except ModelLoadError as e:
        v.fail(str(e), where)
    return r


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Validator:
    """Raises InputError(file, line, field) for plan mistakes; finds the line of a key when it can."""

    def __init__(self, source: str, text: str | None, base_dir: str | Path | None = None) -> None:
        self.source = source
        self.lines = text.splitlines() if text is not None else None
        self.base_dir = Path(base_dir) if base_dir is not None else None

    def path(self, value: str) -> str:
        """``value`` as an absolute path when it names an existing file or folder (beside the plan
        first, then from the current directory); otherwise unchanged (a hub name, or missing)."""
        p = user_path(value)
        if p.is_absolute():
            return str(p)
        for base in ([self.base_dir] if self.base_dir is not None else []) + [Path.cwd()]:
            if (base / p).exists():
                return str((base / p).resolve())
        return value

    def fail(self, message: str, where: str) -> None:
        raise InputError(message, file=self.source, line=self._line_of(where), field=where or None)

    def table(self, d: Any, where: str) -> None:
        if not isinstance(d, dict):
            self.fail("must be a table", where)

    def keys(self, d: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in d:
            if key not in allowed:
                hint = _suggest(key, allowed)
                if not hint and where and key in _TOP_KEYS:
                    hint = (f"; `{key}` is a top-level key: in TOML write it above the first [table]")
                self.fail(f"unknown key{hint or '; allowed: ' + ', '.join(allowed)}",
                          f"{where}.{key}" if where else key)

    def string(self, d: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
        value = d.get(key)
        if value is None:
            if required:
                self.fail("missing", f"{where}.{key}")
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(f"must be a non-empty string, got {value!r}", f"{where}.{key}")
        return value

    def integer(self, d: Mapping[str, Any], key: str, where: str, *, minimum: int) -> int | None:
        value = d.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"must be an integer >= {minimum}, got {value!r}", f"{where}.{key}")
        return value

    def _line_of(self, where: str) -> int | None:
        """The 1-based line of ``where`` (``models[1].revisions``) in the TOML text, best effort."""
        if not self.lines or not where:
            return None
        parts = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?", where)
        if not parts:
            return None
        table, index = parts[0][0], int(parts[0][1]) if parts[0][1] else 0
        key = parts[1][0] if len(parts) > 1 else None
        if len(parts) > 2:
            # [probe_options.NAME] key = …: the sub-table's header names two parts; else an inline table
            # (models[1].pretrain.size: `pretrain = {size = …}`) is found by its own key
            found = self._key_line(f"{table}.{parts[1][0]}", 0, parts[2][0])
            return found if found is not None else self._key_line(table, index, key)
        if len(parts) == 1:  # a top-level key or a whole table
            for n, line in enumerate(self.lines, 1):
                s = line.strip()
                if re.match(rf"^{table}\s*=", s) or s in (f"[{table}]", f"[[{table}]]"):
                    return n
            return None
        return self._key_line(table, index, key)

    def _key_line(self, table: str, index: int, key: str | None) -> int | None:
        """The line of ``key = …`` in the ``index``-th ``[table]`` / ``[[table]]``."""
        seen = -1
        inside = False
        for n, line in enumerate(self.lines or (), 1):
            s = line.strip()
            if s.startswith("["):
                header = s.strip("[] \t").split("#")[0].strip().strip("[] \t")
                inside = header == table
                if inside:
                    seen += 1
                continue
            if inside and seen == index and re.match(rf"^{key}\s*=", s):
                return n
        return None
