"""The gradient and overlap probes (one pass of gradient differentials, :mod:`..gradient.similarity`): the
cosine of the tasks' ḡ_t overall and per module, the Jaccard overlap of their masks, and the table of how
each ḡ_t spreads over the model (``stats/distributedness.csv``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..gradient.masks import write_masks
from ..gradient.similarity import COSINE, gradient_probes, run_gradient_probes
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
    under the name of the job."""
    asked = gradient_probes(kinds)
    res = run_gradient_probes(loaded, suite, settings, probes=tuple(kinds),
                              store=ctx.options["gradients_dir"],
                              storage_dtype=ctx.options["storage_dtype"], progress=ctx.progress)
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
