"""The scoring convention (docs/design.md, "Scoring"): which prefix token goes in front, how sums are reduced, whether
a space goes before the sentence and how a tie is judged.

``logp(x) = Σ_t log p(x_t | prefix, x_<t)`` over every token of the sentence, where the prefix is the
tokenizer's BOS token, else its EOS token. ``reduction="mean"`` divides by the number of scored tokens;
``prefix="none"`` scores no prefix (the first token is then not scored: nothing predicts it).

Two named conventions (:data:`CONVENTIONS`), one choice (``convention=`` / ``--convention``):

- ``taskspace`` (the default): the sentence as written, no leading space; a pair is correct iff
  ``logp(good) > logp(bad)``, so a tie (identical sentences: BLiMP has 7) is not correct.
- ``lm-eval``: what lm-evaluation-harness 0.4.x computes for its ``blimp_*`` tasks, so its accuracies
  are reproduced exactly. Its BLiMP task is ``multiple_choice`` with ``doc_to_text: ""``,
  ``doc_to_choice: [sentence_good, sentence_bad]``, ``doc_to_target: 0`` and the default
  ``target_delimiter: " "`` (``lm_eval/tasks/blimp/_template_yaml``); ``construct_requests`` makes each
  request ``("", " " + choice)``, and ``LM.loglikelihood`` scores an empty context as the continuation
  given ``[prefix_token_id]`` (BOS, else EOS), the continuation encoded without special tokens
  (``lm_eval/api/model.py``). So a sentence is scored as ``" " + sentence`` given ``<|endoftext|>``.
  ``process_results`` sets ``acc = 1.0 if np.argmax(lls) == gold`` with ``gold = 0`` (the good
  sentence); ``np.argmax`` returns the first of equal maxima, so a tie counts as CORRECT: correct iff
  ``logp(good) >= logp(bad)`` (``lm_eval/api/task.py``). Checked against the source of v0.4.0, v0.4.5
  and v0.4.9.2. lm-eval sums token log-probs given the prefix token, so this convention takes only
  ``reduction="sum"`` and ``prefix="bos"``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..errors import TaskspaceError

REDUCTIONS = ("sum", "mean")
#: padded tokens per scoring batch, unless a caller asks for another size (changes speed and memory, not scores)
BATCH_TOKENS = 4096
PREFIXES = ("bos", "none")
#: the named conventions: name -> (leading_space, ties_correct)
CONVENTIONS: dict[str, tuple[bool, bool]] = {"taskspace": (False, False), "lm-eval": (True, True)}


@dataclass(frozen=True)
class Convention:
    """How a sentence is scored; recorded in every output."""

    reduction: str = "sum"
    prefix: str = "bos"
    prefix_token: str | None = None
    prefix_token_id: int | None = None
    dtype: str = "float32"
    leading_space: bool = False
    name: str = "taskspace"
    ties_correct: bool = False

    @classmethod
    def named(cls, name: str, **kwargs: Any) -> "Convention":
        """The convention ``name`` (:data:`CONVENTIONS`) with the other fields from ``kwargs``."""
        leading_space, ties_correct = convention_rules(name, kwargs.get("reduction", "sum"),
                                                       kwargs.get("prefix", "bos"))
        return cls(name=name, leading_space=leading_space, ties_correct=ties_correct, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


def convention_rules(name: str, reduction: str = "sum", prefix: str = "bos") -> tuple[bool, bool]:
    """``(leading_space, ties_correct)`` of the named convention; refuses an unknown name and
    ``lm-eval`` with a reduction or prefix lm-eval does not use."""
    if name not in CONVENTIONS:
        raise TaskspaceError(f"unknown convention {name!r}; choose one of {', '.join(CONVENTIONS)}")
    if name == "lm-eval" and (reduction != "sum" or prefix != "bos"):
        raise TaskspaceError("the lm-eval convention sums token log-probs given the BOS (else EOS) token; "
                             "it takes neither --reduction mean nor --prefix none")
    return CONVENTIONS[name]


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


def encode(tokenizer: Any, sentences: Sequence[str], prefix_id: int | None, *,
           leading_space: bool = False) -> list[list[int]]:
    """Token ids of each sentence as written (``leading_space``: of ``" " + sentence``), with
    ``prefix_id`` (if any) in front.

    ``add_special_tokens=False`` so a Llama-style tokenizer does not add a BOS of its own next to ours.
    """
    if not sentences:
        return []
    texts = [" " + s for s in sentences] if leading_space else list(sentences)
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if prefix_id is None:
        return [list(ids) for ids in enc]
    return [[prefix_id, *ids] for ids in enc]
