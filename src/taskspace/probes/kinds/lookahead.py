"""The lookahead probe (``lookahead``; TAG's lookahead affinity with FTGD's mask): no fine-tuning.

One masked gradient step on task a, read on task b to first order::

    L_raw[a, b] = ⟨ḡ_b^eval, M_a ⊙ ḡ_a⟩          space ``lookahead_raw``
    L[a, b]     = L_raw[a, b] / |L_raw[a, a]|      space ``lookahead`` (main, signed)

``ḡ_a`` is a's gradient differential over its training pairs, ``M_a`` its mask (per the settings:
``mask_fraction`` / ``mask_threshold`` / ``mask_kind``), ``ḡ_b^eval`` b's gradient differential over the
held-out (eval) pairs that the transfer probe evaluates on. Why this is transfer: FTGD's first step moves
``θ → θ − η M_a ⊙ ḡ_a``; since ``ḡ_b^eval = −∇ m_b`` (m_b = b's mean eval margin), b's margin changes by
``∇m_b · (−η M_a ⊙ ḡ_a) = η ⟨ḡ_b^eval, M_a ⊙ ḡ_a⟩ = η L_raw[a, b]`` to first order: positive means a step on a helps b. The
normalisation by the diagonal makes rows comparable (tasks differ in gradient scale by orders of
magnitude), as ``transfer_normalized`` does for measured transfer.

Memory: the masked train gradients are kept sparse (the mask's indices and values: a fraction
``mask_fraction`` of the model each, 8 bytes per entry), and each ``ḡ_b^eval`` is computed, used against
every row and dropped — at most one dense gradient is held at a time, never T of them. The T sparse rows
do grow with the number of tasks: ``T · mask_fraction · N · 8`` bytes (67 BLiMP tasks at 5% of
gutenberg-gpt2-5m: about 0.2 GB; of a 400M model: about 11 GB — there, a disk-backed, chunked product
like ``TaskGradients.gram`` is the next step).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from ...spaces import TaskSpace
from ..common import convention_of, normalize_rows, probe_provenance, probe_tasks
from ..gradient.differentials import sparse_dots, task_gradient_stream
from ..gradient.similarity import compute_masks
from ..registry import runner_probes
from ..result import ProbeResult

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import RunContext


def masked_rows(model: Any, tokenizer: Any, train: "Suite", tasks: Sequence[str],
                settings: "ProbeSettings") -> tuple[dict[str, tuple["torch.Tensor", "torch.Tensor"]], dict, list[dict]]:
    """Per task a, ``M_a ⊙ ḡ_a`` as ``(flat indices, values)`` over the parameters in
    ``model.named_parameters()`` order; the mask description; one stats row per task."""
    rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    stats: list[dict] = []
    mdesc: dict = {}
    for a, grads in task_gradient_stream(model, tokenizer, train, tasks, settings):
        masks = compute_masks(grads, settings)
        mdesc = masks.describe()
        g = grads.get(a)
        m = masks.mask_for(a, g)
        flat_m = torch.cat([m[n].reshape(-1) for n in grads.param_names])
        flat_g = torch.cat([g[n].reshape(-1) for n in grads.param_names])
        idx = flat_m.nonzero().squeeze(1)
        if flat_m.numel() < 2 ** 31:   # int32 indices: 8 bytes per masked entry with the float32 value, not 12
            idx = idx.to(torch.int32)
        rows[a] = (idx, flat_g[idx].clone())
        stats.append({"task": a, "mask_size": int(idx.numel()), "mask_fraction": idx.numel() / flat_m.numel(),
                      "grad_norm": float(flat_g.double().norm()),
                      "masked_grad_norm": float(rows[a][1].double().norm())})
        del grads, g, m, flat_m, flat_g
    return rows, mdesc, stats


def lookahead_matrix(model: Any, tokenizer: Any, train: "Suite", test: "Suite", tasks: Sequence[str],
                     settings: "ProbeSettings") -> tuple[np.ndarray, dict, list[dict]]:
    """``L_raw`` (rows a: masked train step; columns b: eval gradient), the mask description and the
    per-task stats."""
    rows, mdesc, stats = masked_rows(model, tokenizer, train, tasks, settings)
    raw = np.full((len(tasks), len(tasks)), np.nan)
    for j, (b, grads) in enumerate(task_gradient_stream(model, tokenizer, test, tasks, settings)):
        raw[:, j] = sparse_dots(rows, tasks, grads.flat(b))
        del grads
    return raw, mdesc, stats


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``lookahead`` probe on one checkpoint: ``lookahead`` (normalised, main) and ``lookahead_raw``,
    and ``stats/lookahead.csv`` (mask size, ‖ḡ_a‖, ‖M_a ⊙ ḡ_a‖, L_raw[a, a] per task)."""
    (spec,) = runner_probes(run, kinds, ctx)
    normalized, raw_space = (s.name for s in spec.spaces)      # as the registry declares them
    splits, tasks, _ = probe_tasks(suite, settings, ["train", "test"])
    train, test = splits["train"], splits["test"]
    raw, mdesc, stats = lookahead_matrix(loaded.model, loaded.tokenizer, train, test, tasks, settings)
    groups = [suite.group_of(t) for t in tasks]
    prov = probe_provenance(loaded, suite.select(tasks), settings, spec.name,
                            convention_of(loaded.model, loaded.tokenizer, settings), mask=mdesc,
                            n_train_pairs=train.counts(), n_eval_pairs=test.counts(),
                            rows="task stepped on (masked train gradient)", columns="task evaluated (eval gradient)")
    spaces = {
        normalized: TaskSpace(normalize_rows(raw), tasks, groups, normalized,
                              dict(prov, value="L_raw[a,b] / |L_raw[a,a]|")),
        raw_space: TaskSpace(raw, tasks, groups, raw_space, dict(prov, value="<ḡ_b^eval, M_a ⊙ ḡ_a>")),
    }
    for i, row in enumerate(stats):
        row["group"] = groups[i]
        row["self"] = float(raw[i, i])
    res = ProbeResult((spec.name,), spaces=spaces, provenance=prov)
    res.tables[f"stats/{spec.name}.csv"] = (pd.DataFrame(stats), prov)
    return res
