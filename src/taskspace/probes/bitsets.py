"""Masks as packed bitsets, found from a gradient one tensor at a time (DESIGN §4, "Masks without
keeping gradients").

:func:`top_fraction_mask` in :mod:`.masks` concatenates ``|ḡ|`` over all parameters (a float32 copy of
the model, then ``nan_to_num``, ``kthvalue`` and a boolean copy: ~4 model-sized allocations per task).
Here the same mask is found in three passes over the tensors, each touching one tensor at a time:

1. a histogram of the top 16 bits of ``|ḡ|``'s float32 bit pattern (for non-negative floats the bit
   pattern, read as an integer, is monotone in the value), which finds the 16-bit bin holding the
   k-th largest magnitude;
2. a histogram of the low 16 bits inside that bin, which gives the exact cut value;
3. the entries above the cut, plus the first ``missing`` entries equal to it in parameter then
   row-major order — the tie rule of :func:`~taskspace.probes.masks.top_fraction_mask`, so the two
   masks are identical (a NaN is never "large": it ranks below every magnitude, as there).

The result is a :class:`BitsetMask`: 1 bit per parameter, each tensor's bits packed from a byte
boundary (≤ 1 byte of padding per tensor, always zero), readable lazily one tensor at a time — which
is all FTGD needs — and saved to disk as a ``.npy`` file so the masks of T tasks take no memory.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError

_NAN_KEY = -1          # NaN sorts below every magnitude (the bit pattern of |x| is >= 0)
_HI_BINS = 1 << 15     # top 16 bits of a non-negative int32: 0 … 32767
#: elements per step of a pass (int32 temporaries of 4 MB, recycled by the allocator — whole-tensor
#: temporaries of a 210M model are fresh mmap'd pages, i.e. page faults and system time, every task)
_STEP = 1 << 20


def _keys(g: torch.Tensor) -> torch.Tensor:
    """``|g|`` in float32 as monotone int32 keys (NaN → −1), flattened, on ``g``'s device (histograms
    run there; only they and the packed bits come back to the CPU)."""
    a = g.detach().reshape(-1).float().abs()     # abs() always allocates: ``a`` is ours to reuse
    nan = torch.isnan(a)
    return a.view(torch.int32).masked_fill_(nan, _NAN_KEY)


class BitsetMask(Mapping[str, torch.Tensor]):
    """A mask over named tensors stored as packed bits; ``mask[name]`` unpacks one tensor (bool)."""

    def __init__(self, names: Sequence[str], shapes: Mapping[str, Sequence[int]], bits: np.ndarray) -> None:
        self.names = list(names)
        self.shapes = {n: tuple(int(s) for s in shapes[n]) for n in self.names}
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for n in self.names:
            nb = (math.prod(self.shapes[n]) + 7) // 8
            self.offsets[n] = (off, off + nb)
            off += nb
        if bits.shape != (off,):
            raise ValueError(f"bitset has {bits.shape} bytes, the layout needs {off}")
        self.bits = bits

    @staticmethod
    def n_bytes(shapes: Mapping[str, Sequence[int]]) -> int:
        return sum((math.prod(s) + 7) // 8 for s in shapes.values())

    @classmethod
    def from_mask(cls, mask: Mapping[str, torch.Tensor]) -> "BitsetMask":
        """Pack a ``{name: bool tensor}`` mask (one tensor at a time)."""
        names = list(mask)
        parts = [np.packbits(mask[n].detach().reshape(-1).cpu().numpy().astype(bool)) for n in names]
        bits = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        return cls(names, {n: tuple(mask[n].shape) for n in names}, bits)

    def __getitem__(self, name: str) -> torch.Tensor:
        a, b = self.offsets[name]
        n = math.prod(self.shapes[name])
        flat = np.unpackbits(np.asarray(self.bits[a:b]), count=n).astype(bool)
        return torch.from_numpy(flat).reshape(self.shapes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def count(self) -> int:
        """Selected entries (a popcount over the packed bits, in chunks)."""
        return sum(int(np.bitwise_count(np.asarray(self.bits[i:i + (1 << 24)])).sum())
                   for i in range(0, self.bits.shape[0], 1 << 24))

    @property
    def n_parameters(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npy`` bits) and ``path.json`` (names and shapes), atomically."""
        from ..io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(self.bits))
        with atomic_path(path.with_suffix(path.suffix + ".json")) as tmp:
            Path(tmp).write_text(json.dumps({"names": self.names,
                                             "shapes": {n: list(s) for n, s in self.shapes.items()}}))
        return path

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> "BitsetMask":
        """A bitset written by :meth:`save` (memory-mapped by default: nothing read until used)."""
        path = Path(path)
        meta = path.with_suffix(path.suffix + ".json")
        if not path.exists() or not meta.exists():
            raise InputError("bitset mask file missing", file=path)
        layout = json.loads(meta.read_text())
        bits = np.load(path, mmap_mode="r" if mmap else None)
        return cls(layout["names"], layout["shapes"], bits)


def _keys_in_place(g: torch.Tensor) -> torch.Tensor:
    """:func:`_keys` written over ``g`` itself (float32 only): no allocation of the tensor's size.
    ``g``'s values are lost — for a gradient buffer that is zeroed before the next task anyway."""
    flat = g.detach().reshape(-1)
    for part in flat.split(_STEP):
        nan = torch.isnan(part)
        part.abs_().view(torch.int32).masked_fill_(nan, _NAN_KEY)
    return flat.view(torch.int32)


def _top_cut(keys: Mapping[str, torch.Tensor], names: Sequence[str], k: int) -> tuple[int, int]:
    """(cut key, number of entries equal to the cut to take) for the k largest keys; k ≥ 1."""
    hi = torch.zeros(_HI_BINS + 1, dtype=torch.int64)
    for n in names:
        # NaN's key −1 lands in bin 0 after the +1 shift: no boolean indexing (a copy) needed
        for part in keys[n].split(_STEP):
            hi += torch.bincount((part >> 16) + 1, minlength=_HI_BINS + 1).cpu()
    hi = hi[1:]
    n_real = int(hi.sum())
    if k > n_real:
        # every real entry, then the first NaNs
        return _NAN_KEY, k - n_real
    above = torch.flip(torch.cumsum(torch.flip(hi, [0]), 0), [0])    # above[b] = #entries with hi >= b
    b = int((above >= k).nonzero().max())
    greater = int(above[b + 1]) if b + 1 < _HI_BINS else 0
    lo = torch.zeros(1 << 16, dtype=torch.int64)
    for n in names:
        for part in keys[n].split(_STEP):
            sel = part[(part >> 16) == b]
            lo += torch.bincount(sel & 0xFFFF, minlength=1 << 16).cpu()
    lo_above = torch.flip(torch.cumsum(torch.flip(lo, [0]), 0), [0])
    need = k - greater
    low = int((lo_above >= need).nonzero().max())
    greater += int(lo_above[low + 1]) if low + 1 < (1 << 16) else 0
    return (b << 16) | low, k - greater


def gradient_bitset(grads: Mapping[str, torch.Tensor], names: Sequence[str] | None = None, *,
                    fraction: float | None = 0.05, threshold: float | None = None,
                    overwrite: bool = False) -> BitsetMask:
    """The gradient mask of ``grads`` as a :class:`BitsetMask`, one tensor at a time.

    ``threshold`` given: ``|ḡ| ≥ τ`` (as :func:`~taskspace.probes.masks.threshold_mask`); else the top
    ``round(fraction · N)`` entries of ``|ḡ|`` with the ties rule of
    :func:`~taskspace.probes.masks.top_fraction_mask` (the same mask, bit for bit).

    ``overwrite=True`` (top fraction, float32 tensors) turns ``grads`` into their sort keys in place:
    the three passes then share one set of keys instead of recomputing ``|g|`` (an allocation the
    size of each tensor) three times. Use it on a gradient buffer that is reset afterwards.
    """
    names = list(grads) if names is None else list(names)
    shapes = {n: tuple(grads[n].shape) for n in names}
    parts: list[np.ndarray] = []
    if threshold is not None:
        if threshold < 0:
            raise InputError(f"mask threshold must be >= 0, got {threshold}", field="mask_threshold")
        for n in names:
            sel = grads[n].detach().float().abs() >= threshold
            parts.append(np.packbits(sel.reshape(-1).cpu().numpy()))
        return BitsetMask(names, shapes, np.concatenate(parts) if parts else np.zeros(0, np.uint8))
    assert fraction is not None
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"mask fraction must be in [0, 1], got {fraction}", field="mask_fraction")
    total = sum(math.prod(s) for s in shapes.values())
    k = int(round(fraction * total))
    if k == 0 or k >= total:
        for n in names:
            parts.append(np.packbits(np.full(math.prod(shapes[n]), k > 0, dtype=bool)))
        return BitsetMask(names, shapes, np.concatenate(parts) if parts else np.zeros(0, np.uint8))
    if overwrite and all(grads[n].dtype == torch.float32 for n in names):
        keys = {n: _keys_in_place(grads[n]) for n in names}
    else:
        keys = _LazyKeys(grads)
    cut, ties = _top_cut(keys, names, k)
    for n in names:
        key = keys[n]
        sel = key > cut
        if ties > 0:
            eq = (key == cut).nonzero().squeeze(1)[:ties]
            sel[eq] = True
            ties -= eq.numel()
        parts.append(np.packbits(sel.cpu().numpy()))
    return BitsetMask(names, shapes, np.concatenate(parts))


class _LazyKeys(Mapping[str, torch.Tensor]):
    """Keys computed per tensor when read (memory: one tensor's keys at a time)."""

    def __init__(self, grads: Mapping[str, torch.Tensor]) -> None:
        self.grads = grads

    def __getitem__(self, name: str) -> torch.Tensor:
        return _keys(self.grads[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.grads)

    def __len__(self) -> int:
        return len(self.grads)


def overlap_from_bitsets(bitsets: Sequence[BitsetMask | np.ndarray], chunk_bytes: int = 1 << 22) -> np.ndarray:
    """Jaccard ``|M_a ∩ M_b| / |M_a ∪ M_b|`` of every pair of bitsets (NaN where both are empty).

    Reads ``chunk_bytes`` of every bitset at a time (memory: T × chunk, whatever the model size) and
    counts intersections with popcounts: T²/2 × N/8 byte operations in all.
    """
    arrs = [b.bits if isinstance(b, BitsetMask) else b for b in bitsets]
    t = len(arrs)
    out = np.full((t, t), np.nan)
    if t == 0:
        return out
    n = arrs[0].shape[0]
    if any(a.shape[0] != n for a in arrs):
        raise ValueError("bitsets of different lengths")
    inter = np.zeros((t, t), dtype=np.int64)
    for start in range(0, n, chunk_bytes):
        block = np.stack([np.asarray(a[start:start + chunk_bytes]) for a in arrs])
        for a in range(t):
            inter[a, a:] += np.bitwise_count(block[a] & block[a:]).sum(axis=1, dtype=np.int64)
    sizes = np.diag(inter).copy()
    for a in range(t):
        for b in range(a, t):
            union = sizes[a] + sizes[b] - inter[a, b]
            out[a, b] = out[b, a] = inter[a, b] / union if union else np.nan
    return out
