"""Tokenizers for models trained from scratch: word-level for the toy language, byte-level BPE for text.

Both follow the GPT-2 / Pythia convention that :mod:`taskspace.scoring` relies on: one special token
``<|endoftext|>`` is BOS, EOS and pad, and the tokenizer never adds special tokens by itself, so
training on ``<|endoftext|> sentence <|endoftext|>`` matches scoring ``P(sentence | <|endoftext|>)``.
The result is a ``transformers`` fast tokenizer, saved beside each checkpoint so that
``AutoTokenizer.from_pretrained(DIR/stepN)`` works.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from ..errors import InputError

# tokenizers and transformers are imported where a tokenizer is trained or loaded

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

EOT = "<|endoftext|>"
# Word-level only: an unknown word must stay visible (never silently become <|endoftext|>).
UNK = "<unk>"


def _word_pre_tokenizer():
    from tokenizers import pre_tokenizers

    # Whitespace first, then every punctuation character as a token of its own: "sleep." -> sleep .
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                    pre_tokenizers.Punctuation(behavior="isolated")])


_PRE = None


def split_words(text: str) -> list[str]:
    """The word-level tokens of ``text``: lower-cased, split on whitespace and punctuation."""
    global _PRE
    if _PRE is None:
        _PRE = _word_pre_tokenizer()
    return [w for w, _ in _PRE.pre_tokenize_str(text.lower())]


def word_level_tokenizer(vocabulary: Iterable[str], *, model_max_length: int = 64) -> "PreTrainedTokenizerFast":
    """A word-level tokenizer over ``vocabulary`` (lower-case word forms and punctuation).

    Ids: 0 = ``<|endoftext|>`` (BOS = EOS = pad), 1 = ``<unk>``, then the vocabulary in the order
    given (duplicates dropped). Text is lower-cased and split on whitespace and punctuation; decoding
    joins words with spaces and re-attaches punctuation, so ``decode(encode(s)) == s.lower()`` for a
    sentence written as natural English.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers

    words = [w for w in dict.fromkeys(str(v).strip().lower() for v in vocabulary) if w]
    bad = [w for w in words if split_words(w) != [w]]
    if bad:
        raise InputError(f"vocabulary entries must be single words or punctuation marks, got {bad[:5]}",
                         field="vocabulary")
    if not words:
        raise InputError("empty vocabulary", field="vocabulary")
    specials = [EOT, UNK]
    vocab = {t: i for i, t in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _word_pre_tokenizer()
    # WordPiece's decoder with cleanup turns "sleep ." back into "sleep." (no word starts with ##).
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens([EOT, UNK])
    return _wrap(tok, model_max_length, unk=UNK)


def train_bpe_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 8192,
    model_max_length: int = 128,
    min_frequency: int = 2,
) -> "PreTrainedTokenizerFast":
    """Train a byte-level BPE tokenizer (GPT-2 style, no prefix space) on ``texts``.

    Every byte is in the base alphabet, so no text is ever unknown. ``<|endoftext|>`` is id 0.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise InputError(f"BPE vocabulary size must be at least 258 (256 bytes + {EOT}), got {vocab_size}",
                         field="vocab_size")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok, model_max_length, unk=None)


def _wrap(tok, model_max_length: int, unk: str | None) -> "PreTrainedTokenizerFast":
    from transformers import PreTrainedTokenizerFast

    kw = {"unk_token": unk} if unk else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT,
                                   model_max_length=model_max_length, **kw)
    # No post-processor: the tokenizer must not add <|endoftext|> by itself (scoring adds exactly one).
    for attr in ("add_bos_token", "add_eos_token"):
        if hasattr(fast, attr):
            try:
                setattr(fast, attr, False)
            except Exception:  # noqa: BLE001 - read-only in some transformers versions; default is off
                pass
    return fast


def unknown_words(tokenizer, sentences: Sequence[str]) -> list[str]:
    """Words of ``sentences`` that ``tokenizer`` maps to its unknown token (empty for byte-level BPE)."""
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if unk_id is None or tokenizer.unk_token == EOT:
        return []
    out: dict[str, None] = {}
    enc = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    for s, ids in zip(sentences, enc):
        if unk_id in ids:
            for w in split_words(s):
                if tokenizer.convert_tokens_to_ids(w) == unk_id:
                    out[w] = None
    return list(out)
