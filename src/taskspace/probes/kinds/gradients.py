"""The gradient and overlap probes (one pass of gradient differentials, :mod:`..gradient.similarity`): the
cosine of the tasks' ḡ_t overall and per module, the Jaccard overlap of their masks, and the table of how
each ḡ_t spreads over the model (``stats/distributedness.csv``).

With the split-half pass (``ctx.halves``: the spec's ``joint_halves``) one round of backward passes on the
halves serves both the halves' spaces and the full ones (:mod:`..gradient.halves`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..gradient.halves import run_gradient_probes_with_halves
from ..gradient.masks import write_masks
from ..gradient.similarity import COSINE, GradientProbeResult, gradient_probes, run_gradient_probes
from ..output import HALVES_DIR
from ..result import ProbeResult

if TYPE_CHECKING:  # pragma: no cover
    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..settings import ProbeSettings
    from ..spec import RunContext


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str]) -> ProbeResult:
    """``gradients`` and/or ``overlap`` (one pass of gradient differentials) and the distributedness
    table. ``extra`` holds the pass's :class:`~taskspace.probes.gradient.similarity.GradientProbeResult`
    under the name of the job.

    With ``ctx.halves`` the split-half pass is made in the same pass (``halves`` of the result): the
    gradients of the halves are computed once and each task's ḡ_t is their pair-weighted mean; the ḡ of
    the halves go to ``gradients_dir/halves`` (exact mode) beside the tasks' in ``gradients_dir``."""
    store = ctx.options["gradients_dir"]
    if ctx.halves is not None:
        both = run_gradient_probes_with_halves(
            loaded, suite, settings, ctx.halves.suite, ctx.halves.settings, probes=tuple(kinds), store=store,
            half_store=Path(store) / HALVES_DIR if store is not None else None,
            storage_dtype=ctx.options["storage_dtype"], progress=ctx.progress)
        if both is not None:
            out = _result(both[0], kinds, ctx)
            out.halves = _result(both[1], kinds, ctx.halves.ctx)
            return out
    res = run_gradient_probes(loaded, suite, settings, probes=tuple(kinds), store=store,
                              storage_dtype=ctx.options["storage_dtype"], progress=ctx.progress)
    return _result(res, kinds, ctx)


def _result(res: GradientProbeResult, kinds: Sequence[str], ctx: "RunContext") -> ProbeResult:
    """The :class:`ProbeResult` of one gradient pass: spaces (and per-module spaces), the distributedness
    table, the masks' writer with ``save_masks``."""
    asked = gradient_probes(kinds)
    spaces = dict(res.spaces)
    if COSINE in asked:
        parts = asked[COSINE].spaces[0].parts_folder
        spaces.update({f"{parts}/{m}": sp for m, sp in res.by_module.items()})
    first = next(iter(asked.values()))
    out = ProbeResult(tuple(kinds), spaces=spaces, provenance=res.provenance, extra={first.job_kind: res})
    if res.distributedness is not None:
        out.tables[first.file("distributedness")] = (res.distributedness, res.provenance)
    if ctx.options["save_masks"]:
        meta = {k: str(v) for k, v in res.masks.describe().items()}
        out.writers.append(lambda d: write_masks(d, res.masks, meta))
    return out
