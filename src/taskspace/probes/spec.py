"""How a probe is described: :class:`ProbeSpec` (one per probe kind), its spaces (:class:`SpaceSpec`) and
its own options (:class:`Option`).

A spec is plain data — names, help, types, defaults, checks, and ``"module:function"`` strings for the code
that runs it — so reading it never imports torch, and every consumer reads the same description: the
command line builds ``taskspace probe NAME`` from it, a plan checks ``[probe_options.NAME]`` against it,
a run hashes the options it declares into job keys and ships them to local or Ray workers, the
provenance records them, and compare / findings / the report learn from the :class:`SpaceSpec` flags which
spaces are headline, generalisation or per-layer spaces. No other module names a probe.
"""
from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ..suites.schema import Suite
    from .result import ProbeResult
    from .settings import ProbeSettings

#: what an :class:`Option` value is: a plain value, a text file of sentences (one a line; the runner gets
#: the sentences, the job key their hash), a folder (where to keep working files; never in a key), or a
#: revision of the probed model (the runner gets that checkpoint loaded like the probed one; the words
#: ``first`` / ``init`` name the control's revision)
OPTION_KINDS = ("value", "sentences", "folder", "revision")
#: where ``taskspace demo`` runs a probe (:attr:`ProbeSpec.demo`): nowhere, every checkpoint, the first and
#: last, each model size's last, the largest size's last
DEMO_PLACES = ("", "every", "ends", "last", "largest")


@dataclass(frozen=True)
class Option:
    """One option of a probe that is not a :class:`~taskspace.probes.settings.ProbeSettings` field.

    ``type``: ``int``, ``float``, ``str`` or ``bool`` (``kind="value"``) or ``str`` for the other kinds.
    ``choices`` / ``min``: checked by :meth:`check` wherever a value comes from (command line, plan, Python).
    ``key``: the value changes the probe's numbers, so it is part of job keys and provenance (``False``
    for options that only say where or how: a cache folder, an extra file to write).
    """

    name: str
    type: type
    default: Any
    help: str
    kind: str = "value"
    choices: tuple[Any, ...] = ()
    min: float | None = None
    key: bool = True

    def __post_init__(self) -> None:
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"option {self.name!r}: unknown kind {self.kind!r}; choose one of {OPTION_KINDS}")
        if not self.name.isidentifier():
            raise ValueError(f"option name {self.name!r} must be a Python identifier")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type and checked; an InputError naming the option if not."""
        if value is None:
            if self.default is None:
                return None
            raise InputError(f"{self.name} needs a value", field=self.name)
        if self.type is bool:
            if not isinstance(value, bool):
                raise InputError(f"{self.name} must be true or false, got {value!r}", field=self.name)
            return value
        if self.type in (int, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if self.type is int:
                ok = ok and float(value).is_integer()
            if not ok or not math.isfinite(float(value)):
                raise InputError(f"{self.name} must be {'an integer' if self.type is int else 'a number'}, got "
                                 f"{value!r}", field=self.name)
            value = self.type(value)
            if self.min is not None and value < self.min:
                raise InputError(f"{self.name} must be >= {self.min:g}, got {value}", field=self.name)
        elif isinstance(value, Path):
            value = str(value)
        elif not isinstance(value, str):
            raise InputError(f"{self.name} must be a string, got {value!r}", field=self.name)
        if self.choices and value not in self.choices:
            raise InputError(f"unknown {self.name} {value!r}; choose one of {', '.join(map(str, self.choices))}",
                             field=self.name)
        return value


@dataclass(frozen=True)
class SpaceSpec:
    """One task space a probe writes (``spaces/<name>.csv|.json``).

    ``signed``: entries can be negative (a diverging colour map, and absolute values are reported
    beside signed ones). ``main``: the probe's headline space — shown in overviews, the findings and
    the report's headline. ``generalization``: its entries are normalised transfer (rows of a per-group
    generalisation table); the value ranks such spaces (1 first: normalised margin transfer, 2:
    normalised accuracy transfer). ``sharing``: its entries measure parameter sharing (the finding
    "sharing grows with training" prefers it; the distributedness summary reads it beside the
    per-task mask table). ``by``: the space also exists per module / per layer in
    ``spaces/<name>_by_<by>/<part>.csv``.

    ``related``: which way a related pair of tasks moves the entry, declared before any data is seen:
    ``"higher"`` (cosines, Jaccard, transfer, steering, DAS recovery) or ``"lower"`` (erasure and
    ablation drops: erasing a task's direction hurts a related task more). Every statistic of
    :mod:`taskspace.analysis` reads the space through it (the gap, the Mantel test, clustering, ARI,
    AUC, the findings). ``reading``: ``"signed"`` or ``"absolute"`` — the one reading that gets tests and
    verdicts (the other is shown, never tested), also declared in advance. ``normalizes``: the space whose
    rows this one divides by their diagonal (``transfer_normalized`` = ``transfer[a, b] / |transfer[a, a]|``);
    compare keeps only the rows whose diagonal's interval in that space lies above 0, so a self-transfer
    near 0 cannot blow a row up.
    """

    name: str
    label: str
    signed: bool = True
    related: str = "higher"
    reading: str = "signed"
    normalizes: str | None = None
    main: bool = False
    generalization: int = 0
    sharing: bool = False
    rows: str = "task"
    columns: str = "task"
    by: str | None = None

    def __post_init__(self) -> None:
        if self.related not in ("higher", "lower"):
            raise ValueError(f"space {self.name!r}: related must be 'higher' or 'lower', got {self.related!r}")
        if self.reading not in ("signed", "absolute"):
            raise ValueError(f"space {self.name!r}: reading must be 'signed' or 'absolute', got {self.reading!r}")

    @property
    def sign(self) -> float:
        """+1 where related tasks are higher, −1 where lower: multiply a space by it to read "higher = related"."""
        return 1.0 if self.related == "higher" else -1.0

    @property
    def parts_folder(self) -> str | None:
        """``<name>_by_<by>`` (the folder of its per-module / per-layer spaces), or None."""
        return f"{self.name}_by_{self.by}" if self.by else None


@dataclass(frozen=True)
class ProbeSpec:
    """One probe kind.

    - ``reads``: the :class:`ProbeSettings` fields its numbers depend on (its command's options, hashed into
      its job key); ``uses``: settings that change only how fast it runs (shown, never hashed);
      ``options``: its own :class:`Option` s.
    - ``spaces``: the task spaces it writes; ``files``: other folders / tables it writes that another
      probe may read, as ``(role, path relative to the probe folder)`` (``transfer`` declares its
      ``deltas``, and ``transfer-estimate`` asks the registry for them instead of spelling the path). The
      role ``table`` marks a per-task table (a ``task`` column, one row per task) that compare copies into
      ``comparison.json`` and the report shows as it is.
    - ``runner``: ``"module:function"`` called as ``run(loaded, suite, settings, ctx, kinds)``; imported
      only when the probe runs. ``job``: probes computed in one pass share one job (gradients, overlap).
    - ``needs``: probes whose results it reuses from the same folder (a run orders its job after theirs).
    - ``method``: what a runner that serves several probes computes for this one, so the runner branches on
      what a probe does, never on its name (``transfer`` / ``baseline``: FTGD or plain fine-tuning of every
      parameter; ``steering`` / ``erasure``: a direction added or erased; ``gradients`` / ``overlap``: the
      cosine of ḡ or the Jaccard of the masks; ``das`` / ``mdas``: a subspace per task or per group). Each
      runner's module names its methods; :func:`~taskspace.probes.registry.by_method` finds the built-in
      probe of a method. Empty for a runner of one probe.
    - ``provides``: keys of its :attr:`~taskspace.probes.result.ProbeResult.extra` that other runners call it
      for (``activations``: ``differences``, the directions of steering, erasure and DAS's control), so they
      ask :func:`~taskspace.probes.registry.provider` instead of naming it.
    - ``per_task``: its runner can compute only some source rows (``ctx.rows``); ``stages``: how a run
      splits it into one job per source task (``"module:object"`` with ``base``, ``row``, ``assemble``).
    - ``halves``: the split-half reliability pass runs by default (cheap probes) or only when asked.
      ``joint_halves``: its runner makes the split-half pass itself, in the same call as the full one
      (``taskspace.probe`` hands it the halves as ``ctx.halves``, a :class:`HalfPass`, and reads their spaces
      from ``ProbeResult.halves``), for a probe whose full result can be derived from its halves' (the
      gradient probes: ḡ_t is the pair-weighted mean of its halves' ḡ, so one round of backward passes on
      the halves serves both). A runner may still return ``halves=None``; then the second call is made.
    - ``default``: a plan that names no ``probes`` runs it.
    - ``demo``: where ``taskspace demo`` runs it (one of :data:`DEMO_PLACES`): at ``"every"`` checkpoint, at
      the first and last (``"ends"``), at each size's final checkpoint (``"last"``), at the largest size's
      final checkpoint only (``"largest"``), or not at all (``""``). ``demo_options``: its own options in the
      demo's plan (``((name, value), …)``, checked at registration), for settings that keep it in the demo's
      budget; probes sharing a job should give the same ones (the job reads one set).
    """

    name: str
    help: str
    reads: tuple[str, ...]
    spaces: tuple[SpaceSpec, ...]
    runner: str
    cost: str = ""
    uses: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    needs: tuple[str, ...] = ()
    job: str | None = None
    per_task: bool = False
    stages: str | None = None
    halves: bool = True
    joint_halves: bool = False
    default: bool = False
    demo: str = ""
    demo_options: tuple[tuple[str, Any], ...] = ()
    method: str = ""
    provides: tuple[str, ...] = ()

    @property
    def job_kind(self) -> str:
        """The run job that computes this probe (probes sharing one pass share one job)."""
        return self.job or self.name

    def load_runner(self) -> Callable[..., "ProbeResult"]:
        return _load(self.runner)

    def load_stages(self) -> Any:
        """The object whose ``base``, ``row`` and ``assemble`` functions a run calls, one job each, for a
        probe that splits into one job per source task (``stages`` set)."""
        if self.stages is None:
            raise ValueError(f"probe {self.name!r} does not split into per-task jobs")
        return _load(self.stages)

    def summary_name(self, space: str) -> str:
        """The stem of ``stats/<stem>_summary.json`` for one of its spaces: the probe's name for its first
        main space, the space's name for any other (the CLI and a run write the same files)."""
        first = next((s.name for s in self.spaces if s.main), self.spaces[0].name)
        return self.name if space == first else space

    def space(self, name: str) -> SpaceSpec | None:
        return next((s for s in self.spaces if s.name == name), None)

    def main_spaces(self) -> list[str]:
        """Its headline spaces (the first space when none is marked)."""
        return [s.name for s in self.spaces if s.main] or [self.spaces[0].name]

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def file(self, role: str) -> str:
        """The path (relative to the probe folder) of the file or folder it declares for ``role``."""
        for r, path in self.files:
            if r == role:
                return path
        raise KeyError(f"probe {self.name!r} declares no file {role!r}")

    def check_options(self, values: dict[str, Any], *, source: Any = None, where: str = "") -> dict[str, Any]:
        """Every option of this probe with its value from ``values`` (checked) or its default; an unknown
        name is an InputError with a did-you-mean (``source``/``where``: the file and field prefix)."""
        known = {o.name: o for o in self.options}
        for k in values:
            if k not in known:
                close = difflib.get_close_matches(k, list(known), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                have = f" (it has: {', '.join(known)})" if known else " (it has none)"
                raise InputError(f"probe {self.name!r} has no option {k!r}{hint}{have}", file=source,
                                 field=f"{where}{k}")
        out = {}
        for name, opt in known.items():
            try:
                out[name] = opt.check(values[name]) if name in values else opt.default
            except InputError as e:
                raise InputError(e.message, file=source, field=f"{where}{name}") from None
        return out

    def key_options(self, values: dict[str, Any]) -> dict[str, Any]:
        """The options that change the numbers (``key=True``), as they go into job keys and provenance."""
        return {o.name: values.get(o.name, o.default) for o in self.options if o.key}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class RunContext:
    """What a runner gets besides the model, suite and settings (filled by the CLI or a run job):
    ``out`` the probe folder it may work in, ``rows`` the source tasks to compute (per-task probes),
    ``options`` its :class:`Option` values, prepared (sentences read, a reference revision loaded),
    ``spec`` its own registry entry (the first of the kinds it runs), so it needs no lookup by name;
    ``halves`` the split-half pass to make in the same call (:class:`HalfPass`; only for a spec with
    ``joint_halves``, and only when the pass runs), else None."""

    out: Any = None
    progress: bool = True
    rows: tuple[str, ...] | None = None
    options: dict = field(default_factory=dict)
    spec: "ProbeSpec | None" = None
    halves: "HalfPass | None" = None


@dataclass
class HalfPass:
    """The split-half pass as ``taskspace.probe`` would run it with a second call of the runner: the suite of
    halves (tasks ``t~1``, ``t~2``), its settings (``halves=True``) and its context (working folder
    ``out/halves``). A runner of a spec with ``joint_halves`` gets it as ``ctx.halves`` and returns the pass's
    result as ``ProbeResult.halves``, as that second call would have returned it."""

    suite: "Suite"
    settings: "ProbeSettings"
    ctx: RunContext
