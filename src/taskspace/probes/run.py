"""``taskspace.probe``: run any registered probe on one model checkpoint — the one public call that the
command line and the run system go through as well."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .registry import RunContext, get

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
    source tasks (probes that split into one job per source task). ``options``: the probe's extra
    options (``heldout`` sentences, ``save_masks``, ``gradients_dir``, ``storage_dtype``). Nothing is
    written to ``out`` except such working files; call ``result.save(out)`` for the spaces.

    >>> res = taskspace.probe(lm, suite, "gradients", ProbeSettings(train_pairs=50))
    >>> res.spaces["gradients"].within_between()

    ``lm`` may also be a ``(model, tokenizer)`` pair you already loaded (``LoadedModel.from_hf``).
    """
    from ..models.loading import as_loaded
    from .settings import ProbeSettings

    lm = as_loaded(lm)

    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    specs = [get(k) for k in kinds]
    runners = {s.runner for s in specs}
    if len(runners) != 1 or len({s.job_kind for s in specs}) != 1:
        raise ValueError(f"probes {', '.join(kinds)} do not share one runner; run them one at a time")
    unknown = [k for k in options if all(k not in s.options for s in specs)]
    if unknown:
        raise TypeError(f"unknown option(s) for {', '.join(kinds)}: {', '.join(unknown)}")
    settings = settings if settings is not None else ProbeSettings()
    if rows is not None and not specs[0].per_task:
        raise ValueError(f"probe {kinds[0]!r} does not split into per-task rows")
    ctx = RunContext(out=Path(out) if out is not None else None, progress=progress,
                     rows=tuple(rows) if rows is not None else None, options=dict(options))
    return specs[0].load_runner()(lm, suite, settings, ctx, kinds)
