"""Summed log-probabilities of token sequences: a plain batch, or families sharing a prefix's KV cache.

The last token of a sentence is never fed to the model (its output would predict the token after the
sentence, which is not scored). With prefix sharing (pairs only), the tokens that a pair's two
sentences share at the start (≈ 20% of BLiMP's tokens, counting the prefix token) run through the
model once; both continuations then attend to that prefix's key/value cache. Sharing is checked once
per model against the plain forward pass (:func:`prefix_sharing_exact`) and switched off where it
would not be exact (models without a usable cache, ...).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .batching import padded, shared_prefix_length, tight_batches
from .cache import select_cache
from .convention import REDUCTIONS
from .head import Head, verdict

# torch is imported inside the functions that use it: `import taskspace` and the command line start without it

if TYPE_CHECKING:  # pragma: no cover
    import torch


def batch_logprobs(
    model: Any,
    ids: Sequence[Sequence[int]],
    *,
    reduction: str = "sum",
    head: Head | None = None,
    pad_id: int = 0,
) -> "torch.Tensor":
    """Log-probabilities of a batch of token sequences, shape ``[len(ids)]``, differentiable.

    Every token after the first is scored given the tokens before it (so the first token is the
    prefix); a sequence of one token scores 0. Padding is on the right and masked out of the sums; no
    attention mask is passed because a causal model's real tokens never attend to later (padded)
    positions. The last token of each sequence is not fed to the model: nothing scored depends on it.
    Float64 for a float64 model, else float32. Used by the scorer under ``torch.inference_mode``
    and by the probes with gradients on.
    """
    import torch

    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}")
    head = head or Head(model)
    dev = head.device
    n_in = [max(len(x) - 1, 0) for x in ids]
    width = max(n_in, default=0)
    first = next(model.parameters())
    out_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    if width == 0:
        return torch.zeros(len(ids), dtype=out_dtype, device=dev)
    inp = padded([x[:-1] for x in ids], width, pad_id, dev)
    tgt = padded([x[1:] for x in ids], width, pad_id, dev)
    lens = torch.as_tensor(n_in, device=dev)
    keep = torch.arange(width, device=dev).unsqueeze(0) < lens.unsqueeze(1)
    states, _ = head.forward(inp)
    tok_lp = head.logprobs(states[keep], tgt[keep]).to(out_dtype)
    rows = keep.nonzero()[:, 0]
    sums = torch.zeros(len(ids), dtype=out_dtype, device=dev).index_add(0, rows, tok_lp)
    if reduction == "mean":
        sums = sums / lens.clamp(min=1).to(out_dtype)
    return sums


def shared_sums(
    head: Head,
    families: Sequence[Sequence[Sequence[int]]],
    *,
    pad_id: int,
    batch_tokens: int,
    max_batch: int,
    progress: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """Summed log-probs of the sentences of each family (sentences that share their first tokens).

    The shared prefix ``P`` (capped so that every member still predicts a token of its own) runs
    through the model once per family; each member's continuation runs on ``P``'s KV cache.
    Families are bucketed by prefix length, so no prefix is padded and no mask is needed. The
    continuations of one prefix batch are length-sorted into batches of their own (right-padded:
    real tokens never attend to later padding), each starting from the rows of the prefix cache it
    needs.
    """
    out: list[list[float]] = [[0.0] * len(f) for f in families]
    buckets: dict[int, list[int]] = {}
    for f, fam in enumerate(families):
        k = min(shared_prefix_length(fam), max(len(s) for s in fam) - 1)
        if k < 1:
            raise ValueError("prefix sharing needs a shared prefix of at least one token")
        buckets.setdefault(k, []).append(f)
    for k, fams in sorted(buckets.items(), reverse=True):
        # families with similar continuations together: their continuation batches need less padding
        fams.sort(key=lambda f: (-max(len(s) for s in families[f]), f))
        per_unit = max(1, min(max_batch, batch_tokens // k))
        for s in range(0, len(fams), per_unit):
            unit = fams[s : s + per_unit]
            _shared_unit(head, families, unit, k, pad_id, batch_tokens, max_batch, out)
            if progress is not None:
                progress(sum(len(families[f]) for f in unit))
    return out


def _shared_unit(head: Head, families: Sequence[Sequence[Sequence[int]]], unit: list[int], k: int,
                 pad_id: int, batch_tokens: int, max_batch: int, out: list[list[float]]) -> None:
    """Score the families ``unit``, whose shared prefixes all have length ``k``; adds into ``out``."""
    import torch

    dev = head.device
    prefixes = padded([families[f][0][:k] for f in unit], k, pad_id, dev)
    states, cache = head.forward(prefixes, cache=True)
    if cache is None:
        raise RuntimeError(f"{type(head.model).__name__} returned no KV cache")
    # who predicts a token of its own after the prefix: (slot of its family in unit, family, member)
    owners = [(b, f, m) for b, f in enumerate(unit) for m, s in enumerate(families[f]) if len(s) > k]
    slots = torch.as_tensor([b for b, _, _ in owners], dtype=torch.long, device=dev)
    # positions 0 .. k-2 predict shared tokens: scored once per family, added to every member;
    # position k-1 predicts each member's first token after the prefix
    hidden = states.shape[-1]
    rows = torch.cat([states[:, : k - 1].reshape(-1, hidden), states[:, k - 1][slots]])
    targets = torch.cat([prefixes[:, 1:].reshape(-1),
                         torch.as_tensor([families[f][m][k] for _, f, m in owners], dtype=torch.long,
                                         device=dev)])
    lp = head.logprobs(rows, targets).double()
    n_shared = len(unit) * (k - 1)
    shared = lp[:n_shared].view(len(unit), k - 1).sum(1)
    totals = lp[n_shared:] + shared[slots]
    # continuations: feed tokens k .. n-2 (the last token predicts nothing we score)
    cont = [o for o, (_, f, m) in enumerate(owners) if len(families[f][m]) - 1 > k]
    cont_len = [len(families[owners[o][1]][owners[o][2]]) - 1 - k for o in cont]
    for batch in tight_batches(cont_len, batch_tokens, max_batch):
        seqs = [families[owners[cont[j]][1]][owners[cont[j]][2]] for j in batch]
        width = max(cont_len[j] for j in batch)
        inp = padded([x[k:-1] for x in seqs], width, pad_id, dev)
        tgt = padded([x[k + 1 :] for x in seqs], width, pad_id, dev)
        own = torch.as_tensor([cont[j] for j in batch], dtype=torch.long, device=dev)
        cstates, _ = head.forward(inp, past=select_cache(cache, slots[own]), start=k)
        lens = torch.as_tensor([cont_len[j] for j in batch], device=dev)
        keep = torch.arange(width, device=dev).unsqueeze(0) < lens.unsqueeze(1)
        clp = head.logprobs(cstates[keep], tgt[keep]).double()
        totals.index_add_(0, own.unsqueeze(1).expand(-1, width)[keep], clp)
    shared, totals = shared.tolist(), totals.tolist()
    for (_, f, m), v in zip(owners, totals):
        out[f][m] += v
    for b, f in enumerate(unit):  # members with nothing after the prefix get its shared part only
        for m, s in enumerate(families[f]):
            if len(s) <= k:
                out[f][m] += shared[b]


def prefix_sharing_exact(head: Head) -> bool:
    """Whether scoring continuations on a prefix's KV cache matches the plain forward pass for
    ``head``'s model (checked on a short input once per model and state, :func:`~.head.verdict`; False for
    models without a usable cache)."""
    return verdict(head.model, "prefix cache", lambda: _check_cache(head))


def _check_cache(head: Head) -> bool:
    import torch

    if head.cache_kwarg is None:
        return False
    try:
        vocab = head.vocab_size
        tok = [(7 * i + 3) % vocab for i in range(24)]
        a, b, c = tok[:4], tok[4:8], tok[8:11]
        # two families in one prefix batch (k = 4), a member that only predicts its first token
        # after the prefix, one that is the prefix itself (k = 3), and a budget so small that
        # every continuation gets a batch of its own from the same prefix cache
        fams = [[a + tok[11:14], a + tok[14:16]], [b + tok[16:17], b + tok[17:21]], [c, c + tok[21:23]]]
        with torch.inference_mode():
            got = [v for f in shared_sums(head, fams, pad_id=0, batch_tokens=8, max_batch=64) for v in f]
            want = [float(batch_logprobs(head.model, [s], head=head)[0]) for f in fams for s in f]
        dtype = next(head.model.parameters()).dtype
        tol = {torch.float64: 1e-9, torch.float32: 2e-5}.get(dtype, 3e-2)
        return bool(np.allclose(got, want, rtol=tol, atol=tol))
    except Exception:  # noqa: BLE001 - any failure means: no prefix sharing for this model
        return False
