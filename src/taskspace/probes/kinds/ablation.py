"""Subnetwork ablation (``ablation``): the causal check of a task's mask.

For each row task a, the entries of its mask ``M_a`` are set to a reference value (zero by default, or
the values of a reference model such as the control checkpoint) and every task's eval pairs are scored::

    A[a, b]   = m_b(θ_0 with M_a ablated) − m_b(θ_0)          space ``ablation`` (main, signed)
    A_r[a, b] = the same with R_a, a seeded random mask of |M_a| entries     space ``ablation_random``

(m_b = b's mean margin over its eval pairs; each entry carries a 95% paired bootstrap interval over
b's eval pairs, as the transfer probe's). Why: if ``M_a`` is where the model keeps what task a needs,
removing it hurts a more than removing as many random parameters does (``A[a, a] < A_r[a, a]``), and
related tasks suffer with it. ``M_a`` keeps the top ``settings.ablation_fraction`` of ``|ḡ_a|`` (default
0.5%, or ``|ḡ_a| ≥ mask_threshold`` when that is set; always a gradient mask): top-5% masks — the
overlap probe's — remove too much to be specific, and 0.5% is the smallest fraction at which the
diagonal separated from the random control on both gutenberg-gpt2-5m and a toy model
(benchmarks/README.md, "Ablation vs the random-mask control").

The model is never copied: the masked entries are saved, overwritten, scored and copied back, and the
restored entries are checked bit for bit (``torch.equal``) after every row.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pandas as pd
import torch

from ...errors import InputError, TaskspaceError
from ...scoring import Scorer
from ...spaces import TaskSpace
from ..common import convention_of, probe_provenance, probe_tasks
from ..finetune.evaluation import transfer_matrices
from ..gradient.differentials import task_gradient_stream
from ..gradient.masks import mask_size, random_mask, task_seed
from ..gradient.similarity import compute_masks
from ..registry import runner_probes
from ..result import ProbeResult
from ..settings import LEVEL

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import RunContext


@contextmanager
def ablated(model: Any, mask: Mapping[str, "torch.Tensor"],
            reference: Mapping[str, "torch.Tensor"] | None = None) -> Iterator[int]:
    """``with ablated(model, mask) as n:`` — the ``n`` entries of ``mask`` hold zero (or ``reference``'s
    values) inside the block; on exit they get their original bits back (saved copies, never
    recomputed), and that is verified."""
    params = dict(model.named_parameters())
    missing = [n for n in mask if n not in params]
    if missing:
        raise InputError(f"mask names parameters the model does not have: {', '.join(missing[:3])}",
                         field="mask")
    saved: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    n = 0
    try:
        with torch.no_grad():
            for name, m in mask.items():
                p = params[name]
                idx = m.reshape(-1).nonzero().squeeze(1).to(p.device)
                if idx.numel() == 0:
                    continue
                flat = p.data.view(-1)
                orig = flat[idx]                          # advanced indexing copies
                saved.append((name, flat, idx, orig))
                if reference is None:
                    new = torch.zeros_like(orig)
                else:
                    new = reference[name].detach().reshape(-1)[idx.to(reference[name].device)].to(p.device, p.dtype)
                flat.index_copy_(0, idx, new)
                n += int(idx.numel())
        yield n
    finally:
        with torch.no_grad():
            for name, flat, idx, orig in reversed(saved):
                flat.index_copy_(0, idx, orig)
                if not torch.equal(flat[idx], orig):   # cheap: only the touched entries
                    raise TaskspaceError(f"ablation: parameter {name} was not restored exactly")


def _reference(model: Any, ref: Any) -> dict[str, "torch.Tensor"] | None:
    """``{name: tensor}`` of a reference model (a LoadedModel or a module) with the same parameters."""
    if ref is None:
        return None
    ref_model = getattr(ref, "model", ref)
    out = dict(ref_model.named_parameters())
    bad = [n for n, p in model.named_parameters() if n not in out or tuple(out[n].shape) != tuple(p.shape)]
    if bad:
        raise InputError(f"the reference model's parameters do not match the model's ({bad[0]})",
                         field="reference")
    return out


def ablation_scores(loaded: "LoadedModel", train: "Suite", test: "Suite", rows: Sequence[str],
                    settings: "ProbeSettings", reference: Mapping[str, "torch.Tensor"] | None = None
                    ) -> tuple["Any", dict[str, "Any"], dict[str, "Any"], list[dict], dict]:
    """Score the eval pairs of every task: base model, and per row a with ``M_a`` and with ``R_a``
    ablated. Returns (base table, {a: table with M_a ablated}, {a: table with R_a ablated}, one stats
    row per a, the mask description)."""
    # the ablation mask: its own fraction, and always the gradient's (the random mask is the control)
    settings = replace(settings, mask_fraction=settings.ablation_fraction, mask_kind="gradient")
    model = loaded.model
    scorer = Scorer(model, loaded.tokenizer, reduction=settings.reduction, prefix=settings.prefix,
                    batch_tokens=settings.batch_tokens)
    pairs = test.pairs
    base = scorer.score_pairs(pairs)
    masked, rand, stats = {}, {}, []
    mdesc: dict = {}
    for a, grads in task_gradient_stream(model, loaded.tokenizer, train, rows, settings):
        masks = compute_masks(grads, settings)
        mdesc = masks.describe()
        m = masks.mask_for(a)
        k = int(mask_size(m))
        # the control's seed differs from a random *task* mask's (mask_kind=random), so the two never coincide
        r = random_mask(grads.shapes, k, task_seed(settings.seed, f"ablation-random\x00{a}"))
        del grads
        with ablated(model, m, reference):
            masked[a] = scorer.score_pairs(pairs)
        with ablated(model, r, reference):
            rand[a] = scorer.score_pairs(pairs)
        stats.append({"task": a, "mask_size": k, "mask_fraction": mask_size(m, relative=True)})
    return base, masked, rand, stats, mdesc


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``ablation`` probe on one checkpoint: ``ablation`` and ``ablation_random`` with bootstrap
    intervals, and ``stats/ablation.csv`` (mask size, own-task drop vs random per row).

    ``ctx.options["reference"]``: a model (or LoadedModel) of the same architecture whose values the
    masked entries take instead of zero, e.g. the control checkpoint."""
    (spec,) = runner_probes(run, kinds, ctx)
    own_space, random_space = (s.name for s in spec.spaces)      # as the registry declares them
    splits, tasks, rows = probe_tasks(suite, settings, ["train", "test"], ctx.rows)
    train, test = splits["train"], splits["test"]
    ref_opt = ctx.options.get("reference")
    reference = _reference(loaded.model, ref_opt)
    base, masked, rand, stats, mdesc = ablation_scores(loaded, train, test, rows, settings, reference)
    groups = [suite.group_of(t) for t in tasks]
    value = ("zero" if reference is None else
             f"reference model {ref_opt.describe() if hasattr(ref_opt, 'describe') else type(ref_opt).__name__}")
    prov = probe_provenance(loaded, suite.select(tasks), settings, spec.name,
                            convention_of(loaded.model, loaded.tokenizer, settings), mask=mdesc,
                            ablation_value=value, n_train_pairs=train.counts(), n_eval_pairs=test.counts(),
                            bootstrap={"resamples": settings.bootstrap, "level": LEVEL, "paired": True,
                                       "unit": "eval pair"},
                            rows="task whose mask is ablated", columns="task evaluated",
                            perf="mean margin change")
    spaces = {}
    for name, tables, what in ((own_space, masked, "M_a"), (random_space, rand, "random mask of |M_a| entries")):
        e = transfer_matrices(base, tables, tasks, bootstrap=settings.bootstrap, seed=settings.seed)[""]
        spaces[name] = TaskSpace(e.value, tasks, groups, name, dict(prov, ablated=what), e.low, e.high)
    A, R = spaces[own_space].matrix, spaces[random_space].matrix
    for row in stats:
        i = tasks.index(row["task"])
        row.update(group=groups[i], self_drop=float(A[i, i]), self_drop_random=float(R[i, i]))
    res = ProbeResult((spec.name,), spaces=spaces, provenance=prov)
    res.tables[f"stats/{spec.name}.csv"] = (pd.DataFrame(stats), prov)
    return res
