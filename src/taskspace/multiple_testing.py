"""Corrections for many tests at once: Benjamini–Hochberg within one table, Holm across models.

A leaf module, so the probes (a causal table's rows) and the analysis (a checkpoint's spaces, the
findings across models) use the same two functions.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def bh(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values); NaN stays NaN and is not counted."""
    def step_up(sorted_p: np.ndarray) -> np.ndarray:
        m = sorted_p.size
        return np.minimum.accumulate((sorted_p * m / np.arange(1, m + 1))[::-1])[::-1]

    return _adjust(pvalues, step_up)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (family-wise error across models); NaN stays NaN and is not counted."""
    def step_down(sorted_p: np.ndarray) -> np.ndarray:
        m = sorted_p.size
        return np.maximum.accumulate(sorted_p * (m - np.arange(m)))

    return _adjust(pvalues, step_down)


def _adjust(pvalues: Sequence[float], rule: Callable[[np.ndarray], np.ndarray]) -> list[float]:
    """``rule`` applied to the finite p-values in ascending order, capped at 1, back in input order."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        out[order] = np.minimum(rule(p[order]), 1.0)
    return out.tolist()
