"""Minimal-pair suites: schema, loaders (BLiMP folder / hub, JSONL / CSV / TSV, the toy grammar), splits."""
from .load import load_suite
from .schema import Pair, Suite, sentences_of
from .splits import SplitSizes, split_suite, split_task

__all__ = ["Pair", "Suite", "load_suite", "sentences_of", "SplitSizes", "split_suite", "split_task"]
