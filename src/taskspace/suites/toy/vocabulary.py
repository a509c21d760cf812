"""The word forms of the toy language, for building a word-level tokenizer."""
from __future__ import annotations

from . import lexicon as L


def toy_vocabulary() -> list[str]:
    """Every lower-case word form the toy grammar can emit in good or bad sentences, then the
    punctuation tokens. Sorted words first, so the list is stable across runs."""
    return L.all_word_forms() + list(L.PUNCTUATION)
