"""transformers' key/value-cache API, old and new, chosen by what the installed model accepts.

transformers renamed the cache argument of ``forward`` (and the output field) from
``past_key_values`` to ``cache`` (5.x; the old name warns a ``FutureWarning`` on every call and is
to be removed in 5.40). Releases before that only know ``past_key_values``; a cache was a tuple of
per-layer ``(keys, values)`` up to about 4.4x, then a ``DynamicCache`` of lists of tensors, then
(≥ 4.56) a ``Cache`` of layer objects. We look at the model's ``forward`` signature and at the
fields of its output instead of comparing version strings: a model class may move to the new API
before or after any given release, and remote-code models follow none.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: names of the cache argument of ``forward``, newest first
CACHE_KWARGS = ("cache", "past_key_values")


def _named_cache_kwarg(fn: Any) -> tuple[str | None, bool]:
    """``(name, open)``: the cache argument that ``fn``'s signature names (or None), and whether it
    takes ``**kwargs`` (then a base class may name it)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None, True
    for name in CACHE_KWARGS:
        if name in params:
            return name, False
    return None, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def cache_kwarg(module: Any) -> str | None:
    """The name under which ``module``'s ``forward`` takes a KV cache, or None if it takes none.

    A subclass whose ``forward(*args, **kwargs)`` passes everything on to its base class (a common
    way to post-process outputs) is looked through to the first class in the MRO that names it.
    """
    name, open_ = _named_cache_kwarg(getattr(module, "forward", None))
    if name is not None or not open_:
        return name
    for klass in type(module).__mro__:
        fwd = klass.__dict__.get("forward")
        if fwd is None:
            continue
        name, open_ = _named_cache_kwarg(fwd)
        if name is not None or not open_:
            return name
    return None


def output_cache(out: Any) -> Any:
    """The KV cache a model output carries (field ``cache``, else ``past_key_values``), or None.

    Reads the field the output class declares: on new releases the old attribute still works but
    logs a deprecation warning on every call.
    """
    names = {f.name for f in dataclasses.fields(out)} if dataclasses.is_dataclass(out) else set()
    for name in CACHE_KWARGS:
        if name in names:
            return getattr(out, name)
    return getattr(out, "past_key_values", None)


def select_cache(cache: Any, index: "torch.Tensor") -> Any:
    """A new KV cache holding the batch rows of ``cache`` picked (and repeated) by ``index``; the
    original is left as it is, so several continuation batches can start from one prefix batch."""
    if isinstance(cache, tuple):  # legacy format: per layer (keys, values)
        return tuple(tuple(t.index_select(0, index) for t in layer) for layer in cache)
    new = copy.copy(cache)
    if hasattr(new, "layers"):  # transformers >= 4.56: Cache of CacheLayer objects
        new.layers = [copy.copy(layer) for layer in cache.layers]
    else:  # older DynamicCache: lists of tensors, replaced (not mutated) by reorder_cache below
        for name in ("key_cache", "value_cache"):
            if isinstance(getattr(new, name, None), list):
                setattr(new, name, list(getattr(cache, name)))
    new.reorder_cache(index)
    return new
