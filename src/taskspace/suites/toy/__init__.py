"""The toy world: a small English grammar that generates a pretraining corpus and a minimal-pair suite.

See ``docs/toy_world.md`` for the grammar, the groups and which tasks should share structure.
"""
from .corpus import toy_corpus
from .grammar import is_grammatical, parses, render, tokenize
from .tasks import TASKS, TOY_GROUPS, toy_suite
from .vocabulary import toy_vocabulary

__all__ = ["TASKS", "TOY_GROUPS", "is_grammatical", "parses", "render", "tokenize", "toy_corpus",
           "toy_suite", "toy_vocabulary"]
