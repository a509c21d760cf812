"""Exact, fast sentence scoring under one documented convention (DESIGN §2).

``logp(x) = Σ_t log p(x_t | prefix, x_<t)`` over every token of the sentence as written (no leading
space added), where the prefix is the tokenizer's BOS token, else its EOS token. Options: ``reduction=
"mean"`` (divide by the number of scored tokens) and ``prefix="none"`` (the first token is then not
scored: nothing predicts it). Tokenizers that would add a BOS by themselves are called with
``add_special_tokens=False`` and get exactly one prefix token from us, never two.

Speed (DESIGN §6), without changing any number beyond float rounding:

- unique sentences are scored once; batches are cut by a token budget after sorting by length, so
  padding is small;
- padding goes on the right, where a causal model's real tokens never look, so no padding mask is
  needed (the fused causal attention kernel runs);
- the last token of a sentence is never fed to the model (its output would predict the token after
  the sentence, which is not scored), and the LM head and the log-softmax run only on scored
  positions, chunk by chunk so the logits stay in cache;
- GPT-2's ``gelu_new``, written out in Python as five element-wise ops, runs as torch's fused
  tanh-GELU (the same formula; :func:`fused_activations`);
- with ``share_prefix`` (pairs only), the tokens that a pair's two sentences share at the start
  (≈ 20% of BLiMP's tokens, counting the prefix token) run through the model once; both continuations
  then attend to that prefix's key/value cache.

Both shortcuts (backbone/head split, prefix sharing) are checked once per model against the plain
forward pass and switched off where they would not be exact (logit soft-capping, models without a
cache, ...).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from .models.loading import LoadedModel
    from .suites.schema import Pair, Suite

REDUCTIONS = ("sum", "mean")
PREFIXES = ("bos", "none")

#: logits per head chunk (rows × vocabulary): small enough to stay in cache, large enough for a fast
#: matmul against the whole output embedding.
_CHUNK_ELEMENTS = 1 << 21
#: a pair shares its prefix only when it is at least this many tokens: one shared token (the BOS)
#: saves less than the second model call costs.
_MIN_SHARED = 2
#: a length-sorted batch ends where the length drops once it holds 1/_MERGE_FRACTION of the budget
_MERGE_FRACTION = 32


@dataclass(frozen=True)
class Convention:
    """How a sentence is scored; recorded in every output."""

    reduction: str = "sum"
    prefix: str = "bos"
    prefix_token: str | None = None
    prefix_token_id: int | None = None
    dtype: str = "float32"
    leading_space: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_prefix(tokenizer: Any, prefix: str) -> tuple[str | None, int | None]:
    """The prefix token (BOS, else EOS) as ``(token, id)``, or ``(None, None)`` for ``prefix="none"``."""
    from .errors import TaskspaceError

    if prefix not in PREFIXES:
        raise TaskspaceError(f"unknown prefix {prefix!r}; choose one of {', '.join(PREFIXES)}")
    if prefix == "none":
        return None, None
    for attr in ("bos_token", "eos_token"):
        tok = getattr(tokenizer, attr, None)
        tid = getattr(tokenizer, attr + "_id", None)
        if tok is not None and tid is not None:
            return str(tok), int(tid)
    raise TaskspaceError("the tokenizer has neither a BOS nor an EOS token to use as prefix; "
                         "score with prefix 'none' (--prefix none)")


def encode(tokenizer: Any, sentences: Sequence[str], prefix_id: int | None) -> list[list[int]]:
    """Token ids of each sentence as written, with ``prefix_id`` (if any) in front.

    ``add_special_tokens=False`` so a Llama-style tokenizer does not add a BOS of its own next to ours.
    """
    if not sentences:
        return []
    enc = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    if prefix_id is None:
        return [list(ids) for ids in enc]
    return [[prefix_id, *ids] for ids in enc]


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


def _tight_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
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
                    or (n < width and real * _MERGE_FRACTION >= batch_tokens)):
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


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings while our own calls run, then restore its verbosity.

    We call models without a padding mask on purpose (see the module docstring), which transformers
    would otherwise warn about.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _padded(rows: Sequence[Sequence[int]], width: int, pad_id: int, device: Any) -> "torch.Tensor":
    """``rows`` right-padded with ``pad_id`` to ``width``, as a long tensor on ``device``."""
    import torch

    arr = np.full((len(rows), width), pad_id, dtype=np.int64)
    for r, x in enumerate(rows):
        arr[r, : len(x)] = x
    return torch.from_numpy(arr).to(device)


class _Head:
    """Run a causal LM as backbone + output head, so the head only sees the positions we score.

    The split is used only where it is bit-for-bit what the model does: a hook on the output head
    checks, on one short input, that ``model(...)`` feeds the head exactly the backbone's output and
    returns exactly the head's output (no logit soft-capping, scaling or bias added afterwards).
    Otherwise the full forward pass is used, and the log-softmax still runs on scored rows only.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.split = False
        self.base: Any = None
        self.head: Any = None
        base = getattr(model, "base_model", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if base is not None and base is not model and head is not None and hasattr(head, "weight"):
            self.base, self.head = base, head
            self.split = self._check()
        self._cache_ok: bool | None = None

    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device

    def _check(self) -> bool:
        import torch

        seen: dict[str, Any] = {}

        def hook(module: Any, args: tuple, out: Any) -> None:
            seen["hidden"], seen["logits"] = args[0], out

        try:
            vocab = self.head.weight.shape[0]
            ids = torch.arange(1, 7, device=self.device).remainder(vocab).view(2, 3)
            handle = self.head.register_forward_hook(hook)
            try:
                with torch.inference_mode(), quiet_transformers():
                    full = self.model(input_ids=ids, use_cache=False).logits
            finally:
                handle.remove()
            with torch.inference_mode(), quiet_transformers():
                hidden = self.base(input_ids=ids, use_cache=False).last_hidden_state
            return (torch.equal(full, seen["logits"].to(full.dtype))
                    and seen["hidden"].shape == hidden.shape and torch.equal(seen["hidden"], hidden))
        except Exception:  # noqa: BLE001 - any failure means: use the plain forward pass
            return False

    def forward(self, input_ids: "torch.Tensor", *, past: Any = None,
                cache: bool = False) -> tuple["torch.Tensor", Any]:
        """Backbone output ``[batch, len, hidden]`` (or full logits when not split), and the KV cache
        when ``cache`` is set. ``past``: a cache of earlier positions that the input continues."""
        kwargs: dict[str, Any] = {"use_cache": cache or past is not None}
        if past is not None:
            kwargs["past_key_values"] = past
        with quiet_transformers():
            if self.split:
                out = self.base(input_ids=input_ids, **kwargs)
                states = out.last_hidden_state
            else:
                out = self.model(input_ids=input_ids, **kwargs)
                states = out.logits
        return states, (out.past_key_values if cache else None)

    def logprobs(self, rows: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        """``log p(target | row)`` for each row of backbone output (or of logits), ``[n_rows]``.

        Float32 at least (float64 for a float64 model), computed chunk by chunk.
        """
        import torch

        vocab = self.head.weight.shape[0] if self.split else rows.shape[-1]
        step = max(64, _CHUNK_ELEMENTS // max(vocab, 1))
        pieces = []
        for s in range(0, rows.shape[0], step):
            lg = self.head(rows[s : s + step]) if self.split else rows[s : s + step]
            if lg.dtype not in (torch.float32, torch.float64):
                lg = lg.float()
            t = targets[s : s + step].unsqueeze(1)
            # one fused (vectorised) kernel; ``gather − logsumexp`` costs 1.3–4× more on CPU
            pieces.append(torch.log_softmax(lg, dim=1).gather(1, t).squeeze(1))
        if not pieces:
            dt = torch.float64 if rows.dtype == torch.float64 else torch.float32
            return torch.zeros(0, dtype=dt, device=rows.device)
        return torch.cat(pieces)

    def scored_logits(self, input_ids: "torch.Tensor", keep: "torch.Tensor") -> "torch.Tensor":
        """Logits at the positions where ``keep`` is True, as a ``[n_kept, vocab]`` tensor."""
        states, _ = self.forward(input_ids)
        return self.head(states[keep]) if self.split else states[keep]

    # -- prefix sharing ---------------------------------------------------------------------------
    def cache_ok(self) -> bool:
        """Whether scoring continuations on a prefix's KV cache matches the plain forward pass here
        (checked once on a short input; False for models without a usable cache)."""
        if self._cache_ok is None:
            self._cache_ok = self._check_cache()
        return self._cache_ok

    def _check_cache(self) -> bool:
        import torch

        try:
            emb = self.head if self.split else self.model.get_output_embeddings()
            vocab = emb.weight.shape[0] if emb is not None else self.model.get_input_embeddings().weight.shape[0]
            tok = [(7 * i + 3) % vocab for i in range(24)]
            a, b, c = tok[:4], tok[4:8], tok[8:11]
            # two families in one prefix batch (k = 4), a member that only predicts its first token
            # after the prefix, one that is the prefix itself (k = 3), and a budget so small that
            # every continuation gets a batch of its own from the same prefix cache
            fams = [[a + tok[11:14], a + tok[14:16]], [b + tok[16:17], b + tok[17:21]], [c, c + tok[21:23]]]
            with torch.inference_mode():
                got = [v for f in _shared_sums(self, fams, pad_id=0, batch_tokens=8, max_batch=64) for v in f]
                want = [float(batch_logprobs(self.model, [s], head=self)[0]) for f in fams for s in f]
            dtype = next(self.model.parameters()).dtype
            tol = {torch.float64: 1e-9, torch.float32: 2e-5}.get(dtype, 3e-2)
            return bool(np.allclose(got, want, rtol=tol, atol=tol))
        except Exception:  # noqa: BLE001 - any failure means: no prefix sharing for this model
            return False


#: transformers' tanh-approximated GELUs written out in Python (five element-wise kernels each):
#: GPT-2's ``gelu_new``, ``gelu_fast`` and ``gelu_python_tanh``
_PY_TANH_GELUS = ("NewGELUActivation", "FastGELUActivation", "GELUTanh", "PytorchGELUTanh")
#: (activation class, dtype) → whether it computes torch's tanh-GELU; checked once per process
_GELU_VERDICTS: dict[tuple[type, Any], bool] = {}


def _same_function(a: Any, b: Any, dtype: "torch.dtype") -> bool:
    """Whether activations ``a`` and ``b`` agree to float rounding on a grid of inputs of ``dtype``."""
    import torch

    x = torch.cat([torch.linspace(-12, 12, 4001, dtype=torch.float64),
                   torch.tensor([0.0, 1e-6, -1e-6, 30.0, -30.0], dtype=torch.float64)]).to(dtype)
    with torch.no_grad():
        ya, yb = a(x).double(), b(x).double()
    tol = {torch.float64: 1e-12, torch.float32: 2e-6}.get(dtype, 2e-2)
    return bool(torch.allclose(ya, yb, rtol=tol, atol=tol))


@contextmanager
def fused_activations(model: Any) -> Iterator[int]:
    """Run the model's Python-written tanh-GELUs with torch's fused kernel of the same formula.

    GPT-2's ``gelu_new`` is ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` spelled out as separate
    element-wise ops; ``torch.nn.GELU(approximate="tanh")`` computes the same function in one pass
    (2.2× faster on CPU, about a fifth of a small GPT-2's forward time). Each module is swapped only
    after a check on a grid of inputs that the two agree to float rounding (once per class and
    dtype), and only when nothing is
    hooked onto it; the originals are put back on exit, also after an error. Yields the number of
    modules swapped. Nested use is harmless (swapped modules are no longer candidates).
    """
    import torch

    swapped: list[tuple[Any, str, Any]] = []
    try:
        dtype = next(model.parameters()).dtype
        fused = torch.nn.GELU(approximate="tanh")
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                cls = type(child)
                if cls.__name__ not in _PY_TANH_GELUS or child._forward_hooks or child._forward_pre_hooks:
                    continue
                if (cls, dtype) not in _GELU_VERDICTS:
                    _GELU_VERDICTS[cls, dtype] = _same_function(child, fused, dtype)
                if _GELU_VERDICTS[cls, dtype]:
                    setattr(parent, name, fused)
                    swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)


def _select_cache(cache: Any, index: "torch.Tensor") -> Any:
    """A new KV cache holding the batch rows of ``cache`` picked (and repeated) by ``index``; the
    original is left as it is, so several continuation batches can start from one prefix batch."""
    import copy

    if isinstance(cache, tuple):  # legacy format: per layer (keys, values)
        return tuple(tuple(t.index_select(0, index) for t in layer) for layer in cache)
    new = copy.copy(cache)
    if hasattr(new, "layers"):  # transformers >= 4.56: Cache of CacheLayer objects
        new.layers = [copy.copy(layer) for layer in cache.layers]
    else:  # older DynamicCache: lists of tensors, replaced (not mutated) below
        for name in ("key_cache", "value_cache"):
            if isinstance(getattr(new, name, None), list):
                setattr(new, name, list(getattr(cache, name)))
    new.reorder_cache(index)
    return new


def _shared_sums(
    head: _Head,
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


def _shared_unit(head: _Head, families: Sequence[Sequence[Sequence[int]]], unit: list[int], k: int,
                 pad_id: int, batch_tokens: int, max_batch: int, out: list[list[float]]) -> None:
    """Score the families ``unit``, whose shared prefixes all have length ``k``; adds into ``out``."""
    import torch

    dev = head.device
    prefixes = _padded([families[f][0][:k] for f in unit], k, pad_id, dev)
    states, cache = head.forward(prefixes, cache=True)
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
    for batch in _tight_batches(cont_len, batch_tokens, max_batch):
        seqs = [families[owners[cont[j]][1]][owners[cont[j]][2]] for j in batch]
        width = max(cont_len[j] for j in batch)
        inp = _padded([x[k:-1] for x in seqs], width, pad_id, dev)
        tgt = _padded([x[k + 1 :] for x in seqs], width, pad_id, dev)
        own = torch.as_tensor([cont[j] for j in batch], dtype=torch.long, device=dev)
        cstates, _ = head.forward(inp, past=_select_cache(cache, slots[own]))
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


def batch_logprobs(
    model: Any,
    ids: Sequence[Sequence[int]],
    *,
    reduction: str = "sum",
    head: _Head | None = None,
    pad_id: int = 0,
    chunk_rows: int | None = None,
) -> "torch.Tensor":
    """Log-probabilities of a batch of token sequences, shape ``[len(ids)]``, differentiable.

    Every token after the first is scored given the tokens before it (so the first token is the
    prefix); a sequence of one token scores 0. Padding is on the right and masked out of the sums; no
    attention mask is passed because a causal model's real tokens never attend to later (padded)
    positions. The last token of each sequence is not fed to the model: nothing scored depends on it.
    Float64 for a float64 model, else float32. Used by the scorer under ``torch.inference_mode``
    and by the probes with gradients on. ``chunk_rows`` is accepted for compatibility (the head is
    chunked by size).
    """
    import torch

    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}")
    head = head or _Head(model)
    dev = head.device
    n_in = [max(len(x) - 1, 0) for x in ids]
    width = max(n_in, default=0)
    first = next(model.parameters())
    out_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    if width == 0:
        return torch.zeros(len(ids), dtype=out_dtype, device=dev)
    inp = _padded([x[:-1] for x in ids], width, pad_id, dev)
    tgt = _padded([x[1:] for x in ids], width, pad_id, dev)
    lens = torch.as_tensor(n_in, device=dev)
    keep = torch.arange(width, device=dev).unsqueeze(0) < lens.unsqueeze(1)
    states, _ = head.forward(inp)
    tok_lp = head.logprobs(states[keep], tgt[keep]).to(out_dtype)
    rows = keep.nonzero()[:, 0]
    sums = torch.zeros(len(ids), dtype=out_dtype, device=dev).index_add(0, rows, tok_lp)
    if reduction == "mean":
        sums = sums / lens.clamp(min=1).to(out_dtype)
    return sums


class Scorer:
    """Scores sentences and minimal pairs with one model under one :class:`Convention`.

    >>> scorer = Scorer(model, tokenizer)                     # sum of log-probs given BOS/EOS
    >>> scorer.sentence_logprobs(["The cat sleeps.", "The cat sleep."])
    array([-21.3, -24.9])
    >>> pairs_df = scorer.score_pairs(suite.pairs)            # one row per pair

    ``share_prefix``: score the tokens a pair's two sentences share at the start once (same numbers
    within float rounding, fewer tokens through the model). ``None`` (default) turns it on when the
    model passes a one-off exactness check; ``False`` never; ``True`` insists (error if the model
    cannot). The choice in effect is ``scorer.shares_prefix``. ``fast_gelu``: run Python-written
    tanh-GELUs (GPT-2's ``gelu_new``) with torch's fused kernel of the same formula
    (:func:`fused_activations`; float rounding only).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        reduction: str = "sum",
        prefix: str = "bos",
        batch_tokens: int = 4096,
        max_batch: int = 512,
        share_prefix: bool | None = None,
        fast_gelu: bool = True,
    ) -> None:
        from .errors import TaskspaceError

        if reduction not in REDUCTIONS:
            raise TaskspaceError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
        if batch_tokens < 1:
            raise TaskspaceError(f"batch_tokens must be positive, got {batch_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        self.share_prefix = share_prefix
        self.fast_gelu = fast_gelu
        self._n_fused: int | None = None
        token, token_id = resolve_prefix(tokenizer, prefix)
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        self.convention = Convention(reduction=reduction, prefix=prefix, prefix_token=token,
                                     prefix_token_id=token_id, dtype=dtype)
        self._head: _Head | None = None
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)

    @classmethod
    def from_loaded(cls, loaded: "LoadedModel", **kwargs: Any) -> "Scorer":
        """A scorer for a :class:`~taskspace.models.loading.LoadedModel`."""
        return cls(loaded.model, loaded.tokenizer, **kwargs)

    @property
    def head(self) -> _Head:
        """The backbone/head split of the model (checked once, lazily)."""
        if self._head is None:
            self._head = _Head(self.model)
        return self._head

    @property
    def shares_prefix(self) -> bool:
        """Whether :meth:`score_pairs` scores a pair's shared prefix once (see ``share_prefix``)."""
        from .errors import TaskspaceError

        if self.share_prefix is False:
            return False
        ok = self.head.cache_ok()
        if self.share_prefix and not ok:
            raise TaskspaceError(f"{type(self.model).__name__} cannot score continuations on a prefix "
                                 "cache exactly; use share_prefix=False")
        return ok

    def describe(self) -> dict:
        """How this scorer computes (not what: that is :attr:`convention`), for provenance."""
        if self._n_fused is None:
            with self._activations() as n:
                self._n_fused = n
        return {"batch_tokens": self.batch_tokens, "share_prefix": self.shares_prefix,
                "split_head": self.head.split, "fused_gelu_modules": self._n_fused}

    def _activations(self) -> ContextManager[int]:
        """:func:`fused_activations` of the model, or nothing (0 modules) with ``fast_gelu=False``."""
        return fused_activations(self.model) if self.fast_gelu else nullcontext(0)

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of ``sentences`` under this scorer's convention (prefix token first)."""
        return encode(self.tokenizer, sentences, self.convention.prefix_token_id)

    def sentence_logprobs(
        self,
        sentences: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
        return_counts: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``logp`` of each sentence (float64 array, input order). Duplicates are scored once.

        ``progress(n)`` is called after each batch with the number of sentences done in it.
        With ``return_counts`` also returns the number of scored tokens per sentence.
        """
        return self._logprobs(sentences, [], progress=progress, return_counts=return_counts)

    def _logprobs(
        self,
        sentences: Sequence[str],
        groups: Sequence[tuple[str, ...]],
        *,
        progress: Callable[[int], None] | None = None,
        return_counts: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """:meth:`sentence_logprobs`, where each of ``groups`` (sentences that tend to share their
        beginning, e.g. a pair) may be scored as a family with one shared prefix."""
        import torch

        uniq = list(dict.fromkeys(sentences))
        index = {s: i for i, s in enumerate(uniq)}
        ids = self.encode(uniq)
        lengths = [len(x) for x in ids]
        sums = np.zeros(len(uniq), dtype=np.float64)
        done = np.zeros(len(uniq), dtype=bool)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self._activations() as n_fused:
                self._n_fused = n_fused
                if groups and self.shares_prefix:
                    families = []
                    for g in groups:
                        # every unique sentence belongs to one family only (the first that has it)
                        members = [index[s] for s in dict.fromkeys(g) if not done[index[s]]]
                        if len(members) > 1 and shared_prefix_length([ids[i] for i in members]) >= _MIN_SHARED:
                            done[members] = True
                            families.append(members)
                    if families:
                        fam_sums = _shared_sums(self.head, [[ids[i] for i in f] for f in families],
                                                pad_id=self._pad_id, batch_tokens=self.batch_tokens,
                                                max_batch=self.max_batch, progress=progress)
                        for f, vals in zip(families, fam_sums):
                            sums[f] = vals
                rest = [i for i in range(len(uniq)) if not done[i]]
                n_in = [max(lengths[i] - 1, 0) for i in rest]
                for batch in _tight_batches(n_in, self.batch_tokens, self.max_batch):
                    todo = [rest[j] for j in batch if n_in[j] > 0]
                    if todo:
                        lp = batch_logprobs(self.model, [ids[i] for i in todo], reduction="sum",
                                            head=self.head, pad_id=self._pad_id)
                        sums[todo] = lp.double().cpu().numpy()
                    if progress is not None:
                        progress(len(batch))
        finally:
            self.model.train(was_training)
        counts = np.asarray([max(n - 1, 0) for n in lengths], dtype=np.int64)
        values = sums / np.maximum(counts, 1) if self.convention.reduction == "mean" else sums
        idx = np.fromiter((index[s] for s in sentences), dtype=np.int64, count=len(sentences))
        if return_counts:
            return values[idx], counts[idx]
        return values[idx]

    def score_pairs(
        self,
        pairs: Sequence["Pair"],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> "pd.DataFrame":
        """One row per pair: task, group, pair_id, logp_good, logp_bad, n_tokens_good, n_tokens_bad,
        margin, correct (margin > 0), tie (margin == 0).

        ``progress(n)`` is called after each batch; the ``n`` add up to the number of unique
        sentences.
        """
        import pandas as pd

        sents = [s for p in pairs for s in (p.good, p.bad)]
        lp, n = self._logprobs(sents, [(p.good, p.bad) for p in pairs], progress=progress,
                               return_counts=True)
        df = pd.DataFrame({
            "task": [p.task for p in pairs],
            "group": [p.group for p in pairs],
            "pair_id": [p.pair_id for p in pairs],
            "logp_good": lp[0::2],
            "logp_bad": lp[1::2],
            "n_tokens_good": n[0::2],
            "n_tokens_bad": n[1::2],
        })
        # identical sentences get the same float, so their margin is exactly 0: a tie, not correct
        df["margin"] = df["logp_good"] - df["logp_bad"]
        df["correct"] = df["margin"] > 0
        df["tie"] = df["margin"] == 0
        return df


def wilson_interval(k: np.ndarray, n: np.ndarray, z: float = 1.959963984540054) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (95% by default); sensible at 0% and 100%."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return centre - half, centre + half


def summarize_tasks(pairs_df: "pd.DataFrame") -> "pd.DataFrame":
    """Per-task table: task, group, n_pairs, accuracy, accuracy_ci_low/high (Wilson 95%),
    mean_margin, n_ties. Task order is first appearance in ``pairs_df``."""
    import pandas as pd

    g = pairs_df.groupby("task", sort=False)
    out = pd.DataFrame({
        "group": g["group"].first(),
        "n_pairs": g.size(),
        "n_correct": g["correct"].sum(),
        "mean_margin": g["margin"].mean(),
        "n_ties": g["tie"].sum(),
    })
    out["accuracy"] = out["n_correct"] / out["n_pairs"]
    lo, hi = wilson_interval(out["n_correct"].to_numpy(), out["n_pairs"].to_numpy())
    out["accuracy_ci_low"], out["accuracy_ci_high"] = lo, hi
    out = out.reset_index()
    return out[["task", "group", "n_pairs", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                "mean_margin", "n_ties"]]


def summarize_groups(pairs_df: "pd.DataFrame") -> "pd.DataFrame":
    """Per-group table: group, n_tasks, n_pairs, accuracy (pooled over pairs), mean_margin, n_ties."""
    g = pairs_df.groupby("group", sort=False)
    out = g.agg(n_tasks=("task", "nunique"), n_pairs=("task", "size"), accuracy=("correct", "mean"),
                mean_margin=("margin", "mean"), n_ties=("tie", "sum")).reset_index()
    return out


@dataclass
class ScoreResult:
    """What :func:`score` returns: per-task and per-pair tables plus provenance."""

    tasks: "pd.DataFrame"
    pairs: "pd.DataFrame"
    provenance: dict

    @property
    def groups(self) -> "pd.DataFrame":
        return summarize_groups(self.pairs)

    @property
    def accuracy(self) -> float:
        """Mean of per-task accuracies (BLiMP's headline number)."""
        return float(self.tasks["accuracy"].mean())

    def save(self, out_dir: Any) -> None:
        """Write ``tasks.csv``, ``pairs.parquet`` and ``run.json`` into ``out_dir`` (atomically)."""
        from pathlib import Path

        from .io import atomic_path, write_json

        out = Path(out_dir)
        with atomic_path(out / "pairs.parquet") as tmp:
            self.pairs.to_parquet(tmp, index=False)
        with atomic_path(out / "tasks.csv") as tmp:
            self.tasks.to_csv(tmp, index=False, float_format="%.6g")
        write_json(out / "run.json", self.provenance)


def score(
    model: "str | LoadedModel",
    suite: "str | Suite",
    *,
    revision: str | None = None,
    reduction: str = "sum",
    prefix: str = "bos",
    batch_tokens: int = 4096,
    limit_per_task: int | None = None,
    tasks: Sequence[str] | None = None,
    device: str | None = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    progress: bool = False,
    seed: int = 0,
    share_prefix: bool | None = None,
) -> ScoreResult:
    """Score every pair of a suite with a model; the one obvious call.

    >>> res = taskspace.score("../shared/models/gutenberg-gpt2-5m", "../shared/data/blimp",
    ...                       revision="step2577", limit_per_task=100)
    >>> res.tasks.head()
    """
    import torch

    from .models.loading import LoadedModel, load_model
    from .provenance import timestamp, versions
    from .suites import load_suite

    torch.manual_seed(seed)
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model, revision, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    suite_obj = suite if not isinstance(suite, str) else load_suite(suite)
    if tasks is not None or limit_per_task is not None:
        suite_obj = suite_obj.select(tasks, limit_per_task)
    from .models.context import check_fits; check_fits(loaded, suite_obj.pairs, prefix=prefix)  # noqa: E702
    scorer = Scorer.from_loaded(loaded, reduction=reduction, prefix=prefix, batch_tokens=batch_tokens,
                                share_prefix=share_prefix)
    if progress:
        from .progress import progress_bar

        n_sent = len({s for p in suite_obj.pairs for s in (p.good, p.bad)})
        with progress_bar("scoring", total=n_sent) as advance:
            pairs_df = scorer.score_pairs(suite_obj.pairs, progress=advance)
    else:
        pairs_df = scorer.score_pairs(suite_obj.pairs)
    tasks_df = summarize_tasks(pairs_df)
    prov = {
        "kind": "scores",
        "created": timestamp(),
        "model": loaded.describe(),
        "convention": scorer.convention.to_dict(),
        "suite": suite_obj.describe(),
        "data_hash": suite_obj.data_hash,
        "scorer": scorer.describe(),
        "limit_per_task": limit_per_task,
        "batch_tokens": batch_tokens,
        "seed": seed,
        "versions": versions(),
    }
    return ScoreResult(tasks=tasks_df, pairs=pairs_df, provenance=prov)
