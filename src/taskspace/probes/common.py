"""Helpers every probe kind may use: the sentences of a task with their signs, the scoring convention and
provenance recorded with a space, cosines, row normalisation, and the checks of a probe's tasks and rows.

Probe modules (:mod:`.kinds`) import from here, from the gradient machinery (:mod:`.gradient`) and from the
fine-tuning machinery (:mod:`.finetune`), never from each other.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..provenance import timestamp, torch_threads, versions
from ..scoring import Convention, resolve_prefix

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loading import LoadedModel
    from ..suites.schema import Pair, Suite
    from .settings import ProbeSettings

#: the :attr:`~taskspace.probes.result.ProbeResult.extra` key of the tasks' mean good−bad residual-stream
#: differences ``{task: [layers, width]}`` on the train pairs (the probe that provides it: its
#: ``ProbeSpec.provides``): the directions of the steering, erasure and DAS probes
DIFFERENCES = "differences"


def sentence_coefficients(pairs: Sequence["Pair"]) -> dict[str, int]:
    """Unique sentences of a task with their coefficient in ``Σ_i (f(good_i) − f(bad_i))``; sentences
    whose coefficients sum to zero (identical pairs) drop out."""
    coef: dict[str, int] = {}
    for p in pairs:
        coef[p.good] = coef.get(p.good, 0) + 1
        coef[p.bad] = coef.get(p.bad, 0) - 1
    return {s: c for s, c in coef.items() if c != 0}


def convention_of(model: Any, tokenizer: Any, settings: "ProbeSettings") -> dict:
    """How sentences are encoded and scored (recorded in every output), as the scorer records it;
    ``settings``: anything with the ``reduction`` and ``prefix`` of :class:`ProbeSettings`."""
    token, token_id = resolve_prefix(tokenizer, settings.prefix)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return Convention(reduction=settings.reduction, prefix=settings.prefix, prefix_token=token,
                      prefix_token_id=token_id, dtype=dtype).to_dict()


def probe_provenance(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", probe: str,
                     convention: dict, **extra: Any) -> dict:
    """Provenance of a task space of the newer probes (the fields of ``similarity._provenance``):
    probe, model (``loaded.describe()``), revision, convention, settings, seed, suite, versions and torch's
    thread count (it can move a float's last bits)."""
    model = loaded.describe()
    out = {"probe": probe, "created": timestamp(), "model": model, "revision": model.get("revision"),
           "convention": convention, "settings": settings.to_dict(), "seed": settings.seed,
           "suite": suite.describe(), "versions": versions(), "torch_threads": torch_threads()}
    out.update(extra)
    return out


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """``C[a, b] = cos(v_a, v_b)`` for the rows of ``vectors`` (float64); a zero row gets NaN entries
    (and NaN on the diagonal), as the gradient probe does."""
    v = np.asarray(vectors, dtype=np.float64)
    return cosine_from_gram(v @ v.T)


def cosine_from_gram(gram: np.ndarray) -> np.ndarray:
    """Cosines from a Gram matrix ``G[a, b] = ⟨v_a, v_b⟩`` (entries clipped to [-1, 1]: rounding can step
    just past ±1); a zero row gets NaN entries and a NaN diagonal."""
    gram = np.asarray(gram, dtype=np.float64)
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = gram / np.outer(norms, norms)
    cos[~np.isfinite(cos)] = np.nan
    cos = np.clip(cos, -1.0, 1.0)
    np.fill_diagonal(cos, np.where(norms > 0, 1.0, np.nan))
    return cos


def check_tasks(splits: Mapping[str, "Suite"], tasks: Sequence[str], needed: Sequence[str]) -> None:
    """A task without pairs in a needed split is a one-line input error, not a NaN row."""
    for split in needed:
        counts = splits[split].counts()
        empty = [t for t in tasks if not counts.get(t)]
        if empty:
            raise InputError(f"task(s) {', '.join(empty[:5])} have no {split} pairs (pairs per task too few "
                             f"for --train-pairs/--dev-pairs/--eval-pairs)", field="tasks")


def probe_tasks(suite: "Suite", settings: Any, needed: Sequence[str],
                rows: Sequence[str] | None = None) -> tuple[dict[str, "Suite"], list[str], list[str]]:
    """The splits, the probed tasks (suite order, ``settings.tasks`` or all) and the source rows (``rows``
    or all tasks) of a probe whose rows and columns are tasks; a task without pairs in a ``needed`` split,
    or a row that is not a probed task, is a one-line input error."""
    splits = settings.splits(suite)
    tasks = suite.select(list(settings.tasks) if settings.tasks is not None else None).tasks
    if not tasks:
        raise InputError("the suite has no tasks", field="tasks")
    check_tasks(splits, tasks, needed)
    rows = list(rows) if rows else list(tasks)
    unknown = [r for r in rows if r not in tasks]
    if unknown:
        raise InputError(f"row task(s) {', '.join(unknown[:5])} are not in the suite", field="tasks")
    return splits, tasks, rows


def normalize_rows(raw: np.ndarray) -> np.ndarray:
    """``X[a, b] / |X[a, a]|``; a zero or NaN diagonal gives a NaN row."""
    d = np.abs(np.diag(raw))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = raw / d[:, None]
    out[~np.isfinite(out)] = np.nan
    return out


def provided(key: str, loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings") -> Any:
    """``extra[key]`` of the probe that provides ``key`` (:func:`~taskspace.probes.registry.provider`), by
    running its registered runner on this checkpoint (no split-half pass): its number, asked from the
    registry, never imported."""
    from .registry import provider
    from .spec import RunContext

    spec = provider(key)
    res = spec.load_runner()(loaded, suite, settings, RunContext(progress=False, spec=spec), (spec.name,))
    return res.extra[key]
