"""The gradient probes' split-half pass made in the same pass as the full one (``ProbeSpec.joint_halves``;
docs/design.md, "The probe interface").

ḡ_t is linear in t's training pairs (differentials.py: one coefficient per unique sentence, loss
``−Σ margin / n_pairs``). The halves t~1, t~2 of the split-half pass split t's training pairs into two
disjoint sets of n₁ and n₂ pairs whose union is t's training split, so

    ḡ_t = (n₁ · ḡ_{t~1} + n₂ · ḡ_{t~2}) / (n₁ + n₂)

exactly in real arithmetic. :func:`run_gradient_probes_with_halves` therefore runs the backward passes once,
on the 2T halves (each task's two halves one after the other), and derives each ḡ_t from its halves as they
come: the full spaces are built from the combined ḡ_t, the halves' spaces from the halves' ḡ — half the
backward passes of a full pass followed by a pass on the halves.

What it gives, measured against the two passes (tests/test_split_half_one_pass.py):

- the halves' spaces are those of a pass on the halves alone, bit for bit (the same backward passes, the
  same sketches and masks, in the same order);
- the full spaces equal a direct pass's up to float rounding — the sums run in another order (backward
  batches of other sentences, then the weighted sum): entries of ḡ_t differ by up to ~1e-6 of its largest
  entry, cosines by ~1e-7 — and so a mask can differ only where two ``|ḡ|`` values all but tie at its cut
  (gutenberg-gpt2-5m, 10 BLiMP tasks × 30 pairs: one swap in one task's 264,474-parameter mask, overlap
  entries off by < 3e-6). Every full space records ``gradient_pass: "from halves"`` in its provenance (a
  direct pass records ``"direct"``).

Memory stays as the two passes' was: the exact mode keeps the full tasks' and the halves' ḡ (in memory or
in ``store`` and ``store/halves``); the sketch mode keeps one model-sized sum beside ``.grad`` and processes
a task's two halves and the task itself before the next task starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from ...suites.splits import half_name
from ..common import convention_of
from ..settings import ProbeSettings
from .differentials import TaskGradients, _unwrap, empty_task_gradients, gradient_provenance, iter_task_gradients
from .similarity import (
    COSINE,
    JACCARD,
    GradientProbeResult,
    SketchTasks,
    exact_probes,
    gradient_probes,
    resolve_gradient_mode,
    sketch_setup,
    zero_stand_ins,
)

if TYPE_CHECKING:  # pragma: no cover
    from ...models.loading import LoadedModel
    from ...suites.schema import Suite

#: what the full spaces' provenance records about how their ḡ_t was computed
FROM_HALVES = "from halves"

#: ``{task: [(half, n_pairs), …]}``: each full task's halves that have training pairs, in order
HalfPlan = dict[str, list[tuple[str, int]]]


def halves_plan(full_train: "Suite", half_train: "Suite") -> HalfPlan | None:
    """Each task of ``full_train`` with its halves in ``half_train`` and their numbers of pairs, in
    ``full_train``'s order; None unless the halves' pairs are exactly the tasks' pairs, split (then ḡ_t cannot
    be derived from its halves, and the caller makes two passes)."""
    full_by, half_by = full_train.by_task(), half_train.by_task()
    plan: HalfPlan = {}
    for task, pairs in full_by.items():
        parts = [(h, half_by[h]) for h in (half_name(task, 1), half_name(task, 2)) if h in half_by]
        ids = sorted(p.pair_id for _, ps in parts for p in ps)
        if not parts or ids != sorted(p.pair_id for p in pairs) or len(set(ids)) != len(ids):
            return None
        plan[task] = [(h, len(ps)) for h, ps in parts]
    if sum(len(parts) for parts in plan.values()) != len(half_by):
        return None
    return plan


def add_half(out: torch.Tensor | None, g: torch.Tensor, n: int, first: bool) -> torch.Tensor:
    """One term of ``Σ_k n_k · ḡ_{t~k}``: ``n · g`` into ``out`` (a new tensor when None) for the first half, else
    added to ``out``. The same operations in exact and sketch mode, so both combine to the same numbers; a
    half-precision gradient is widened to float32 first (the sum is never kept in bfloat16)."""
    g = g if g.dtype in (torch.float32, torch.float64) else g.float()
    if not first:
        assert out is not None
        return out.add_(g, alpha=float(n))
    return torch.mul(g, float(n)) if out is None else torch.mul(g, float(n), out=out)


class ExactTasks:
    """The exact mode's counterpart of :class:`~.similarity.SketchTasks`: keeps every task's ḡ in a
    :class:`TaskGradients` (in memory or in its store). ``keeps``: :meth:`take` holds on to the tensors it
    is given, so each task must get tensors of its own."""

    keeps = True

    def __init__(self, grads: TaskGradients, settings: ProbeSettings, *, cosine: bool) -> None:
        self.grads, self.settings, self.cosine = grads, settings, cosine

    @property
    def provenance(self) -> dict:
        return self.grads.provenance

    def take(self, task: str, grads: Mapping[str, torch.Tensor], shared: set[str]) -> None:
        """Keep ḡ of ``task``."""
        self.grads.put(task, grads)

    def result(self, jaccard: bool) -> GradientProbeResult:
        """The spaces and the distributedness table (:func:`~.similarity.exact_probes`); the store indexed."""
        if self.grads.store is not None:
            self.grads.save_index()
        return exact_probes(self.grads, self.settings, self.cosine, jaccard)


def _side(model: Any, tokenizer: Any, describe: dict | None, train: "Suite", settings: ProbeSettings,
          sk: Any, *, cosine: bool, store: Path | None, storage_dtype: str) -> "ExactTasks | SketchTasks":
    """Where one side's gradients go (the full tasks or the halves), in the mode a pass on that side alone
    would pick (``auto`` resolves per side, as the two passes did: the halves are twice the tasks)."""
    n_parameters = sum(p.numel() for p in model.parameters())
    if resolve_gradient_mode(settings.gradient_mode, n_parameters, len(train.tasks)) == "exact":
        return ExactTasks(empty_task_gradients(model, tokenizer, describe, train, settings, store=store,
                                               storage_dtype=storage_dtype), settings, cosine=cosine)
    shapes, modules, own = sketch_setup(model, settings)
    convention = convention_of(model, tokenizer, settings)
    prov = gradient_provenance(model, describe, train, convention, settings.batch_tokens)
    return SketchTasks(train, settings, sk if sk is not None else own, cosine=cosine, prov=prov,
                       convention=convention, modules=modules, shapes=shapes, store=store)


def _one_pass(model: Any, tokenizer: Any, plan: HalfPlan, half_train: "Suite", settings: ProbeSettings,
              full: "ExactTasks | SketchTasks", halves: "ExactTasks | SketchTasks", progress: bool) -> None:
    """The backward passes of every half, each task's halves in turn: a half's ḡ goes to ``halves`` after it
    is added into the task's sum (a sketch overwrites it), and after a task's last half the sum, divided by
    the task's pairs, goes to ``full`` as ḡ_t."""
    by_half = half_train.by_task()
    order = {h: by_half[h] for parts in plan.values() for h, _ in parts}
    where = {h: (task, k) for task, parts in plan.items() for k, (h, _) in enumerate(parts)}
    params = dict(model.named_parameters())
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    some = next(iter(params.values()), None)
    device = some.device if some is not None else torch.device("cpu")
    zeros: dict[str, torch.Tensor] = {}
    total: dict[str, torch.Tensor] = {}
    # a sketch is done with .grad before the next half starts, so it is reused in place (no model-sized
    # allocation per task); exact copies keep the tensors, so they are handed over, as task_gradients does
    for task, g in iter_task_gradients(model, tokenizer, order, settings, reuse=not halves.keeps,
                                       progress=progress):
        if halves.keeps:
            grad, shared = {n: (v if v is not None else torch.zeros_like(params[n])) for n, v in g.items()}, set()
        else:
            grad = zero_stand_ins(g, zeros, shapes, device)
            shared = set(zeros)
        base, k = where[task]
        parts = plan[base]
        for n, v in grad.items():
            total[n] = add_half(total.get(n), v, parts[k][1], first=k == 0)
        halves.take(task, grad, shared)
        if k == len(parts) - 1:
            pairs = float(sum(m for _, m in parts))
            for v in total.values():
                v.div_(pairs)
            full.take(base, total, set())
            if full.keeps:
                total = {}


def run_gradient_probes_with_halves(
    loaded: "LoadedModel",
    suite: "Suite",
    settings: ProbeSettings,
    halved: "Suite",
    half_settings: ProbeSettings,
    *,
    probes: Sequence[str] | None = None,
    store: str | Path | None = None,
    half_store: str | Path | None = None,
    storage_dtype: str = "float32",
    progress: bool = True,
) -> tuple[GradientProbeResult, GradientProbeResult] | None:
    """:func:`~.similarity.run_gradient_probes` on ``suite`` with ``settings`` and on the suite of halves
    ``halved`` with ``half_settings`` (``halves=True``), in one pass of backward passes over the halves:
    ``(full result, halves' result)``. ``store`` / ``half_store``: the folders of each side's ḡ_t (exact mode)
    or masks (sketch mode, ``<folder>/masks``), as each pass alone would use them.

    None when the halves' training pairs are not exactly the tasks' (not the split-half pass's halves of
    ``suite`` under ``settings``): the caller then runs the two passes."""
    asked = gradient_probes(probes)
    cosine, jaccard = COSINE in asked, JACCARD in asked
    full_train = settings.splits(suite)["train"]
    half_train = half_settings.splits(halved)["train"]
    plan = halves_plan(full_train, half_train)
    if plan is None:
        return None
    model, tokenizer, describe = _unwrap(loaded, None)
    full = _side(model, tokenizer, describe, full_train, settings, None, cosine=cosine,
                 store=Path(store) if store is not None else None, storage_dtype=storage_dtype)
    # the halves' sketch shares the full one's hash codes (same k and seed): hashed once, cached once
    sk = full.sk.sibling() if isinstance(full, SketchTasks) and full.sk is not None else None
    halves = _side(model, tokenizer, describe, half_train, half_settings, sk, cosine=cosine,
                   store=Path(half_store) if half_store is not None else None, storage_dtype=storage_dtype)
    full.provenance["gradient_pass"] = FROM_HALVES
    _one_pass(model, tokenizer, plan, half_train, half_settings, full, halves, progress)
    return full.result(jaccard), halves.result(jaccard)
