"""The probe registry: one :class:`~taskspace.probes.spec.ProbeSpec` per probe kind, the only place a probe is
described; the CLI, plans, job keys, Ray workers, compare, findings and report read it.

Where entries come from, in this order, once per process:

1. the built-in probes (:data:`taskspace.probes.builtin.BUILTIN`, plain data);
2. every installed package's entry points in the group ``taskspace.probes`` (``[project.entry-points.
   "taskspace.probes"] myprobe = "mypkg.probe:SPEC"``): each names a ``ProbeSpec``, a sequence of them, or a
   function returning either. A local run and each Ray worker load the same entry points, so a probe
   shipped by another package runs everywhere the package is installed. A broken entry point is
   skipped with a warning naming it (it must not take the command line down);
3. :func:`register` calls from your own code (in this process only: ship a package with an entry point
   to reach workers and other processes).

Adding a built-in probe is its module under :mod:`taskspace.probes.kinds` (a function ``run(loaded, suite,
settings, ctx, kinds) -> ProbeResult``), its entry in :mod:`taskspace.probes.builtin`, its test and its
docs section — nothing else changes.
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import fields
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator, Sequence

from ..errors import InputError
from .builtin import BUILTIN
from .settings import SCORING_SETTINGS, ProbeSettings
from .spec import DEMO_PLACES, Option, ProbeSpec, RunContext, SpaceSpec

__all__ = ["ENTRY_POINT_GROUP", "SCORE", "Option", "ProbeSpec", "RunContext", "SpaceSpec", "by_method", "get",
           "names", "probes", "provider", "register", "runner_probes", "unregister"]

#: the entry-point group other packages register probes under
ENTRY_POINT_GROUP = "taskspace.probes"

#: the job that scores every pair of a checkpoint (``scores/``; it writes no task space, so it is no
#: probe): a plan names it among its ``probes``, and a run keys, runs and estimates it like a probe's job
SCORE = "score"

_REGISTRY: dict[str, ProbeSpec] = {}
_SETTINGS = frozenset(f.name for f in fields(ProbeSettings))


def _check(spec: ProbeSpec, replace: bool) -> None:
    """What makes a spec usable, checked before it is added (nothing is added if it fails)."""
    if not isinstance(spec, ProbeSpec):
        raise TypeError(f"not a ProbeSpec: {spec!r}")
    bad = [r for r in (*spec.reads, *spec.uses) if r not in _SETTINGS]
    if bad:
        raise ValueError(f"probe {spec.name!r} reads unknown settings: {', '.join(bad)}")
    clash_opt = [o.name for o in spec.options if o.name in _SETTINGS]
    if clash_opt:
        raise ValueError(f"probe {spec.name!r}: option(s) {', '.join(clash_opt)} are ProbeSettings fields; "
                         "list them in reads or uses")
    if spec.demo not in DEMO_PLACES:
        raise ValueError(f"probe {spec.name!r}: demo must be one of {DEMO_PLACES}, got {spec.demo!r}")
    if spec.demo_options:
        try:
            spec.check_options(dict(spec.demo_options), where="demo_options.")
        except InputError as e:
            raise ValueError(f"probe {spec.name!r}: demo_options: {e.message}") from None
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"probe {spec.name!r} is already registered")
    others = {s.name: p.name for p in _REGISTRY.values() if p.name != spec.name for s in p.spaces}
    clash = [s.name for s in spec.spaces if s.name in others]
    if clash:
        raise ValueError(f"probe {spec.name!r}: space(s) {', '.join(clash)} already written by "
                         f"{others[clash[0]]!r}")
    for need in spec.needs:
        if need not in _REGISTRY and need != spec.name:
            raise ValueError(f"probe {spec.name!r} needs unknown probe {need!r}")


def register(spec: ProbeSpec, *, replace: bool = False) -> ProbeSpec:
    """Add ``spec`` to the registry of this process (``replace=True`` to redefine a kind). Its ``reads``
    must be ProbeSettings fields and its space names must not clash with another probe's."""
    _ensure_loaded()
    _check(spec, replace)
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a probe kind (for tests that register a throwaway probe)."""
    _REGISTRY.pop(name, None)


_LOADED = False


def _ensure_loaded() -> None:
    """The built-in entries, then the installed packages' entry points, once per process. The built-ins
    are data imported at the top of this module (no import at lookup time that could fail half-way)."""
    global _LOADED
    if _LOADED:
        return
    for spec in BUILTIN:
        _check(spec, False)
        _REGISTRY[spec.name] = spec
    _LOADED = True
    for ep in _entry_points():
        try:
            obj = ep.load()
            obj = obj() if callable(obj) and not isinstance(obj, ProbeSpec) else obj
            for spec in (obj if isinstance(obj, (list, tuple)) else [obj]):
                _check(spec, False)
                _REGISTRY[spec.name] = spec
        except Exception as e:  # a broken plug-in is reported, never fatal
            warnings.warn(f"taskspace: probe entry point {ep.name!r} ({ep.value}) skipped: "
                          f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)


def _entry_points() -> list[Any]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def probes() -> list[ProbeSpec]:
    """Every registered probe, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY.values())


def names() -> list[str]:
    return [p.name for p in probes()]


def default_probes() -> list[str]:
    """What a plan that names no ``probes`` runs (besides ``score``): the probes marked ``default``."""
    return [p.name for p in probes() if p.default]


def get(name: str) -> ProbeSpec:
    """The spec of probe ``name``; an unknown name is an InputError with a did-you-mean."""
    _ensure_loaded()
    spec = _REGISTRY.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown probe {name!r}{hint}; choose from {', '.join(_REGISTRY)}", field="probe")
    return spec


def by_method(method: str) -> ProbeSpec:
    """The first probe (in registry order: a built-in before a variant registered later, e.g. with
    ``dataclasses.replace``) whose ``method`` is ``method``: how a runner serving several probes finds each
    by what it computes (:attr:`ProbeSpec.method`)."""
    for p in probes():
        if p.method == method:
            return p
    raise KeyError(f"no registered probe has method {method!r}")


def provider(key: str) -> ProbeSpec:
    """The first probe (in registry order) whose runner provides ``key`` in its result's ``extra``
    (:attr:`ProbeSpec.provides`)."""
    for p in probes():
        if key in p.provides:
            return p
    raise KeyError(f"no registered probe provides {key!r}")


def runner_probes(run: Callable[..., Any], kinds: Sequence[str] | None = None,
                  ctx: RunContext | None = None) -> list[ProbeSpec]:
    """The registry entries one call of the runner ``run`` computes: those of ``kinds``; without kinds, the
    one of ``ctx.spec``; without either (a direct call ``run(loaded, suite, settings, ctx)``), the first
    probe registered with ``run`` as its runner. A runner reads its names, spaces and files from them."""
    if kinds is not None:
        return [get(k) for k in kinds]
    if ctx is not None and ctx.spec is not None:
        return [ctx.spec]
    ref = f"{run.__module__}:{run.__name__}"
    for p in probes():
        if p.runner == ref:
            return [p]
    raise KeyError(f"no registered probe has the runner {ref!r}")


def all_spaces() -> Iterator[tuple[ProbeSpec, SpaceSpec]]:
    for p in probes():
        for s in p.spaces:
            yield p, s


def space_spec(name: str) -> SpaceSpec | None:
    """The spec of a space file stem (``transfer_normalized``, ``gradients_by_module/block0.attn`` → the
    ``gradients`` spec), or None for a space no registered probe writes."""
    base = name.split("/", 1)[0]
    for _, s in all_spaces():
        if s.name == base or base == s.parts_folder:
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


def space_reading(name: str) -> tuple[float, bool]:
    """``(sign, absolute)`` of a space file stem as its :class:`SpaceSpec` declares it: ``sign`` = +1 where
    related tasks are higher, −1 where lower; ``absolute``: the declared reading is ``|S|``. A space no
    registered probe writes reads as +1, signed."""
    s = space_spec(name)
    if s is None:
        return 1.0, False
    return s.sign, s.reading == "absolute"


def plan_names() -> tuple[str, ...]:
    """What a plan's ``probes`` may name: the scoring job :data:`SCORE`, then every registered probe."""
    return (SCORE, *names())


def job_kinds(score: bool = False) -> list[str]:
    """The run job kinds of the probes, in registry order (gradients and overlap share one); with
    ``score``, the scoring job :data:`SCORE` first."""
    out: list[str] = [SCORE] if score else []
    for p in probes():
        if p.job_kind not in out:
            out.append(p.job_kind)
    return out


def job_of(name: str) -> str:
    """The job kind that computes ``name`` (:data:`SCORE` or a probe)."""
    return SCORE if name == SCORE else get(name).job_kind


def probes_of_job(job: str) -> list[ProbeSpec]:
    return [p for p in probes() if p.job_kind == job]


def reads_of_job(job: str) -> tuple[str, ...]:
    """The settings a job of kind ``job`` depends on: the union of its probes' ``reads`` (the scoring
    settings for :data:`SCORE`)."""
    if job == SCORE:
        return SCORING_SETTINGS
    out: list[str] = []
    for p in probes_of_job(job):
        out += [r for r in p.reads if r not in out]
    return tuple(out)
