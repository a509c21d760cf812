"""``taskspace.probe``: run any registered probe on one model checkpoint — the one public call that the
command line and the run system go through as well — and :func:`prepare_options`, which turns option
values as a user writes them (a file name, a revision name) into what a runner reads."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import InputError
from ..models.loading import as_loaded
from ..provenance import hash_records
from ..suites.splits import SplitSizes, halve_suite
from .output import HALVES_DIR
from .registry import get
from .settings import ProbeSettings
from .spec import HalfPass, ProbeSpec, RunContext

# the controls (torch) are imported where a control is loaded: `import taskspace` starts without them

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loading import LoadedModel
    from ..suites.schema import Suite
    from .result import ProbeResult
    from .settings import ProbeSettings


def probe(
    lm: "LoadedModel | tuple[Any, Any]",
    suite: "Suite",
    kind: str | Sequence[str],
    settings: "ProbeSettings | None" = None,
    *,
    out: str | Path | None = None,
    rows: Sequence[str] | None = None,
    progress: bool = True,
    **options: Any,
) -> "ProbeResult":
    """Run probe ``kind`` (a registered name, or several names that share one job, such as
    ``("gradients", "overlap")``) of ``lm`` on ``suite`` and return its :class:`ProbeResult`.

    ``out``: a folder the probe may write per-task files into as it goes, so that running the same call
    again resumes (FTGD-based probes); without it they use a temporary folder. ``rows``: only these
    source tasks (probes that split into one job per source task). ``options``: the probe's own options
    (its spec's :class:`~taskspace.probes.spec.Option` s; ``taskspace probe KIND --help`` lists them), in
    their prepared form: ``heldout`` a list of sentences, ``reference`` a loaded model. Nothing is
    written to ``out`` except such working files; call ``result.save(out)`` for the spaces.

    >>> res = taskspace.probe(lm, suite, "gradients", ProbeSettings(train_pairs=50))
    >>> res.spaces["gradients"].within_between()

    ``lm`` may also be a ``(model, tokenizer)`` pair you already loaded (``LoadedModel.from_hf``).
    """
    lm = as_loaded(lm)

    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    specs = [get(k) for k in kinds]
    if len({s.runner for s in specs}) != 1 or len({s.job_kind for s in specs}) != 1:
        raise ValueError(f"probes {', '.join(kinds)} do not share one runner; run them one at a time")
    known = {o.name: o for s in specs for o in s.options}
    unknown = [k for k in options if k not in known]
    if unknown:
        raise TypeError(f"unknown option(s) for {', '.join(kinds)}: {', '.join(unknown)}")
    values = {name: opt.default for name, opt in known.items()}
    for name, value in options.items():
        values[name] = known[name].check(value) if known[name].kind == "value" else value
    settings = settings if settings is not None else ProbeSettings()
    if rows is not None and not specs[0].per_task:
        raise ValueError(f"probe {kinds[0]!r} does not split into per-task rows")
    ctx = RunContext(out=Path(out) if out is not None else None, progress=progress,
                     rows=tuple(rows) if rows is not None else None, options=values, spec=specs[0])
    runner = specs[0].load_runner()
    # the split-half pass is planned before the runner runs: one that cannot be halved with split_half "on"
    # fails before any work, and a runner of joint_halves makes it in the same call
    plan, skipped = None, None
    if rows is None and split_half(specs[0], settings):
        plan, skipped = half_pass(suite, settings, ctx)
    if plan is not None and specs[0].joint_halves:
        ctx.halves = plan
    res = runner(lm, suite, settings, ctx, kinds)
    if skipped is not None:
        res.extra.setdefault("notes", []).append(skipped)
    if plan is not None:
        # the same probe on two disjoint halves of every task's pairs (tasks t~1, t~2): a 2T × 2T space per
        # main space, read by taskspace.analysis.reliability; its working files in a folder of their own.
        # A runner that made it already hands it back; else it is a second call of the runner.
        halves = res.halves if res.halves is not None else runner(lm, plan.suite, plan.settings, plan.ctx, kinds)
        res.halves = None           # only the halves' main spaces stay (their gradients, masks… go)
        for spec in specs:
            for name in spec.main_spaces():
                if name in halves.spaces:
                    res.spaces[f"{HALVES_DIR}/{name}"] = halves.spaces[name]
    return res


def half_pass(suite: "Suite", settings: "ProbeSettings", ctx: RunContext) -> tuple[HalfPass | None, str | None]:
    """The split-half pass of a run on ``suite`` (:class:`HalfPass`: the suite of halves, their settings and
    context), or ``(None, note)`` when ``split_half`` is ``auto`` and the tasks are too small to halve (e.g. one
    eval pair per task); with ``split_half="on"`` that is an InputError. The suite of halves (groups as t's)
    serves probes that list their tasks from the suite and probes that read only the splits alike."""
    try:
        half_settings = dataclasses.replace(settings, halves=True, tasks=None)
        sizes = SplitSizes(settings.train_pairs, settings.dev_pairs, settings.eval_pairs)
        halved = halve_suite(suite, sizes, settings.seed, settings.tasks)
    except InputError as e:
        if settings.split_half == "on":
            raise
        return None, f"split-half pass skipped: {e.message}"
    half_ctx = RunContext(out=ctx.out / HALVES_DIR if ctx.out is not None else None, progress=ctx.progress,
                          options=ctx.options, spec=ctx.spec)
    return HalfPass(halved, half_settings, half_ctx), None


def split_half(spec: ProbeSpec, settings: "ProbeSettings") -> bool:
    """Whether a probe run also makes its split-half pass: ``settings.split_half`` (``auto`` = what the
    probe's registry entry says: on for probes of one pass, off for those that fine-tune or ablate per
    task, whose cost it would double), never inside a halves run or for a staged run's single rows."""
    if settings.halves or settings.split_half == "off":
        return False
    return settings.split_half == "on" or spec.halves


def read_sentences(path: str | Path) -> list[str]:
    """The non-empty lines of a text file (an option of kind ``sentences``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        sentences = [s.strip() for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=p) from None
    if not sentences:
        raise InputError("no sentences in the file", file=p)
    return sentences


def resolve_revision_word(model: str, revision: str | None, value: str) -> str:
    """An option of kind ``revision``: ``first`` / ``init`` name the control's revision of ``model``; any
    other value is a revision of the same model."""
    from .controls import control_revision

    return control_revision(model, revision, value) if value in ("first", "init") else value


def prepare_options(spec: ProbeSpec, raw: dict[str, Any], *, model: str, revision: str | None,
                    load: Callable[[str], Any] | None = None, base: Path | None = None) -> dict[str, Any]:
    """The options of ``spec`` as its runner reads them, from values as a user writes them (checked, with
    defaults): ``sentences`` options read their file (relative to ``base``), ``revision`` options are
    resolved against ``model`` and, with ``load``, loaded (``load(revision) -> LoadedModel``)."""
    values = spec.check_options(raw)
    out: dict[str, Any] = {}
    for opt in spec.options:
        v = values[opt.name]
        if v is not None and opt.kind in ("sentences", "folder"):
            p = Path(v).expanduser()
            p = base / p if base is not None and not p.is_absolute() else p
            v = read_sentences(p) if opt.kind == "sentences" else p
        elif v is not None and opt.kind == "revision":
            v = resolve_revision_word(model, revision, v)
            v = load(v) if load is not None else v
        out[opt.name] = v
    return out


def option_key(spec: ProbeSpec, raw: dict[str, Any]) -> dict[str, Any]:
    """What a job key and the provenance record of ``spec``'s options: the options that change the numbers
    (``key=True``), a file of sentences by the hash of its sentences (an edited file changes the key)."""
    values = spec.key_options(spec.check_options(raw))
    for opt in spec.options:
        if opt.key and opt.kind == "sentences" and values.get(opt.name) is not None:
            values[opt.name] = {"sentences_sha256": hash_records(read_sentences(values[opt.name]))}
    return values
