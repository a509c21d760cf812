"""``taskspace probe KIND``: one command per registered probe, generated from the registry.

Each command's options are the model and data options every probe takes, then the
:class:`~taskspace.probes.settings.ProbeSettings` fields the probe reads (its ``ProbeSpec.reads``) with
their defaults and help taken from the dataclass, then the control and loading options, then the settings
it only uses for speed (``ProbeSpec.uses``) and its own options (``ProbeSpec.options``, each checked by
its spec). Every command runs the same code (:func:`run_probe`): cheap checks, load the model (and its
control), :func:`taskspace.probe`, save, print within- vs between-group means.
"""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from ..models.loading import load_model
from ..probes import registry
from ..probes.output import probe_dir, write_summary
from ..probes.run import prepare_options, probe
from ..probes.settings import ProbeSettings, parse_tasks
from ..suites import load_suite
from . import app
from .options import (
    AttnImplementation,
    Control,
    Device,
    DType,
    ModelOpt,
    ProbeOut,
    Revision,
    SuiteOpt,
    Tasks,
    Threads,
    TrustRemote,
)

# torch, the probes' machinery and rich are imported inside the commands: the command line starts without them

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..probes.spec import Option, ProbeSpec

probe_app = typer.Typer(
    name="probe",
    help="Probe how tasks interact inside a model (one command per probe kind).",
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")


def option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """One command-line option as a keyword-only parameter (no ``default``: required)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


HEAD = (option("model", ModelOpt), option("suite", SuiteOpt), option("out", ProbeOut),
        option("revision", Revision, None), option("tasks", Tasks, None))
TAIL = (option("control", Control, None), option("device", Device, "auto"), option("dtype", DType, "float32"),
        option("attn_implementation", AttnImplementation, None), option("threads", Threads, None),
        option("trust_remote_code", TrustRemote, False))


def setting_option(f: dataclasses.Field) -> inspect.Parameter:
    """The option of one ProbeSettings field: ``--train-pairs`` etc., default and help from the dataclass."""
    tp = typing.get_type_hints(ProbeSettings)[f.name]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = Optional[next(a for a in typing.get_args(tp) if a is not type(None))]
    kwargs: dict[str, Any] = {"help": f.metadata.get("help") or f.name.replace("_", " ").capitalize() + "."}
    if f.name == "workers":
        kwargs["min"] = 1            # a usage error before anything is loaded
    return option(f.name, Annotated[tp, typer.Option("--" + f.name.replace("_", "-"), **kwargs)], f.default)


def probe_option(opt: "Option") -> inspect.Parameter:
    """The option of one of a probe's own :class:`~taskspace.probes.spec.Option` s (checked again by the
    spec when the command runs, so the command line, plans and Python share one check)."""
    tp: Any = Path if opt.kind in ("sentences", "folder") else opt.type
    if opt.default is None:
        tp = Optional[tp]
    kwargs: dict[str, Any] = {"help": opt.help + (f" Choices: {', '.join(map(str, opt.choices))}."
                                                  if opt.choices else "")}
    if opt.min is not None:
        kwargs["min"] = opt.min
    return option(opt.name, Annotated[tp, typer.Option(opt.flag, **kwargs)], opt.default)


def command_parameters(spec: "ProbeSpec") -> list[inspect.Parameter]:
    """The options of ``taskspace probe <spec.name>``, in ``--help`` order: model and data, the settings it
    reads, control and loading, the settings it uses (speed only), its own options."""
    fields = {f.name: f for f in dataclasses.fields(ProbeSettings)}
    return [*HEAD, *(setting_option(fields[n]) for n in spec.reads), *TAIL,
            *(setting_option(fields[n]) for n in spec.uses), *(probe_option(o) for o in spec.options)]


def build_settings(spec: "ProbeSpec", options: dict[str, Any]) -> ProbeSettings:
    """ProbeSettings from a command's options (fields the probe does not read keep their defaults)."""
    fields = {f.name for f in dataclasses.fields(ProbeSettings)}
    kwargs = {k: v for k, v in options.items() if k in fields and k != "tasks"}
    return ProbeSettings(tasks=parse_tasks(options.get("tasks")), **kwargs)


def load_with_control(model: str, revision: str | None, control: str | None, *, device: str, dtype: str,
                      trust_remote_code: bool = False, attn_implementation: str | None = None,
                      threads: int | None = None):
    """The model to probe and, with ``control``, its control (``first`` / ``init``); the control's
    revision is resolved before anything heavy is loaded, so a bad ``--control`` fails at once."""
    from ..probes.controls import control_revision

    ctl_rev = control_revision(model, revision, control) if control else None
    kw = {"device": device, "dtype": dtype, "trust_remote_code": trust_remote_code,
          "attn_implementation": attn_implementation}
    lm = load_model(model, revision, threads=threads, **kw)
    lm_ctl = load_model(model, ctl_rev, **kw) if ctl_rev is not None else None
    return lm, lm_ctl


def print_summary(console: "Console", title: str, summary: dict) -> None:
    """Within-group vs between-group mean: trained, control and their difference (a rich table)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("", "within", "between", "within − between"):
        table.add_column(col, justify="right" if col else "left")
    rows = [("trained", summary["trained"]), ("control", summary.get("control")),
            ("trained − control", summary.get("trained_minus_control"))]
    for label, wb in rows:
        if wb is not None:
            table.add_row(label, f"{wb['within']:.4f}", f"{wb['between']:.4f}", f"{wb['difference']:.4f}")
    console.print(table)


def run_probe(name: str, options: dict[str, Any]) -> None:
    """What every ``taskspace probe KIND`` does."""
    from ..probes.controls import control_revision, summarize_with_control

    spec = registry.get(name)
    # cheap checks first (no torch yet), so bad input fails in a moment and writes nothing
    settings = build_settings(spec, options)
    model, revision, control = options["model"], options["revision"], options["control"]
    if control:
        control_revision(model, revision, control)
    raw = {o.name: options[o.name] for o in spec.options}
    prepare_options(spec, raw, model=model, revision=revision)          # checks, reads no weights
    suite = load_suite(options["suite"])
    selected = suite.select(list(settings.tasks) if settings.tasks else None)     # unknown tasks fail here

    import torch
    from rich.console import Console

    from ..models.context import check_fits

    out = Path(options["out"])
    load_kw = {"device": options["device"], "dtype": options["dtype"],
               "trust_remote_code": options["trust_remote_code"],
               "attn_implementation": options["attn_implementation"]}
    lm, lm_ctl = load_with_control(model, revision, control, threads=options["threads"], **load_kw)
    check_fits(lm, selected.pairs, prefix=settings.prefix)
    extra = prepare_options(spec, raw, model=model, revision=revision,
                            load=lambda rev: load_model(model, rev, **load_kw))
    torch.manual_seed(settings.seed)
    # probes that write per-task files as they go (FTGD: `stages`) resume from `out`, and probes that reuse
    # other probes' results (`needs`) read them there; the others compute the
    # trained and the control result before anything is written: no partial outputs
    work = out if spec.stages or spec.needs else None
    res = probe(lm, suite, name, settings, out=work, **extra)
    res_ctl = None
    if lm_ctl is not None:
        # a working folder of the control's own (e.g. --gradients-dir) sits in its control/ sub-folder
        ctl_extra = {k: (probe_dir(v, True) if spec.option(k).kind == "folder" and v is not None else v)
                     for k, v in extra.items()}
        res_ctl = probe(lm_ctl, suite, name, settings, out=probe_dir(out, True) if work else None, **ctl_extra)
    paths = res.save(out)
    if res_ctl is not None:
        paths += res_ctl.save(out, control=True)
    console = Console()
    ctl_txt = f"; control {lm_ctl.revision}" if lm_ctl is not None else ""
    for space_name in spec.main_spaces():
        if space_name not in res.spaces:
            continue
        ctl_space = res_ctl.spaces.get(space_name) if res_ctl is not None else None
        summary = summarize_with_control(res.spaces[space_name], ctl_space)
        summary.update({"probe": name, "space": space_name, "model": lm.describe(),
                        "control_model": lm_ctl.describe() if lm_ctl is not None else None,
                        "control_kind": control, "settings": settings.to_dict(),
                        "options": spec.key_options(raw), "notes": res.extra.get("notes", [])})
        paths.append(write_summary(out, spec.summary_name(space_name), summary))
        sp = res.spaces[space_name]
        title = (f"{space_name}: {lm.name}" + (f" @ {lm.revision}" if lm.revision else "") +
                 f" — {sp.n_tasks} tasks, {len(set(sp.groups))} groups{ctl_txt}")
        print_summary(console, title, summary)
    for line in res.extra.get("notes", []):
        console.print(line)
    console.print(f"wrote {len(paths)} files under {out}")


def _make_command(spec: "ProbeSpec") -> Callable[..., None]:
    def command(**options: Any) -> None:
        run_probe(spec.name, options)

    command.__name__ = spec.name.replace("-", "_")
    spaces = ", ".join(f"spaces/{s.name}.csv" for s in spec.spaces)
    command.__doc__ = (f"{spec.help}\n\nWrites {spaces} (+ .json provenance); with --control the same under "
                       f"DIR/control/. Cost: {spec.cost or 'see docs/probes.md'}.")
    command.__signature__ = inspect.Signature(command_parameters(spec), return_annotation=None)  # type: ignore[attr-defined]
    return command


def register_commands() -> None:
    """One ``taskspace probe NAME`` per registered probe (call again after registering a new one)."""
    have = {c.name for c in probe_app.registered_commands}
    for spec in registry.probes():
        if spec.name not in have:
            probe_app.command(spec.name)(_make_command(spec))


register_commands()
