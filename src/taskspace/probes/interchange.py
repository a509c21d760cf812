"""Counterfactual pairs from minimal pairs, and interchange interventions on the residual stream (``das``,
``mdas``).

Alignment. A pair (good, bad) is encoded as the scorer encodes it (:func:`~taskspace.scoring.encode`: the
prefix token — BOS, else EOS — first, unless ``prefix="none"``). With ``P`` the longest common start and
``C`` the longest common end of the two token sequences (not overlapping ``P``), the **critical region** is
what lies between: ``good = P + R_good + C``, ``bad = P + R_bad + C``. Base = bad, source = good. The
**site** is the region's last token in each run (``len − |C| − 1``; for a pure insertion, where one region
is empty, the last token of ``P`` on that side): its output is what predicts the first token of ``C``.
The two sites sit at different positions when the regions differ in length; they are aligned by the
region's last token and the shared continuation after it, never by absolute position. A pair is:

- ``continuation`` — ``C`` is not empty: the **outcome** of a run is the log-probability of ``C`` (summed
  over its tokens) given that run's context; the region changes it, and only states at or after the
  site can carry that change to ``C`` (states before the site are shared by the base and source runs
  only where the regions agree, i.e. nowhere in the region itself).
- ``final`` — ``C`` is empty but the region is a same-length substitution of at least two tokens (the
  sentences differ up to their last token, e.g. a word-order change that also changes ``.`` into
  ``?``): the site is the token before the last (the same position in both runs) and the outcome is
  the log-odds of the two last tokens there, ``log p(good's last) − log p(bad's last)`` (CausalGym's
  two-alternative outcome).
- not alignable otherwise, with the reason: identical sentences; a difference in the last token only
  (nothing after the site is scored); a difference that runs to the end with regions of different lengths.

Outcome margin of a run: ``m(run)`` as above, a sum of ``coef · log p(target | position)`` terms
(:class:`Counterfactual`.``base_terms`` / ``source_terms``). For a continuation pair ``m(source) −
m(base)`` is the part of the pair's margin ``logp(good) − logp(bad)`` that the continuation carries; the
region's own tokens are predicted from states before the site, which no interchange at the site can move.

Interchange. At layer ℓ (the residual stream after block ℓ, :func:`~taskspace.probes.causal.residual_sites`)
and the base run's site, with ``R`` (``k × width``, orthonormal rows)::

    h_base ← h_base + Rᵀ (R h_source − R h_base)

``R = I`` is the full patch (the base run's state becomes the source's), ``k = 0`` changes nothing. Only
the site of each base row changes; the model's parameters are never touched (forward hooks, removed on
exit).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .causal import _with_state, residual_sites

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..scoring import Head
    from ..suites.schema import Pair

@dataclass(frozen=True)
class Counterfactual:
    """One alignable pair as an interchange: base = bad, source = good (token ids with the prefix token).

    ``base_terms`` / ``source_terms``: ``(position, target token, coefficient)`` triples whose
    ``Σ coef · log p(target | ids[: position + 1])`` is the outcome margin of that run."""

    pair: "Pair"
    kind: str
    base: tuple[int, ...]
    source: tuple[int, ...]
    base_site: int
    source_site: int
    n_continuation: int
    region: tuple[int, int]                   # region lengths (good, bad) in tokens
    base_terms: tuple[tuple[int, int, int], ...]
    source_terms: tuple[tuple[int, int, int], ...]


def common_ends(a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
    """``(p, c)``: the length of the longest common start, and of the longest common end that does not
    overlap it."""
    n = min(len(a), len(b))
    p = 0
    while p < n and a[p] == b[p]:
        p += 1
    c = 0
    while c < n - p and a[len(a) - 1 - c] == b[len(b) - 1 - c]:
        c += 1
    return p, c


def align_ids(pair: "Pair", good: Sequence[int], bad: Sequence[int]) -> Counterfactual | str:
    """The counterfactual of one pair from its token ids, or the reason it is not alignable."""
    good, bad = tuple(good), tuple(bad)
    if good == bad:
        return "identical sentences"
    p, c = common_ends(good, bad)
    rg, rb = len(good) - p - c, len(bad) - p - c
    if c > 0:
        sg, sb = len(good) - c - 1, len(bad) - c - 1
        if sg < 0 or sb < 0:
            return "the region starts the sequence and one side of it is empty (no state to intervene on)"
        terms_b = tuple((t, bad[t + 1], 1) for t in range(sb, len(bad) - 1))
        terms_g = tuple((t, good[t + 1], 1) for t in range(sg, len(good) - 1))
        return Counterfactual(pair, "continuation", bad, good, sb, sg, c, (rg, rb), terms_b, terms_g)
    if rg != rb:
        return "the region runs to the end and its two sides differ in length (no shared continuation)"
    if rg < 2:
        return "only the last token differs (nothing after the site is scored)"
    site = len(good) - 2
    terms = ((site, good[-1], 1), (site, bad[-1], -1))
    return Counterfactual(pair, "final", bad, good, site, site, 0, (rg, rb), terms, terms)


def align_pairs(pairs: Sequence["Pair"], encode: Any) -> tuple[list[Counterfactual], dict[str, str]]:
    """The alignable pairs of ``pairs`` as counterfactuals (input order) and ``{pair_id: reason}`` for the
    others. ``encode(sentences) -> ids``: the scorer's encoding (prefix token first)."""
    ids = encode([s for p in pairs for s in (p.good, p.bad)])
    out: list[Counterfactual] = []
    skipped: dict[str, str] = {}
    for i, p in enumerate(pairs):
        cf = align_ids(p, ids[2 * i], ids[2 * i + 1])
        if isinstance(cf, str):
            skipped[p.pair_id] = cf
        else:
            out.append(cf)
    return out, skipped


# -- runs with an interchange -------------------------------------------------------------------------

def _padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> "torch.Tensor":
    """Rows without their last token (nothing scored reads its output), right-padded."""
    from ..scoring.batching import padded

    width = max(len(x) - 1 for x in rows)
    return padded([x[:-1] for x in rows], width, pad_id, device)


def _outcomes(head: "Head", states: "torch.Tensor", terms: Sequence[Sequence[tuple[int, int, int]]]) -> "torch.Tensor":
    """Per row, ``Σ coef · log p(target | position)`` over its terms (``[rows]``, float32 at least)."""
    import torch

    dev = states.device
    rows = torch.tensor([r for r, ts in enumerate(terms) for _ in ts], device=dev, dtype=torch.long)
    pos = torch.tensor([t[0] for ts in terms for t in ts], device=dev, dtype=torch.long)
    tgt = torch.tensor([t[1] for ts in terms for t in ts], device=dev, dtype=torch.long)
    coef = torch.tensor([float(t[2]) for ts in terms for t in ts], device=dev)
    lp = head.logprobs(states[rows, pos], tgt)
    return torch.zeros(len(terms), dtype=lp.dtype, device=dev).index_add(0, rows, lp * coef.to(lp.dtype))


@contextmanager
def recording(model: Any, layers: Sequence[int], sites: "torch.Tensor", store: dict) -> Iterator[None]:
    """While inside, every forward call puts the residual stream after each of ``layers`` at ``sites`` (one
    position per row) into ``store[layer]`` (``[rows, width]``, detached)."""
    import torch

    def make(layer: int) -> Any:
        def hook(module: Any, args: Any, out: Any) -> Any:
            def grab(h: torch.Tensor) -> torch.Tensor:
                store[layer] = h[torch.arange(h.shape[0], device=h.device), sites.to(h.device)].detach()
                return h
            return _with_state(out, grab)
        return hook

    found = residual_sites(model)
    handles = [found[layer].register_forward_hook(make(layer)) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def interchanged(model: Any, layer: int, sites: "torch.Tensor", source: "torch.Tensor",
                 basis: "torch.Tensor") -> Iterator[None]:
    """While inside, every forward call changes the residual stream after ``layer`` at ``sites`` (one
    position per row): ``h ← h + (h_source − h) Rᵀ R`` with ``R = basis`` (``[k, width]``, orthonormal rows:
    the rank-k interchange; differentiable in ``basis`` and ``source``)."""
    import torch

    def hook(module: Any, args: Any, out: Any) -> Any:
        def change(h: torch.Tensor) -> torch.Tensor:
            rows = torch.arange(h.shape[0], device=h.device)
            pos = sites.to(h.device)
            R = basis.to(device=h.device, dtype=h.dtype)
            delta = ((source.to(h.dtype) - h[rows, pos]) @ R.T) @ R                  # [rows, width]
            onehot = torch.zeros(h.shape[:2], dtype=h.dtype, device=h.device)
            onehot[rows, pos] = 1
            return h + onehot.unsqueeze(-1) * delta.unsqueeze(1)
        return _with_state(out, change)

    handle = residual_sites(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_outcomes(head: "Head", cfs: Sequence[Counterfactual], *, side: str, pad_id: int,
                 layers: Sequence[int] = ()) -> tuple["torch.Tensor", dict[int, "torch.Tensor"]]:
    """One plain run of ``cfs``' base (``side="base"``) or source sequences: the outcome margins ``[rows]``
    and ``{layer: the residual stream after it at each row's site}`` for each of ``layers``."""
    import torch

    ids = [cf.base if side == "base" else cf.source for cf in cfs]
    sites = torch.tensor([cf.base_site if side == "base" else cf.source_site for cf in cfs], dtype=torch.long)
    terms = [cf.base_terms if side == "base" else cf.source_terms for cf in cfs]
    inp = _padded(ids, pad_id, head.device)
    store: dict = {}
    with recording(head.model, layers, sites, store):
        states, _ = head.forward(inp)
    return _outcomes(head, states, terms), store


def intervened_outcomes(head: "Head", cfs: Sequence[Counterfactual], layer: int, source: "torch.Tensor",
                        basis: "torch.Tensor", *, pad_id: int) -> "torch.Tensor":
    """The base runs of ``cfs`` with the rank-k interchange from ``source`` (the source runs' states at
    their sites, ``[rows, width]``) at ``layer``: outcome margins ``[rows]`` (differentiable)."""
    import torch

    sites = torch.tensor([cf.base_site for cf in cfs], dtype=torch.long)
    inp = _padded([cf.base for cf in cfs], pad_id, head.device)
    with interchanged(head.model, layer, sites, source, basis):
        states, _ = head.forward(inp)
    return _outcomes(head, states, [cf.base_terms for cf in cfs])


def batches(cfs: Sequence[Counterfactual], batch_tokens: int) -> list[list[int]]:
    """Indices of ``cfs`` in length-sorted batches of at most ``batch_tokens`` padded tokens (longest side)."""
    from ..scoring.batching import length_batches

    return length_batches([max(len(cf.base), len(cf.source)) for cf in cfs], batch_tokens)


def orthonormal(v: np.ndarray) -> np.ndarray:
    """Rows spanning the same space as ``v`` (``[k, width]``), orthonormal (QR)."""
    q, _ = np.linalg.qr(np.asarray(v, dtype=np.float64).T)
    return q.T
