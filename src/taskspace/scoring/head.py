"""A causal LM run as backbone + output head, so the head (and the log-softmax) only see scored rows.

The LM head and the log-softmax run only on scored positions, chunk by chunk so the logits stay in
cache. The split is used only where it is bit-for-bit what the model does (checked once per model).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .cache import cache_kwarg, output_cache

# torch and transformers are imported inside the functions that use them: `import taskspace` and the command
# line start without them

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: the sentence position of the first token of the model call in progress (see :func:`call_start`)
_CALL_START: ContextVar[int] = ContextVar("taskspace_call_start", default=0)

#: model → {check name: (the model's state when checked, verdict)}: see :func:`verdict`
_VERDICTS: "weakref.WeakKeyDictionary[Any, dict[str, tuple[tuple, bool]]]" = weakref.WeakKeyDictionary()

#: logits per head chunk (rows × vocabulary): small enough to stay in cache, large enough for a fast
#: matmul against the whole output embedding.
CHUNK_ELEMENTS = 1 << 21


def verdict(model: Any, name: str, check: Callable[[], bool]) -> bool:
    """``check()``, run once per model and state: the checks of how a model may be called (:class:`Head`'s
    split, prefix sharing) ask what its code does, which its weights cannot change, so every probe's
    scorers and fine-tunings of one loaded model share one answer. The state is what can change the answer:
    train or eval mode, the dtype and device, and the forward hooks on the modules the checks compare (the
    model, its backbone and its output head; a hook has its own handle id, so one added or removed is a new
    state). Hooks inside the backbone act on both sides of each comparison alike: the interventions,
    which hook layers, keep prefix sharing exact by design (:func:`call_start`)."""
    state = _state(model)
    seen = _VERDICTS.setdefault(model, {})
    if name not in seen or seen[name][0] != state:
        seen[name] = (state, check())
    return seen[name][1]


def _state(model: Any) -> tuple:
    import torch.nn.modules.module as nn_module

    first = next(model.parameters(), None)
    outer = [model, getattr(model, "base_model", None)]
    if hasattr(model, "get_output_embeddings"):
        outer.append(model.get_output_embeddings())
    hooks = tuple(k for m in outer if m is not None for d in (m._forward_hooks, m._forward_pre_hooks) for k in d)
    everywhere = tuple(k for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
                       for k in getattr(nn_module, name, {}))       # hooks on every module (torch's private dicts)
    return (model.training, getattr(first, "dtype", None), getattr(first, "device", None), hooks, everywhere)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings while our own calls run, then restore its verbosity.

    We call models without a padding mask on purpose (see :mod:`taskspace.scoring.batching`), which
    transformers would otherwise warn about.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    if level >= hf_logging.ERROR:
        # quiet already (an outer call: a scoring or training loop holds it for all of its model calls).
        # Setting a level clears every logger's cache, which costs more than a tiny model's forward pass
        yield
        return
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def call_start() -> int:
    """The sentence position of the first input token of the model call in progress: 0 for a whole
    sentence, the cached prefix's length for a continuation that runs on a shared prefix's KV cache.

    A forward hook that treats positions differently (an intervention that leaves the prefix token alone)
    reads it, so that a sentence split over a prefix call and a continuation call is changed at the same
    positions as one call over the whole sentence."""
    return _CALL_START.get()


class Head:
    """Run a causal LM as backbone + output head, so the head only sees the positions we score.

    The split is used only where it is bit-for-bit what the model does: a hook on the output head
    checks, on one short input, that ``model(...)`` feeds the head exactly the backbone's output and
    returns exactly the head's output (no logit soft-capping, scaling or bias added afterwards).
    Otherwise the full forward pass is used, and the log-softmax still runs on scored rows only.

    ``split``: whether the split is in use. ``cache_kwarg``: the name under which the module we call
    takes a KV cache (``"cache"`` on new transformers, ``"past_key_values"`` on old), None if none.
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
            self.split = verdict(model, "split", self._check)
        self.cache_kwarg = cache_kwarg(self.base if self.split else model)

    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        """Rows of the output embedding (else of the input embedding)."""
        emb = self.head if self.split else self.model.get_output_embeddings()
        if emb is None:
            emb = self.model.get_input_embeddings()
        return int(emb.weight.shape[0])

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

    def forward(self, input_ids: "torch.Tensor", *, past: Any = None, cache: bool = False,
                start: int = 0) -> tuple["torch.Tensor", Any]:
        """Backbone output ``[batch, len, hidden]`` (or full logits when not split), and the KV cache
        when ``cache`` is set. ``past``: a cache of earlier positions that the input continues; ``start``:
        how many positions that is (what :func:`call_start` says during the call)."""
        kwargs: dict[str, Any] = {"use_cache": cache or past is not None}
        if past is not None:
            if self.cache_kwarg is None:
                raise RuntimeError(f"{type(self.model).__name__}.forward takes no KV cache")
            kwargs[self.cache_kwarg] = past
        token = _CALL_START.set(start)
        try:
            with quiet_transformers():
                if self.split:
                    out = self.base(input_ids=input_ids, **kwargs)
                    states = out.last_hidden_state
                else:
                    out = self.model(input_ids=input_ids, **kwargs)
                    states = out.logits
        finally:
            _CALL_START.reset(token)
        return states, (output_cache(out) if cache else None)

    def logprobs(self, rows: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        """``log p(target | row)`` for each row of backbone output (or of logits), ``[n_rows]``.

        Float32 at least (float64 for a float64 model), computed chunk by chunk.
        """
        import torch

        vocab = self.head.weight.shape[0] if self.split else rows.shape[-1]
        step = max(64, CHUNK_ELEMENTS // max(vocab, 1))
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

