"""How distributed the learning signal of each task is (docs/design.md, "Comparing with theory"):
mask size, participation ratio of ``|ḡ_t|``, spread over layers, and within- vs between-group overlap."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ..spaces import TaskSpace
from .stats import within_between

SHARE_PREFIX = "share:"
_LAYER = re.compile(r"(\d+)")


def layer_of(module: str) -> str:
    """The layer a module belongs to: ``layer N`` for the first number in its name (``h.3.mlp``,
    ``block3.attention``), else the module's own name (``embedding``, ``head``)."""
    m = _LAYER.search(module)
    return f"layer {int(m.group(1))}" if m else module


def _layer_key(name: str) -> tuple:
    # Embeddings first, numbered layers in order, the rest (final norm, head) last.
    if name.startswith("layer "):
        return (1, int(name.split()[1]), "")
    if "emb" in name or name.startswith("wte") or name.startswith("wpe"):
        return (0, 0, name)
    return (2, 0, name)


def effective_number(shares: np.ndarray) -> float:
    """``exp(entropy)`` of a distribution: 1 when all mass sits in one place, ``k`` when spread evenly over k."""
    p = np.asarray(shares, dtype=float)
    p = p[np.isfinite(p) & (p > 0)]
    if p.size == 0:
        return float("nan")
    p = p / p.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


def summarize_distributedness(table: pd.DataFrame | None, sharing: TaskSpace | None = None) -> dict:
    """Summary of one checkpoint's ``stats/distributedness.csv`` (per-task rows) and its parameter-sharing
    space (a space the registry marks ``sharing``: the masks' overlap).

    Returns means over tasks of ``mask_size``, ``participation_ratio`` and ``grad_norm``; the mean
    share of ``|ḡ_t|`` per module and per layer; ``layer_spread`` = effective number of layers
    (exp of the entropy of the mean layer shares) divided by the number of layers (1 = even spread);
    and within / between / difference of the sharing space when given (key ``sharing``).
    """
    out: dict = {}
    if table is not None and len(table):
        for col in ("mask_size", "participation_ratio", "grad_norm"):
            if col in table:
                v = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
                v = v[np.isfinite(v)]
                out[col] = float(v.mean()) if v.size else None
                out[col + "_std"] = float(v.std(ddof=1)) if v.size > 1 else None
        share_cols = [c for c in table.columns if str(c).startswith(SHARE_PREFIX)]
        if share_cols:
            shares = {c[len(SHARE_PREFIX):]: float(pd.to_numeric(table[c], errors="coerce").mean())
                      for c in share_cols}
            layers: dict[str, float] = {}
            for mod, v in shares.items():
                if np.isfinite(v):
                    layers[layer_of(mod)] = layers.get(layer_of(mod), 0.0) + v
            layers = dict(sorted(layers.items(), key=lambda kv: _layer_key(kv[0])))
            eff = effective_number(np.array(list(layers.values())))
            out["module_shares"] = shares
            out["layer_shares"] = layers
            out["effective_layers"] = eff
            out["layer_spread"] = eff / len(layers) if layers else None
        out["n_tasks"] = int(len(table))
    if sharing is not None:
        wb = within_between(sharing.matrix, sharing.groups)
        out["sharing"] = {k: wb[k] for k in ("within", "between", "difference", "se_difference")}
    return out
