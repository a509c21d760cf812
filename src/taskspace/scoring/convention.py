"""The scoring convention (DESIGN §2): which prefix token goes in front, how sums are reduced.

``logp(x) = Σ_t log p(x_t | prefix, x_<t)`` over every token of the sentence as written (no leading
space added), where the prefix is the tokenizer's BOS token, else its EOS token. ``reduction="mean"``
divides by the number of scored tokens; ``prefix="none"`` scores no prefix (the first token is then
not scored: nothing predicts it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..errors import TaskspaceError

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
