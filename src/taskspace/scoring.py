"""Exact, fast sentence scoring under one documented convention (DESIGN §2).

``logp(x) = Σ_t log p(x_t | prefix, x_<t)`` over every token of the sentence as written (no leading
space added), where the prefix is the tokenizer's BOS token, else its EOS token. Options: ``reduction=
"mean"`` (divide by the number of scored tokens) and ``prefix="none"`` (the first token is then not
scored: nothing predicts it). Tokenizers that would add a BOS by themselves are called with
``add_special_tokens=False`` and get exactly one prefix token from us, never two.

Speed (DESIGN §6): unique sentences are scored once; batches are cut by a token budget after sorting by
length, so padding is small; padding goes on the right, where a causal model never looks at it, so no
attention mask is needed (and the fused causal attention kernel is used); the LM head and the softmax
run only on scored positions, never on padding or on the last position of a sentence.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from .models.loading import LoadedModel
    from .suites.schema import Pair, Suite

REDUCTIONS = ("sum", "mean")
PREFIXES = ("bos", "none")


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


class _Head:
    """Run a causal LM as backbone + output head, so the head only sees the positions we score.

    Falls back to the full forward pass for models where that split is not exact (logit soft-capping,
    logit scaling, ...): the split is checked once against ``model(...)`` on a short input.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.split = False
        base = getattr(model, "base_model", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if base is not None and base is not model and head is not None:
            self.base, self.head = base, head
            self.split = self._check()

    def _check(self) -> bool:
        import torch

        try:
            dev = next(self.model.parameters()).device
            vocab = self.head.weight.shape[0]
            ids = torch.arange(1, 6, device=dev).remainder(vocab).unsqueeze(0)
            with torch.inference_mode():
                full = self.model(input_ids=ids).logits[0].float()
                hid = self.base(input_ids=ids).last_hidden_state[0]
                part = self.head(hid).float()
            return bool(torch.allclose(full, part, atol=1e-4, rtol=1e-4))
        except Exception:  # noqa: BLE001 - any failure means: use the plain forward pass
            return False

    def scored_logits(self, input_ids: "torch.Tensor", keep: "torch.Tensor") -> "torch.Tensor":
        """Logits at the positions where ``keep`` is True, as a ``[n_kept, vocab]`` tensor."""
        if self.split:
            hidden = self.base(input_ids=input_ids).last_hidden_state
            return self.head(hidden[keep])
        return self.model(input_ids=input_ids).logits[keep]


def batch_logprobs(
    model: Any,
    ids: Sequence[Sequence[int]],
    *,
    reduction: str = "sum",
    head: _Head | None = None,
    pad_id: int = 0,
    chunk_rows: int = 2048,
) -> "torch.Tensor":
    """Log-probabilities of a batch of token sequences, shape ``[len(ids)]``, differentiable.

    Every token after the first is scored given the tokens before it (so the first token is the
    prefix). Padding is on the right and masked out of the sums; no attention mask is passed because a
    causal model's real tokens never attend to later (padded) positions. Used by the scorer under
    ``torch.inference_mode`` and by the probes with gradients on.
    """
    import torch

    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}")
    head = head or _Head(model)
    dev = next(model.parameters()).device
    lens = torch.tensor([len(x) for x in ids], device=dev)
    width = int(lens.max())
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long, device=dev)
    for r, x in enumerate(ids):
        input_ids[r, : len(x)] = torch.as_tensor(x, dtype=torch.long)
    pos = torch.arange(width, device=dev)
    # position t predicts token t+1: keep positions 0 .. len-2 of every row
    keep = pos.unsqueeze(0) < (lens - 1).unsqueeze(1)
    targets = input_ids[:, 1:][keep[:, :-1]]
    rows = keep.nonzero()[:, 0]
    logits = head.scored_logits(input_ids, keep)
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    tok_lp = torch.empty(logits.shape[0], dtype=out_dtype, device=dev)
    pieces = []
    for s in range(0, logits.shape[0], chunk_rows):
        lg = logits[s : s + chunk_rows].to(out_dtype)
        t = targets[s : s + chunk_rows]
        pieces.append(lg.gather(1, t.unsqueeze(1)).squeeze(1) - torch.logsumexp(lg, dim=1))
    tok_lp = torch.cat(pieces) if pieces else tok_lp
    sums = torch.zeros(len(ids), dtype=out_dtype, device=dev).index_add(0, rows, tok_lp)
    if reduction == "mean":
        sums = sums / (lens - 1).clamp(min=1).to(out_dtype)
    return sums


class Scorer:
    """Scores sentences and minimal pairs with one model under one :class:`Convention`.

    >>> scorer = Scorer(model, tokenizer)                     # sum of log-probs given BOS/EOS
    >>> scorer.sentence_logprobs(["The cat sleeps.", "The cat sleep."])
    array([-21.3, -24.9])
    >>> pairs_df = scorer.score_pairs(suite.pairs)            # one row per pair
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
        token, token_id = resolve_prefix(tokenizer, prefix)
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        self.convention = Convention(reduction=reduction, prefix=prefix, prefix_token=token,
                                     prefix_token_id=token_id, dtype=dtype)
        self._head: _Head | None = None
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)

    @classmethod
    def from_loaded(cls, loaded: "LoadedModel", **kwargs: Any) -> "Scorer":
        return cls(loaded.model, loaded.tokenizer, **kwargs)

    @property
    def head(self) -> _Head:
        if self._head is None:
            self._head = _Head(self.model)
        return self._head

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
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
        import torch

        uniq = list(dict.fromkeys(sentences))
        ids = self.encode(uniq)
        lengths = [len(x) for x in ids]
        values = np.zeros(len(uniq), dtype=np.float64)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for batch in length_batches(lengths, self.batch_tokens, self.max_batch):
                    todo = [i for i in batch if lengths[i] > 1]
                    if todo:
                        lp = batch_logprobs(self.model, [ids[i] for i in todo],
                                            reduction=self.convention.reduction, head=self.head,
                                            pad_id=self._pad_id)
                        values[todo] = lp.double().cpu().numpy()
                    if progress is not None:
                        progress(len(batch))
        finally:
            self.model.train(was_training)
        index = {s: i for i, s in enumerate(uniq)}
        idx = np.fromiter((index[s] for s in sentences), dtype=np.int64, count=len(sentences))
        out = values[idx]
        if return_counts:
            counts = np.asarray([max(n - 1, 0) for n in lengths], dtype=np.int64)[idx]
            return out, counts
        return out

    def score_pairs(
        self,
        pairs: Sequence["Pair"],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> "pd.DataFrame":
        """One row per pair: task, group, pair_id, logp_good, logp_bad, n_tokens_good, n_tokens_bad,
        margin, correct (margin > 0), tie (margin == 0)."""
        import pandas as pd

        sents = [s for p in pairs for s in (p.good, p.bad)]
        lp, n = self.sentence_logprobs(sents, progress=progress, return_counts=True)
        df = pd.DataFrame({
            "task": [p.task for p in pairs],
            "group": [p.group for p in pairs],
            "pair_id": [p.pair_id for p in pairs],
            "logp_good": lp[0::2],
            "logp_bad": lp[1::2],
            "n_tokens_good": n[0::2],
            "n_tokens_bad": n[1::2],
        })
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
    scorer = Scorer.from_loaded(loaded, reduction=reduction, prefix=prefix, batch_tokens=batch_tokens)
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
        "limit_per_task": limit_per_task,
        "batch_tokens": batch_tokens,
        "seed": seed,
        "versions": versions(),
    }
    return ScoreResult(tasks=tasks_df, pairs=pairs_df, provenance=prov)
