"""``taskspace probe KIND``: one command per registered probe, generated from the registry.

Each command's options are the model and data options every probe takes, then the
:class:`~taskspace.probes.settings.ProbeSettings` fields the probe reads (its ``ProbeSpec.reads``) with
their defaults taken from the dataclass, then the probe's own options (``ProbeSpec.options``), then the
control and loading options. Every command runs the same code (:func:`run_probe`): cheap checks, load the
model (and its control), :func:`taskspace.probe`, save, print within- vs between-group means.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from . import app
from .options import (AttnImplementation, Control, Device, DType, GradientsDir, Heldout, ModelOpt, ProbeOut,
                      Revision, SaveMasks, StorageDType, SuiteOpt, Tasks, Threads, TrustRemote)

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..probes.registry import ProbeSpec

probe_app = typer.Typer(
    name="probe",
    help="Probe how tasks interact inside a model (one command per probe kind).",
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")

#: help of the ProbeSettings fields (a field's own ``metadata["help"]`` wins)
SETTING_HELP = {
    "train_pairs": "Training pairs per task (gradient differentials, FTGD).",
    "dev_pairs": "Dev pairs per task (FTGD early stopping).",
    "eval_pairs": "Held-out pairs per task (transfer, evaluation).",
    "mask_fraction": "Mask = top fraction of |ḡ_t| over all parameters.",
    "mask_threshold": "Mask = parameters with |ḡ_t| ≥ τ (the paper's τ = 1e-3), instead of a fraction.",
    "mask_kind": "gradient, or random (the random-mask control, same size).",
    "objective": "FTGD objective: difference (the paper's) or logistic.",
    "steps": "Fine-tuning steps per task (cap).",
    "lr": "Adam learning rate.",
    "batch_pairs": "Training pairs per fine-tuning step.",
    "patience": "Dev evaluations without improvement before stopping.",
    "eval_every": "Steps between dev evaluations (early stopping).",
    "bootstrap": "Bootstrap resamples for the 95% CIs (0: none).",
    "reduction": "sum or mean of token log-probs.",
    "prefix": "bos: score given the BOS (else EOS) token; none: no prefix.",
    "batch_tokens": "Padded tokens per scoring batch.",
    "seed": "Random seed.",
    "workers": "Processes that fine-tune and evaluate tasks side by side (CPU: each gets its share of the "
               "threads); changes speed, never results.",
}
#: the probes' own options that are not settings: (annotation, default)
EXTRA_OPTIONS: dict[str, tuple[Any, Any]] = {
    "save_masks": (SaveMasks, False),
    "gradients_dir": (GradientsDir, None),
    "storage_dtype": (StorageDType, "float32"),
    "heldout": (Heldout, None),
    "card_tokens": (Annotated[int, typer.Option("--card-tokens", min=1,
                                                help="Tokens per direction on each task card.")], 15),
    "reference": (Annotated[Optional[str], typer.Option(
        "--reference", help="Set ablated entries to this revision's values (e.g. step0 or init) instead of "
                            "zero.")], None),
}


def option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """One command-line option as a keyword-only parameter (no ``default``: required)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


HEAD = (option("model", ModelOpt), option("suite", SuiteOpt), option("out", ProbeOut),
        option("revision", Revision, None), option("tasks", Tasks, None))
TAIL = (option("control", Control, None), option("device", Device, "auto"), option("dtype", DType, "float32"),
        option("attn_implementation", AttnImplementation, None), option("threads", Threads, None),
        option("trust_remote_code", TrustRemote, False))


def setting_option(f: dataclasses.Field) -> inspect.Parameter:
    """The option of one ProbeSettings field: ``--train-pairs`` etc., default from the dataclass."""
    hints = typing.get_type_hints(_settings_class())
    tp = hints[f.name]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = Optional[args[0]]
    help_text = f.metadata.get("help") or SETTING_HELP.get(f.name, f.name.replace("_", " ").capitalize() + ".")
    flag = "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": help_text}
    if f.name == "workers":
        kwargs["min"] = 1            # a usage error before anything is loaded
    return option(f.name, Annotated[tp, typer.Option(flag, **kwargs)], f.default)


def _settings_class():
    from ..probes.settings import ProbeSettings

    return ProbeSettings


def command_parameters(spec: "ProbeSpec") -> list[inspect.Parameter]:
    """The options of ``taskspace probe <spec.name>``, in ``--help`` order."""
    fields = {f.name: f for f in dataclasses.fields(_settings_class())}
    own = [setting_option(fields[n]) for n in spec.reads]
    extra = []
    for n in spec.options:
        if n in fields:
            extra.append(setting_option(fields[n]))
        else:
            annotation, default = EXTRA_OPTIONS[n]
            extra.append(option(n, annotation, default))
    return [*HEAD, *own, *TAIL, *extra]


def build_settings(spec: "ProbeSpec", options: dict[str, Any]) -> Any:
    """ProbeSettings from a command's options (fields the probe does not read keep their defaults)."""
    from ..probes.settings import parse_tasks

    fields = {f.name for f in dataclasses.fields(_settings_class())}
    kwargs = {k: v for k, v in options.items() if k in fields and k != "tasks"}
    return _settings_class()(tasks=parse_tasks(options.get("tasks")), **kwargs)


def load_with_control(model: str, revision: str | None, control: str | None, *, device: str, dtype: str,
                      trust_remote_code: bool = False, attn_implementation: str | None = None,
                      threads: int | None = None):
    """The model to probe and, with ``control``, its control (``first`` / ``init``); the control's
    revision is resolved before anything heavy is loaded, so a bad ``--control`` fails at once."""
    from ..models.loading import load_model
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


def _read_heldout(path: Path | None) -> list[str] | None:
    from ..errors import InputError

    if path is None:
        return None
    if not path.is_file():
        raise InputError("file not found", file=path)
    sentences = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    if not sentences:
        raise InputError("no sentences in the held-out text", file=path)
    return sentences


def run_probe(name: str, options: dict[str, Any]) -> None:
    """What every ``taskspace probe KIND`` does."""
    from ..probes import registry
    from ..probes.controls import control_revision, summarize_with_control
    from ..probes.output import probe_dir, write_summary
    from ..suites import load_suite

    spec = registry.get(name)
    # cheap checks first (no torch yet), so bad input fails in a moment and writes nothing
    settings = build_settings(spec, options)
    model, revision, control = options["model"], options["revision"], options["control"]
    if control:
        control_revision(model, revision, control)
    extra = {n: options[n] for n in spec.options if n in EXTRA_OPTIONS}
    if "heldout" in extra:
        extra["heldout"] = _read_heldout(extra["heldout"])
    if extra.get("reference") is not None:
        from ..probes.controls import control_revision

        ref = extra["reference"]
        # a control word names the control's revision; anything else is a revision of the same model
        extra["reference"] = control_revision(model, revision, ref) if ref in ("first", "init") else ref
    suite = load_suite(options["suite"])
    selected = suite.select(list(settings.tasks) if settings.tasks else None)     # unknown tasks fail here

    import torch
    from rich.console import Console

    from ..probes.run import probe

    out = Path(options["out"])
    lm, lm_ctl = load_with_control(model, revision, control, device=options["device"], dtype=options["dtype"],
                                   trust_remote_code=options["trust_remote_code"],
                                   attn_implementation=options["attn_implementation"], threads=options["threads"])
    from ..models.context import check_fits

    check_fits(lm, selected.pairs, prefix=settings.prefix)
    if extra.get("reference") is not None:
        from ..models.loading import load_model

        extra["reference"] = load_model(model, extra["reference"], device=options["device"],
                                        dtype=options["dtype"], trust_remote_code=options["trust_remote_code"],
                                        attn_implementation=options["attn_implementation"])
    torch.manual_seed(settings.seed)
    # probes that write per-task files as they go (FTGD: `stages`) resume from `out`, and probes that reuse
    # other probes' results (`needs`) read them there; the others compute the
    # trained and the control result before anything is written: no partial outputs
    work = out if spec.stages or spec.needs else None
    res = probe(lm, suite, name, settings, out=work, **extra)
    res_ctl = None
    if lm_ctl is not None:
        ctl_extra = dict(extra)
        if extra.get("gradients_dir") is not None:
            ctl_extra["gradients_dir"] = Path(extra["gradients_dir"]) / "control"
        res_ctl = probe(lm_ctl, suite, name, settings, out=probe_dir(out, True) if work else None, **ctl_extra)
    paths = res.save(out)
    if res_ctl is not None:
        paths += res_ctl.save(out, control=True)
    console = Console()
    ctl_txt = f"; control {lm_ctl.revision}" if lm_ctl is not None else ""
    shown = [s.name for s in spec.spaces if s.main] or [spec.spaces[0].name]
    for space_name in shown:
        if space_name not in res.spaces:
            continue
        ctl_space = res_ctl.spaces.get(space_name) if res_ctl is not None else None
        summary = summarize_with_control(res.spaces[space_name], ctl_space)
        summary.update({"probe": name, "space": space_name, "model": lm.describe(),
                        "control_model": lm_ctl.describe() if lm_ctl is not None else None,
                        "control_kind": control, "settings": settings.to_dict(),
                        "notes": res.extra.get("notes", [])})
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
    from ..probes import registry

    have = {c.name for c in probe_app.registered_commands}
    for spec in registry.probes():
        if spec.name not in have:
            probe_app.command(spec.name)(_make_command(spec))


register_commands()
