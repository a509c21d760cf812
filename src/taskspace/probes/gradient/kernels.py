"""Compiled loops for the sketch mode's pass over a task's gradient on a CPU (optional: numba).

The pass over a task's gradient (:func:`~taskspace.probes.gradient.sketch_engine.one_pass`) does a handful of
things per coordinate — scatter into the sketch, two norms, the sort key of ``|g|`` and its histogram,
then the mask's bits. As torch operations each is its own sweep over memory with its own temporary;
on a 210M model at 4 pairs a task they took as long as the forward and backward passes themselves.
Here each sweep is one loop that reads every coordinate once (``nogil``, so the probe's threads run
them side by side). The results are those of the torch path: the same slots summed in the same order
(``index_add_`` on a CPU adds in index order too), the same keys, histogram and bits; only the two
norms are summed in float64 here instead of float32 per chunk.

Without numba (``pip install 'taskspace[fast]'``) or on a GPU the torch path runs; the tests compare
the two on the same gradients.
"""
from __future__ import annotations

import numpy as np

try:  # pragma: no cover - exercised when numba is installed (CI installs it)
    from numba import njit

    AVAILABLE = True
except ImportError:  # pragma: no cover
    AVAILABLE = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f
        return wrap


@njit(nogil=True, cache=True)
def first_pass(g: np.ndarray, codes: np.ndarray, slots: np.ndarray, hist: np.ndarray,
               sketch: bool, keys: bool) -> tuple[float, float]:
    """One sweep over a float32 gradient tensor ``g`` (flat, contiguous).

    ``sketch``: add ``g[i]`` to ``slots[codes[i] + 32768]`` (int16 codes, see
    :meth:`~taskspace.probes.gradient.sketch.SketchSet.codes`). ``keys``: overwrite ``g`` with ``|g|`` and count
    the sort keys' top 16 bits in ``hist`` (bin 0: NaN, whose key is −1; bin 1 + h otherwise).
    Returns (Σ|g|, Σg²)."""
    s1 = 0.0
    s2 = 0.0
    bits = g.view(np.int32)
    for i in range(g.size):
        v = g[i]
        if sketch:
            slots[np.int64(codes[i]) + 32768] += v
        a = abs(v)
        s1 += a
        s2 += np.float64(a) * a
        if keys:
            g[i] = a
            if a != a:
                bits[i] = -1
                hist[0] += 1
            else:
                hist[(bits[i] >> 16) + 1] += 1
    return s1, s2


@njit(nogil=True, cache=True)
def second_pass(keys: np.ndarray, b: int, out: np.ndarray, cand_pos: np.ndarray, cand_key: np.ndarray,
                base: int) -> int:
    """Pass 2 of the top-k mask over one tensor's int32 keys: bit ``i`` of ``out`` (packed, most
    significant bit first, as ``numpy.packbits``) is set for keys above bin ``b``; keys inside bin ``b``
    go to ``cand_pos`` (``base + i``) / ``cand_key``. Returns how many fell inside the bin (the caller
    sized the buffers for all of them)."""
    hi_min = (b + 1) << 16
    c = 0
    for i in range(keys.size):
        k = keys[i]
        if k >= hi_min:
            out[i >> 3] |= np.uint8(0x80 >> (i & 7))
        elif (k >> 16) == b:
            cand_pos[c] = base + i
            cand_key[c] = k
            c += 1
    return c
