"""The :class:`Scorer`: sentence and pair log-probabilities under one :class:`Convention`, fast.

Speed (docs/design.md, "Targets"), without changing any number beyond float rounding: unique sentences are scored
once; batches are cut by a token budget after sorting by length (:mod:`.batching`); the head sees only
scored positions (:mod:`.head`); Python-written tanh-GELUs run fused (:mod:`.fused`); and a pair's
shared beginning runs once (:mod:`.forward`).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Sequence

import numpy as np

from ..errors import TaskspaceError
from .batching import shared_prefix_length, tight_batches
from .convention import BATCH_TOKENS, REDUCTIONS, Convention, encode, resolve_prefix
from .forward import batch_logprobs, prefix_sharing_exact, shared_sums
from .fused import fused_activations
from .head import Head, quiet_transformers

# torch and pandas are imported inside the methods that use them: `import taskspace` and the command line
# start without them

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..models.loading import LoadedModel
    from ..suites.schema import Pair

#: a pair shares its prefix only when it is at least this many tokens: one shared token (the BOS)
#: saves less than the second model call costs.
MIN_SHARED = 2


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
    (:func:`fused_activations`; float rounding only). ``convention``: ``"taskspace"`` (default: the
    sentence as written, a tie is not correct) or ``"lm-eval"`` (``" " + sentence``, a tie is correct:
    lm-evaluation-harness's BLiMP accuracy; :mod:`.convention`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        reduction: str = "sum",
        prefix: str = "bos",
        batch_tokens: int = BATCH_TOKENS,
        max_batch: int = 512,
        share_prefix: bool | None = None,
        fast_gelu: bool = True,
        convention: str = "taskspace",
    ) -> None:
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
        self.convention = Convention.named(convention, reduction=reduction, prefix=prefix, prefix_token=token,
                                           prefix_token_id=token_id, dtype=dtype)
        self._head: Head | None = None
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)

    @classmethod
    def from_loaded(cls, loaded: "LoadedModel", **kwargs: Any) -> "Scorer":
        """A scorer for a :class:`~taskspace.models.loading.LoadedModel`."""
        return cls(loaded.model, loaded.tokenizer, **kwargs)

    @property
    def head(self) -> Head:
        """The backbone/head split of the model (checked once, lazily)."""
        if self._head is None:
            self._head = Head(self.model)
        return self._head

    @property
    def shares_prefix(self) -> bool:
        """Whether :meth:`score_pairs` scores a pair's shared prefix once (see ``share_prefix``)."""
        if self.share_prefix is False:
            return False
        ok = prefix_sharing_exact(self.head)
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
        return encode(self.tokenizer, sentences, self.convention.prefix_token_id,
                      leading_space=self.convention.leading_space)

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
            with torch.inference_mode(), quiet_transformers(), self._activations() as n_fused:
                self._n_fused = n_fused
                if groups and self.shares_prefix:
                    families = []
                    for g in groups:
                        # every unique sentence belongs to one family only (the first that has it)
                        members = [index[s] for s in dict.fromkeys(g) if not done[index[s]]]
                        if len(members) > 1 and shared_prefix_length([ids[i] for i in members]) >= MIN_SHARED:
                            done[members] = True
                            families.append(members)
                    if families:
                        fam_sums = shared_sums(self.head, [[ids[i] for i in f] for f in families],
                                                pad_id=self._pad_id, batch_tokens=self.batch_tokens,
                                                max_batch=self.max_batch, progress=progress)
                        for f, vals in zip(families, fam_sums):
                            sums[f] = vals
                rest = [i for i in range(len(uniq)) if not done[i]]
                n_in = [max(lengths[i] - 1, 0) for i in rest]
                for batch in tight_batches(n_in, self.batch_tokens, self.max_batch):
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
        margin, correct (margin > 0; under the lm-eval convention margin >= 0), tie (margin == 0).

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
        # (lm-eval: correct, as its np.argmax([good, bad]) == 0 judges it)
        df["margin"] = df["logp_good"] - df["logp_bad"]
        df["correct"] = df["margin"] >= 0 if self.convention.ties_correct else df["margin"] > 0
        df["tie"] = df["margin"] == 0
        return df
