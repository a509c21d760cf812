"""Latent gradients and vocabulary task cards (``latent``; docs/design.md, "Probes").

For task t, with ``h`` the final hidden states (after the final norm: the input of the unembedding
``W_U``, shape vocab × width)::

    h̄_t = mean_i Σ_pos ∇_{h_pos} margin_i          (t's training pairs; margin = logp(good) − logp(bad))
    S[a, b] = cos(h̄_a, h̄_b)                         space ``latent``

``h̄_t`` is the direction in the model's last latent space along which the task's margin grows — the
learning signal of the task as the unembedding sees it, width-sized instead of model-sized. Summing over
positions treats each position's state as a separate input to ``W_U``: moving every position of every
sentence by ``δ`` changes the mean margin by ``⟨h̄_t, δ⟩`` to first order. Note the sign: ``h̄`` follows
``+∇ margin`` (what learning the task pushes towards), unlike ``ḡ = −∇θ margin``.

Task card: the vocabulary's own frame ``b_v = pinv(W_U) e_v`` (the latent point of least norm whose
logits are, as far as ``W_U`` can express it, the one-hot of token v: ``W_U b_v`` is the projection of
``e_v`` onto the column space of ``W_U``, equal to ``e_v`` when vocab ≤ width). The tokens with the
largest ``cos(h̄_t, b_v)`` are what the task pushes the model towards ("push"), those with the smallest
what it pushes away from ("pull"). A head bias is not part of ``b_v`` (it moves every logit by a constant
per token, not the direction). Only ids the tokenizer knows are ranked (embedding matrices are often
padded past the tokenizer's vocabulary with rows no text ever produces).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from ...errors import TaskspaceError
from ...scoring import Head, encode, length_batches, resolve_prefix
from ...scoring.batching import backward_batch_tokens
from ...spaces import TaskSpace
from ..common import convention_of, cosine_matrix, probe_provenance, probe_tasks, sentence_coefficients
from ..registry import runner_probes
from ..result import ProbeResult
from ..settings import with_overrides

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import RunContext

CARD_COLUMNS = ["task", "group", "rank", "direction", "token", "token_id", "cosine"]


def _split_head(model: Any) -> Any:
    """The scorer's backbone/head split; the latent probe needs the head's input, so a model whose
    logits are not exactly ``W_U · backbone output`` (soft-capping, scaling) is refused."""
    head = Head(model)
    if not head.split:
        raise TaskspaceError("the latent probe needs a model whose output head reads the backbone's final "
                             "hidden states directly (this model transforms its logits further)")
    return head


def latent_gradients(
    model: Any,
    tokenizer: Any,
    suite_train: "Suite",
    settings: "ProbeSettings | None" = None,
    **overrides: Any,
) -> dict[str, "torch.Tensor"]:
    """``{task: h̄_t}`` (float64 vectors of the model's width) for every task of ``suite_train``; the
    convention and ``batch_tokens`` from ``settings`` (``overrides`` replace fields).

    The backbone runs without gradients (no parameter gradient is needed); only the head and the
    log-softmax are differentiated, with respect to the hidden states. Sentences are scored exactly as
    by the scorer (prefix, reduction), each unique sentence once with its coefficient (+1 good, −1 bad),
    so identical pairs cancel exactly.
    """
    s = with_overrides(settings, overrides, "latent_gradients")
    # the backward through the head holds the batch's logits: at most BACKWARD_TOKENS padded tokens a batch
    reduction, prefix, batch_tokens = s.reduction, s.prefix, backward_batch_tokens(s.batch_tokens)
    head = _split_head(model)
    _, token_id = resolve_prefix(tokenizer, prefix)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)
    dev = head.device
    width = int(head.head.weight.shape[1])
    was_training = model.training
    model.eval()
    out: dict[str, torch.Tensor] = {}
    try:
        for task, pairs in suite_train.by_task().items():
            coef = sentence_coefficients(pairs)
            sents = list(coef)
            ids = encode(tokenizer, sents, token_id)
            keep_rows = [i for i, x in enumerate(ids) if len(x) > 1]   # one token: nothing is scored
            total = torch.zeros(width, dtype=torch.float64)
            for batch in length_batches([len(ids[i]) for i in keep_rows], batch_tokens):
                rows = [ids[keep_rows[j]] for j in batch]
                n_in = [len(x) - 1 for x in rows]
                w_max = max(n_in)
                inp = torch.full((len(rows), w_max), pad_id, dtype=torch.long)
                tgt = torch.full((len(rows), w_max), pad_id, dtype=torch.long)
                for r, x in enumerate(rows):           # the last token is never input, only target
                    inp[r, : len(x) - 1] = torch.tensor(x[:-1])
                    tgt[r, : len(x) - 1] = torch.tensor(x[1:])
                inp, tgt = inp.to(dev), tgt.to(dev)
                lens = torch.tensor(n_in, device=dev)
                keep = torch.arange(w_max, device=dev).unsqueeze(0) < lens.unsqueeze(1)
                with torch.no_grad():
                    states, _ = head.forward(inp)
                h = states.detach().requires_grad_(True)
                tok_lp = head.logprobs(h[keep], tgt[keep])
                sums = torch.zeros(len(rows), dtype=tok_lp.dtype, device=dev).index_add(
                    0, keep.nonzero()[:, 0], tok_lp)
                if reduction == "mean":
                    sums = sums / lens.to(sums.dtype)
                wts = torch.tensor([float(coef[sents[keep_rows[j]]]) for j in batch], dtype=sums.dtype, device=dev)
                (grad,) = torch.autograd.grad((wts * sums).sum(), h)
                # padded positions have zero gradient; summing over positions is Σ_pos ∇_{h_pos}
                total += grad.sum((0, 1)).detach().to("cpu", torch.float64)
            out[task] = total / len(pairs)
    finally:
        model.train(was_training)
    return out


def vocab_basis(unembedding: "torch.Tensor") -> "torch.Tensor":
    """``B = pinv(W_U)`` (width × vocab, float64): column ``v`` is ``b_v``, the least-norm latent point
    whose logits ``W_U b_v`` are the projection of the one-hot ``e_v`` onto ``W_U``'s column space."""
    return torch.linalg.pinv(unembedding.detach().to("cpu", torch.float64))


def task_cards(latents: dict[str, "torch.Tensor"], tasks: Sequence[str], groups: Sequence[str],
               unembedding: "torch.Tensor", tokenizer: Any, k: int) -> "pd.DataFrame":
    """One card per task: the ``k`` tokens with the largest (``push``) and the ``k`` with the smallest
    (``pull``) ``cos(h̄_t, b_v)``; rank 1 is the most extreme. Columns :data:`CARD_COLUMNS`."""
    basis = vocab_basis(unembedding)
    n_vocab = min(basis.shape[1], len(tokenizer)) if tokenizer is not None else basis.shape[1]
    basis = basis[:, :n_vocab]
    col_norm = basis.norm(dim=0)
    k = min(k, n_vocab)
    rows = []
    for t, g in zip(tasks, groups):
        h = latents[t].to(torch.float64)
        hn = h.norm()
        if hn == 0:   # a task with only identical pairs pushes nowhere: no card
            continue
        # a zero column (a token W_U cannot express at all) has no direction: cosine 0
        cos = torch.nan_to_num((h @ basis) / (hn * col_norm), nan=0.0)
        order = torch.argsort(cos, descending=True)
        for direction, ids in (("push", order[:k]), ("pull", order.flip(0)[:k])):
            for rank, v in enumerate(ids.tolist(), start=1):
                token = tokenizer.decode([v]) if tokenizer is not None else str(v)
                rows.append({"task": t, "group": g, "rank": rank, "direction": direction, "token": token,
                             "token_id": int(v), "cosine": float(cos[v])})
    return pd.DataFrame(rows, columns=CARD_COLUMNS)


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``latent`` probe on one checkpoint: ``h̄_t`` on the training split, the cosine space and the
    task cards (``cards/latent.csv``; ``ctx.options["card_tokens"]`` tokens per direction)."""
    (spec,) = runner_probes(run, kinds, ctx)
    name = spec.spaces[0].name
    k = int(ctx.options["card_tokens"])
    splits, tasks, _ = probe_tasks(suite, settings, ["train"])
    train = splits["train"]
    model, tok = loaded.model, loaded.tokenizer
    lat = latent_gradients(model, tok, train, settings)
    groups = [suite.group_of(t) for t in tasks]
    prov = probe_provenance(loaded, train, settings, spec.name, convention_of(model, tok, settings),
                            n_train_pairs=train.counts(),
                            latent="final hidden states after the final norm (input of W_U), "
                                   "gradient of the margin summed over positions")
    space = TaskSpace(cosine_matrix(np.stack([lat[t].numpy() for t in tasks])), tasks, groups, name, prov)
    w_u = model.get_output_embeddings().weight
    cards = task_cards(lat, tasks, groups, w_u, tok, k)
    res = ProbeResult((spec.name,), spaces={name: space}, provenance=prov, extra={"latents": lat})
    res.tables[spec.file("cards")] = (cards, dict(prov, card_tokens=k,
                                                   basis="b_v = pinv(W_U) e_v; cosine(h̄_t, b_v)"))
    return res
