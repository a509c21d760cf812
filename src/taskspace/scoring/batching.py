"""Token sequences into batches: length-sorted, cut by a token budget, right-padded.

Sorting by length keeps padding small. Padding goes on the right, where a causal model's real tokens
never look, so no padding mask is needed (the fused causal attention kernel runs).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

# torch is imported inside the functions that use it: `import taskspace` and the command line start without it

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: a length-sorted batch ends where the length drops once it holds 1/MERGE_FRACTION of the budget
MERGE_FRACTION = 32
#: padded tokens per batch held through a backward pass (gradient differentials, the latent probe's and the
#: steering estimate's hidden-state gradients); ``batch_tokens`` caps it lower. A forward-only batch frees
#: each layer's activations as it goes; a backward keeps them all, ~3.7 MB a token on the 210M GPT-2 shape
#: (the steering estimate's peak grew ~64 MB a task at one pair a task: benchmarks/README.md, "Causal task
#: spaces"). From about a hundred tokens up a CPU batch costs about the same per token.
BACKWARD_TOKENS = 512


def backward_batch_tokens(batch_tokens: int) -> int:
    """The token budget of a batch held through a backward pass: ``batch_tokens``, at most BACKWARD_TOKENS."""
    return min(batch_tokens, BACKWARD_TOKENS)


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int = 512) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_tokens`` padded tokens, longest first.

    Sorting by length keeps padding small; a single sequence longer than the budget gets a batch of
    its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        m = max(cur_max, lengths[i])
        if cur and (m * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        batches.append(cur)
    return batches


def tight_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Like :func:`length_batches`, but a batch also ends where the length drops once it holds
    1/32 of the budget: batches of one length need no padding, and a forward pass costs about the
    same per token from a hundred or so tokens up."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    width = real = 0
    for i in order:
        n = lengths[i]
        if cur and (width * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch
                    or (n < width and real * MERGE_FRACTION >= batch_tokens)):
            batches.append(cur)
            cur, width, real = [], 0, 0
        cur.append(i)
        width = max(width, n)
        real += n
    if cur:
        batches.append(cur)
    return batches


def shared_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens that all of ``seqs`` have in common."""
    if not seqs:
        return 0
    first = seqs[0]
    k = min(len(s) for s in seqs)
    for s in seqs[1:]:
        j = 0
        while j < k and s[j] == first[j]:
            j += 1
        k = j
    return k


def padded(rows: Sequence[Sequence[int]], width: int, pad_id: int, device: Any) -> "torch.Tensor":
    """``rows`` right-padded with ``pad_id`` to ``width``, as a long tensor on ``device``."""
    import torch

    arr = np.full((len(rows), width), pad_id, dtype=np.int64)
    for r, x in enumerate(rows):
        arr[r, : len(x)] = x
    return torch.from_numpy(arr).to(device)
