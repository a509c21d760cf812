"""The probe registry: one entry per probe kind, read by the CLI, plans, job keys, compare and report.

A probe is a way to measure how two tasks interact inside a model (DESIGN §1). Each kind is described
once, here, by a :class:`ProbeSpec`: its name, the :class:`~taskspace.probes.settings.ProbeSettings`
fields its numbers depend on (which are also the options its ``taskspace probe NAME`` command shows
and the settings its job key hashes), the task spaces it writes (:class:`SpaceSpec`: file name, signed
or not, what rows and columns mean), what it reuses from other probes, how it runs on one checkpoint
(``runner``: ``"module:function"`` under :mod:`taskspace.probes`, imported only when the probe runs, so
reading the registry never imports torch), whether its runner can compute only some source rows
(``per_task``) and how a run splits it into one job per source task (``stages``). ``needs`` names
probes whose results this one reuses when they are in the same folder (``transfer-estimate`` reads the
``transfer`` probe's deltas): a run orders its job after theirs on the same checkpoint and lets it read
(never write) that checkpoint's folder.

Adding a probe is writing its module (a function ``run(loaded, suite, settings, *, out, progress,
rows) -> ProbeResult``) and calling :func:`register` with its spec — in the module that defines the
built-in entries (:mod:`taskspace.probes.kinds`) or from your own code before running a plan.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .result import ProbeResult


@dataclass(frozen=True)
class SpaceSpec:
    """One task space a probe writes (``spaces/<name>.csv|.json``).

    ``signed``: entries can be negative (a diverging colour map, and absolute values are reported
    beside signed ones). ``main``: shown in overviews (tables, figures, the headline). ``generalization``:
    its entries are normalised transfer (rows of a per-group generalisation table); the value ranks
    such spaces (1 first: normalised margin transfer, 2: normalised accuracy transfer). ``by``: the space
    also exists per module / per layer in ``spaces/<name>_by_<by>/<part>.csv``.
    """

    name: str
    label: str
    signed: bool = True
    main: bool = False
    generalization: int = 0
    rows: str = "task"
    columns: str = "task"
    by: str | None = None


@dataclass(frozen=True)
class ProbeSpec:
    """One probe kind. See the module docstring."""

    name: str
    help: str
    reads: tuple[str, ...]
    spaces: tuple[SpaceSpec, ...]
    runner: str
    cost: str = ""
    needs: tuple[str, ...] = ()
    job: str | None = None
    per_task: bool = False
    options: tuple[str, ...] = ()
    stages: str | None = None

    @property
    def job_kind(self) -> str:
        """The run job that computes this probe (probes sharing one pass share one job)."""
        return self.job or self.name

    def load_runner(self) -> Callable[..., "ProbeResult"]:
        module, _, func = self.runner.partition(":")
        return getattr(importlib.import_module(module, __package__), func)

    def load_stages(self) -> Any:
        """The object whose ``base``, ``row`` and ``assemble`` functions a run calls, one job each, for a
        probe that splits into one job per source task (``stages`` set); see
        :class:`taskspace.probes.kinds.TransferStages`."""
        if self.stages is None:
            raise ValueError(f"probe {self.name!r} does not split into per-task jobs")
        module, _, obj = self.stages.partition(":")
        return getattr(importlib.import_module(module, __package__), obj)

    def summary_name(self, space: str) -> str:
        """The stem of ``stats/<stem>_summary.json`` for one of its spaces: the probe's name for its first
        main space, the space's name for any other (the CLI and a run write the same files)."""
        first = next((s.name for s in self.spaces if s.main), self.spaces[0].name)
        return self.name if space == first else space

    def space(self, name: str) -> SpaceSpec | None:
        return next((s for s in self.spaces if s.name == name), None)


_REGISTRY: dict[str, ProbeSpec] = {}


def register(spec: ProbeSpec, *, replace: bool = False) -> ProbeSpec:
    """Add ``spec`` to the registry (``replace=True`` to redefine a kind). Its ``reads`` must be
    ProbeSettings fields and its space names must not clash with another probe's."""
    from dataclasses import fields

    from .settings import ProbeSettings

    _ensure_builtin()
    known = {f.name for f in fields(ProbeSettings)}
    bad = [r for r in spec.reads if r not in known]
    if bad:
        raise ValueError(f"probe {spec.name!r} reads unknown settings: {', '.join(bad)}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"probe {spec.name!r} is already registered")
    others = {s.name: p.name for p in _REGISTRY.values() if p.name != spec.name for s in p.spaces}
    clash = [s.name for s in spec.spaces if s.name in others]
    if clash:
        raise ValueError(f"probe {spec.name!r}: space(s) {', '.join(clash)} already written by "
                         f"{others[clash[0]]!r}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a probe kind (for tests that register a throwaway probe)."""
    _REGISTRY.pop(name, None)


_BUILTIN_LOADED = False


def _ensure_builtin() -> None:
    """Load the built-in entries once, before any lookup or registration (a probe registered first must
    not hide them); the flag is set before the import, whose own register() calls then pass through."""
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        importlib.import_module(".kinds", __package__)


def probes() -> list[ProbeSpec]:
    """Every registered probe, in registration order."""
    _ensure_builtin()
    return list(_REGISTRY.values())


def names() -> list[str]:
    return [p.name for p in probes()]


def get(name: str) -> ProbeSpec:
    """The spec of probe ``name``; an unknown name is an InputError with a did-you-mean."""
    _ensure_builtin()
    spec = _REGISTRY.get(name)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown probe {name!r}{hint}; choose from {', '.join(_REGISTRY)}", field="probe")
    return spec


def all_spaces() -> Iterator[tuple[ProbeSpec, SpaceSpec]]:
    for p in probes():
        for s in p.spaces:
            yield p, s


def space_spec(name: str) -> SpaceSpec | None:
    """The spec of a space file stem (``transfer_normalized``, ``gradients_by_module/block0.attn`` → the
    ``gradients`` spec), or None for a space no registered probe writes."""
    base = name.split("/", 1)[0]
    for _, s in all_spaces():
        if s.name == base or (s.by is not None and base == f"{s.name}_by_{s.by}"):
            return s
    return None


def main_spaces() -> list[str]:
    """Space names shown first in tables and figures, in registry order."""
    return [s.name for _, s in all_spaces() if s.main]


def generalization_spaces() -> list[str]:
    """Spaces whose entries are normalised transfer, in order of preference."""
    ranked = [(s.generalization, i, s.name) for i, (_, s) in enumerate(all_spaces()) if s.generalization]
    return [name for _, _, name in sorted(ranked)]


def is_signed_space(name: str, default: bool = True) -> bool:
    s = space_spec(name)
    return s.signed if s is not None else default


def job_kinds() -> list[str]:
    """The run job kinds of the probes, in registry order (gradients and overlap share one)."""
    out: list[str] = []
    for p in probes():
        if p.job_kind not in out:
            out.append(p.job_kind)
    return out


def probes_of_job(job: str) -> list[ProbeSpec]:
    return [p for p in probes() if p.job_kind == job]


def reads_of_job(job: str) -> tuple[str, ...]:
    """The settings a job of kind ``job`` depends on: the union of its probes' ``reads``."""
    out: list[str] = []
    for p in probes_of_job(job):
        out += [r for r in p.reads if r not in out]
    return tuple(out)


@dataclass
class RunContext:
    """What a runner gets besides the model, suite and settings (filled by the CLI or a run job)."""

    out: Any = None
    progress: bool = True
    rows: tuple[str, ...] | None = None
    options: dict = field(default_factory=dict)
