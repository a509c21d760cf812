"""The activation-difference probe (``activations``, after Zhou et al. 2024, arXiv 2409.12435): forward only.

For task t and layer ℓ (the residual stream after transformer block ℓ)::

    d_t^ℓ = mean_i [ r_ℓ(good_i) − r_ℓ(bad_i) ]          over t's training pairs
    A_ℓ[a, b] = cos(d_a^ℓ, d_b^ℓ)                           space activations_by_layer/layer<ℓ>
    A[a, b]   = cos([d_a^0; …; d_a^{L−1}], [d_b^0; …; d_b^{L−1}])   space activations (main)

Why: the mean good−bad difference of the hidden states is what separates a task's grammatical from its
ungrammatical sentences inside the model; tasks whose differences point the same way are represented
alike. It needs no gradients, so it scales to any model that fits for inference.

Pooling ``r_ℓ(x)``: the sentence is encoded exactly as the scorer encodes it (the prefix token — BOS,
else EOS — in front unless ``prefix="none"``, no leading space), run through the model once, and the
hidden states at the positions of the sentence's own tokens are averaged. The prefix position is left
out: under a causal model it is the same for the good and the bad sentence, so it would only dilute the
difference by a length-dependent factor. (With the prefix, every sentence token is a scored token; the
pooling also keeps the last token, whose state the scorer never needs but which has read the whole
sentence.) Hidden states come from ``output_hidden_states=True``: ``hidden_states[ℓ + 1]`` is the output
of block ℓ; in ``transformers`` the last entry already has the final norm applied, so the last layer is
read where the unembedding reads it.

As in :mod:`.gradients`, each unique sentence of a task is run once with a coefficient (+1 per time it is
a good sentence, −1 per time it is a bad one), so identical pairs cancel exactly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ...scoring import encode, length_batches, quiet_transformers, resolve_prefix
from ...spaces import TaskSpace
from ..common import DIFFERENCES, convention_of, cosine_matrix, probe_provenance, probe_tasks, sentence_coefficients
from ..registry import runner_probes
from ..result import ProbeResult
from ..settings import with_overrides

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import RunContext, SpaceSpec


# -- the computation ----------------------------------------------------------------------------------

def activation_differences(
    model: Any,
    tokenizer: Any,
    suite_train: "Suite",
    settings: "ProbeSettings | None" = None,
    **overrides: Any,
) -> dict[str, "torch.Tensor"]:
    """``{task: D_t}`` with ``D_t[ℓ] = d_t^ℓ = mean_i [r_ℓ(good_i) − r_ℓ(bad_i)]``, shape ``[layers, width]``
    (float64), over every task of ``suite_train`` (pass its training split). Forward passes only; the
    ``prefix`` and ``batch_tokens`` from ``settings`` (``overrides`` replace fields)."""
    s = with_overrides(settings, overrides, "activation_differences")
    prefix, batch_tokens = s.prefix, s.batch_tokens


    _, token_id = resolve_prefix(tokenizer, prefix)
    skip = 1 if token_id is not None else 0     # the prefix position is not part of the sentence
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)
    device = next(model.parameters()).device
    backbone = getattr(model, "base_model", None)
    backbone = model if backbone is None else backbone
    was_training = model.training
    model.eval()
    out: dict[str, torch.Tensor] = {}
    try:
        with torch.inference_mode():
            for task, pairs in suite_train.by_task().items():
                coef = sentence_coefficients(pairs)
                sents = list(coef)
                ids = encode(tokenizer, sents, token_id)
                total: torch.Tensor | None = None
                keep = [i for i, x in enumerate(ids) if len(x) > skip]   # an empty sentence has no state
                for batch in length_batches([len(ids[i]) for i in keep], batch_tokens):
                    rows = [ids[keep[j]] for j in batch]
                    width = max(len(x) for x in rows)
                    inp = torch.full((len(rows), width), pad_id, dtype=torch.long)
                    for r, x in enumerate(rows):
                        inp[r, : len(x)] = torch.tensor(x)
                    # right padding, no attention mask: a causal model's real positions never see it
                    # the backbone only: the LM head's logits (positions × vocabulary) are not needed
                    # (quiet: transformers warns about padding without an attention mask; right padding
                    # of a causal model needs none, as in scoring)
                    with quiet_transformers():
                        hs = backbone(input_ids=inp.to(device), output_hidden_states=True,
                                      use_cache=False).hidden_states
                    lens = torch.tensor([len(x) for x in rows], device=device)
                    pos = torch.arange(width, device=device)
                    sel = ((pos.unsqueeze(0) >= skip) & (pos.unsqueeze(0) < lens.unsqueeze(1))).to(torch.float64)
                    w = torch.tensor([float(coef[sents[keep[j]]]) for j in batch], dtype=torch.float64,
                                     device=device)
                    # per sentence: mean over its token positions; then Σ_s coef_s · pooled_s — one layer
                    # at a time, so at most one [batch, len, width] float64 copy exists
                    part = torch.stack([
                        ((h.to(torch.float64) * sel[:, :, None]).sum(1) / sel.sum(1)[:, None] * w[:, None]).sum(0)
                        for h in hs[1:]])                                          # [L, W]
                    total = part if total is None else total + part
                if total is None:   # only identical pairs: every difference is exactly zero
                    cfg = model.config
                    total = torch.zeros((cfg.num_hidden_layers, cfg.hidden_size), dtype=torch.float64)
                out[task] = (total / len(pairs)).cpu()
    finally:
        model.train(was_training)
    return out


def activation_spaces(diffs: Mapping[str, "torch.Tensor"], tasks: Sequence[str], groups: Sequence[str],
                      provenance: dict, space: "SpaceSpec | None" = None) -> dict[str, "Any"]:
    """``{"activations": A, "activations_by_layer/layer<ℓ>": A_ℓ}`` from the differences (``space``: the
    probe's space in the registry, by default the activations probe's)."""
    space = space if space is not None else runner_probes(run)[0].spaces[0]
    name = space.name
    stack = np.stack([diffs[t].numpy() for t in tasks])            # [T, L, W]
    spaces = {name: TaskSpace(cosine_matrix(stack.reshape(len(tasks), -1)), list(tasks), list(groups), name,
                              dict(provenance, layers="all, concatenated"))}
    for layer in range(stack.shape[1]):
        spaces[f"{space.parts_folder}/layer{layer}"] = TaskSpace(
            cosine_matrix(stack[:, layer]), list(tasks), list(groups), name, dict(provenance, layer=layer))
    return spaces


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``activations`` probe on one checkpoint: differences on the training split, cosines per layer
    and over all layers, and ``stats/activations.csv`` (‖d_t^ℓ‖ per task and layer)."""
    (spec,) = runner_probes(run, kinds, ctx)
    splits, tasks, _ = probe_tasks(suite, settings, ["train"])
    train = splits["train"]
    diffs = activation_differences(loaded.model, loaded.tokenizer, train, settings)
    groups = [suite.group_of(t) for t in tasks]
    conv = convention_of(loaded.model, loaded.tokenizer, settings)
    prov = probe_provenance(loaded, train, settings, spec.name, conv, n_train_pairs=train.counts(),
                            pooling="mean over the sentence's tokens (prefix position excluded), "
                                    "hidden_states[l+1] = output of block l")
    spaces = activation_spaces(diffs, tasks, groups, prov, spec.spaces[0])
    rows = [{"task": t, "group": g, "layer": layer, "norm": float(diffs[t][layer].norm())}
            for t, g in zip(tasks, groups) for layer in range(diffs[t].shape[0])]
    res = ProbeResult((spec.name,), spaces=spaces, provenance=prov, extra={DIFFERENCES: diffs})
    res.tables[f"stats/{spec.name}.csv"] = (pd.DataFrame(rows), prov)
    return res
