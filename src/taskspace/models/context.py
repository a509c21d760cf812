"""Does a suite fit the model's context? Checked where the suite meets the model, before any scoring.

A model with learned absolute positions (GPT-2's ``n_positions``) has no position beyond its context:
a longer sentence fails deep inside the forward pass (``IndexError: index out of range in self``), and
models with other position schemes would score it out of distribution. So a pair whose sentence
(with the prefix token the scorer puts in front) is longer than the model's positions is refused with
one line naming the task, the pair and both lengths.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

from ..errors import InputError
from .loading import quiet_loading

# transformers is imported where a model's config is read: `import taskspace` and the command line start
# without it

#: config attributes that hold a model's number of positions, the first one present wins
POSITION_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")


def max_positions(config: Any) -> int | None:
    """The model's number of positions from its config, or None when the config names none."""
    for attr in POSITION_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_fits(lm: Any, pairs: Iterable[Any], *, prefix: str = "bos", tokenizer: Any = None,
               leading_space: bool = False) -> None:
    """Raise :class:`InputError` if a sentence of ``pairs`` does not fit the model's context.

    ``lm`` is a :class:`~taskspace.models.loading.LoadedModel` or a bare model (then give
    ``tokenizer``); ``pairs`` are :class:`~taskspace.suites.schema.Pair` objects; ``prefix`` is the
    scoring convention's (``"none"``: no prefix token is added); ``leading_space``: the sentence is
    scored as ``" " + sentence`` (the lm-eval convention). The error names the first pair (in
    suite order) that does not fit, e.g. ``task 'x', pair '17', field 'good': the sentence is 70 tokens
    (with the prefix token); the model has 64 positions``.
    """
    model = getattr(lm, "model", lm)
    tok = tokenizer if tokenizer is not None else getattr(lm, "tokenizer", None)
    limit = max_positions(getattr(model, "config", None))
    if limit is not None and tok is not None:
        _check(limit, lambda: tok, pairs, prefix, leading_space)


def check_folder_fits(folder: str | Path, pairs: Iterable[Any], *, prefix: str = "bos") -> None:
    """:func:`check_fits` for a saved checkpoint folder, without loading its weights: the positions
    come from ``config.json``, and the tokenizer is loaded only when a sentence might not fit.
    A run's pre-flight uses it, so such a plan is refused before anything is written."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # the folder check reports a broken config
    limit = max_positions(SimpleNamespace(**config)) if isinstance(config, dict) else None
    if limit is None:
        return

    def load_tokenizer() -> Any:
        from transformers import AutoTokenizer


        with quiet_loading():
            return AutoTokenizer.from_pretrained(str(folder))

    _check(limit, load_tokenizer, pairs, prefix)


def _check(limit: int, get_tokenizer: Callable[[], Any], pairs: Iterable[Any], prefix: str,
           leading_space: bool = False) -> None:
    extra = 0 if prefix == "none" else 1
    space = " " if leading_space else ""
    pairs = list(pairs)
    # No tokenizer we know makes more than two tokens per UTF-8 byte, so only sentences longer than
    # half the context (in bytes) are tokenized: on BLiMP with GPT-2 (1,024 positions) that is none,
    # and the check costs nothing next to scoring.
    suspects = list(dict.fromkeys(s for p in pairs for s in (p.good, p.bad)
                                  if 2 * len((space + s).encode("utf-8", "surrogatepass")) + extra > limit))
    if not suspects:
        return
    ids = get_tokenizer()([space + s for s in suspects], add_special_tokens=False)["input_ids"]
    too_long = {s: len(i) + extra for s, i in zip(suspects, ids) if len(i) + extra > limit}
    for p in pairs:
        for field in ("good", "bad"):
            n = too_long.get(getattr(p, field))
            if n is not None:
                raise InputError(f"task {p.task!r}, pair {p.pair_id!r}: the {field} sentence is {n} tokens"
                                 f"{' (with the prefix token)' if extra else ''}, longer than the model's "
                                 f"{limit} positions; shorten it or leave the pair out", field=field)
