"""Masks as packed bitsets, found from a gradient one tensor at a time (docs/design.md, "Scale":
masks without kept gradients).

:func:`top_fraction_mask` in :mod:`.masks` concatenates ``|ḡ|`` over all parameters (a float32 copy of
the model, then ``nan_to_num``, ``kthvalue`` and a boolean copy: ~4 model-sized allocations per task).
Here the same mask is found in two passes over the tensors (:class:`TopCut`), each touching one
chunk of one tensor at a time:

1. a histogram of the top 16 bits of ``|ḡ|``'s float32 bit pattern (for non-negative floats the bit
   pattern, read as an integer, is monotone in the value), which finds the 16-bit bin holding the
   k-th largest magnitude — in the sketch mode this rides along the pass that sketches the gradient;
2. the entries above that bin are set; the few inside it (their positions and keys) are collected
   and the largest taken, ties in parameter then row-major order — the tie rule of
   :func:`~taskspace.probes.gradient.masks.top_fraction_mask`, so the two masks are identical (a NaN is
   never "large": it ranks below every magnitude, as there). A bin too full to collect falls back
   to a histogram of its low 16 bits and a third pass.

The result is a :class:`BitsetMask`: 1 bit per parameter, each tensor's bits packed from a byte
boundary (≤ 1 byte of padding per tensor, always zero), readable lazily one tensor at a time — which
is all FTGD needs — and saved to disk as a ``.npy`` file so the masks of T tasks take no memory.
:func:`random_bitset` draws the random-mask control the same way, from hashed keys.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from ...errors import InputError
from ...io import atomic_path
from ..settings import MASK_FRACTION
from .sketch import hashes, tensor_key

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


class TopCut:
    """The exact top ``k`` of ``|ḡ|`` over all tensors as a :class:`BitsetMask`, in two streamed passes.

    1. :meth:`observe` every chunk of sort keys (:func:`_keys`): a histogram of their top 16 bits,
       which locates the 16-bit bin ``b`` holding the k-th largest magnitude;
    2. :meth:`select` reads the keys once more: entries above bin ``b`` are in; entries inside it
       (a relative width of 2⁻⁷ in magnitude: ~0.2% of a Gaussian's coordinates at the 5% cut) are
       collected with their positions and the ``need`` largest taken, ties in parameter then
       row-major order — the rule of :func:`~taskspace.probes.gradient.masks.top_fraction_mask`.

    If bin ``b`` holds more than ``cap`` entries (a gradient with a long run of equal values at the
    cut) or the cut falls among NaNs, :meth:`select` falls back to a histogram of the low 16 bits
    inside bin ``b`` and a third pass; the mask is the same either way.
    """

    def __init__(self, k: int, device: Any = "cpu", cap: int = 1 << 23) -> None:
        self.k = int(k)
        self.cap = int(cap)
        # bin 0 counts NaNs (key −1), bin 1 + h the keys whose top 16 bits are h
        self.hist = torch.zeros(_HI_BINS + 1, dtype=torch.int64, device=device)

    def observe(self, keys: torch.Tensor, nan_free: bool = False) -> None:
        """Count one chunk of keys; ``nan_free`` (the caller knows the chunk is finite) saves a pass."""
        if nan_free:
            self.hist[1:] += torch.bincount(keys >> 16, minlength=_HI_BINS)
        else:
            self.hist += torch.bincount((keys >> 16) + 1, minlength=_HI_BINS + 1)

    def merge(self, other: "TopCut") -> "TopCut":
        """Add another histogram of the same cut (chunks observed by another thread)."""
        self.hist += other.hist.to(self.hist.device)
        return self

    def plan(self) -> tuple[int, int] | None:
        """(bin ``b`` of the cut, number of entries above bin ``b``), or None when the cut falls
        among NaNs (more entries asked for than there are numbers): then only the fallback applies."""
        hi = self.hist[1:].cpu()
        if self.k > int(hi.sum()):
            return None
        above = torch.flip(torch.cumsum(torch.flip(hi, [0]), 0), [0])   # above[b] = #keys with hi >= b
        b = int((above >= self.k).nonzero().max())
        return b, (int(above[b + 1]) if b + 1 < _HI_BINS else 0)

    @staticmethod
    def scan(flat: torch.Tensor, b: int, base: int,
             limit: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor] | None:
        """Pass 2 over one tensor's keys: (packed bits of the keys above bin ``b``, positions — offset
        by ``base`` bits — and keys of the entries inside bin ``b``); None as soon as more than
        ``limit`` entries fall inside bin ``b`` (memory stays bounded; the caller falls back)."""
        hi_min = (b + 1) << 16
        parts, pos, key = [], [], []
        n = 0
        for start in range(0, flat.numel(), _STEP):
            part = flat[start:start + _STEP]
            idx = ((part >> 16) == b).nonzero().squeeze(1)
            if idx.numel():
                n += idx.numel()
                if n > limit:
                    return None
                pos.append(idx.cpu() + (base + start))
                key.append(part[idx].cpu())
            # _STEP is a multiple of 8: the chunks' packed bytes line up with the tensor's
            parts.append(np.packbits((part >= hi_min).cpu().numpy()))
        cat = (lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt))
        return (np.concatenate(parts) if parts else np.zeros(0, np.uint8), cat(pos, torch.int64),
                cat(key, torch.int32))

    def assemble(self, names: Sequence[str], shapes: Mapping[str, Sequence[int]], greater: int,
                 scans: Sequence[tuple[np.ndarray | None, Any, Any] | None],
                 bits: np.ndarray | None = None) -> BitsetMask | None:
        """The mask from the per-tensor :meth:`scan` results (in ``names`` order); None when bin ``b``
        held more than ``cap`` entries (then use the fallback). ``bits``: the packed bits of every
        tensor already in place (then the scans' own bits are None and not read)."""
        if any(s is None for s in scans) or sum(len(s[1]) for s in scans) > self.cap:
            return None
        if bits is None:
            bits = np.concatenate([s[0] for s in scans]) if scans else np.zeros(0, np.uint8)
        pos = np.concatenate([np.asarray(s[1], dtype=np.int64) for s in scans])
        key = np.concatenate([np.asarray(s[2]) for s in scans]).astype(np.int64)
        need = self.k - greater
        # the need-th largest candidate key (linear time), then every key above it and the first of
        # those equal to it — ``pos`` ascends (tensors in order, positions in order): the tie rule
        cut = np.partition(key, key.size - need)[key.size - need]
        above = key > cut
        eq = np.flatnonzero(key == cut)[:need - int(above.sum())]
        win = np.sort(np.concatenate([pos[above], pos[eq]]))
        if win.size:
            byte = win >> 3
            starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
            bits[byte[starts]] |= np.bitwise_or.reduceat((0x80 >> (win & 7)).astype(np.uint8), starts)
        return BitsetMask(names, shapes, bits)

    def select(self, keys: Mapping[str, torch.Tensor], names: Sequence[str],
               shapes: Mapping[str, Sequence[int]]) -> BitsetMask:
        """The mask, reading ``keys[name]`` (flat int32 keys) once per tensor (twice on the fallback)."""
        planned = self.plan()
        if planned is not None:
            b, greater = planned
            scans, base, left = [], 0, self.cap
            for n in names:
                flat = keys[n]
                scans.append(self.scan(flat, b, base, left))
                if scans[-1] is None:
                    break
                left -= scans[-1][1].numel()
                base += 8 * ((flat.numel() + 7) // 8)
            mask = self.assemble(names, shapes, greater, scans) if len(scans) == len(names) else None
            if mask is not None:
                return mask
        return _select_exact(keys, names, shapes, self.k)


def _select_exact(keys: Mapping[str, torch.Tensor], names: Sequence[str], shapes: Mapping[str, Sequence[int]],
                  k: int) -> BitsetMask:
    """The fallback of :meth:`TopCut.select`: the exact cut from two histograms, then a third pass."""
    cut, ties = _top_cut(keys, names, k)
    parts = []
    for n in names:
        key = keys[n]
        sel = key > cut
        if ties > 0:
            eq = (key == cut).nonzero().squeeze(1)[:ties]
            sel[eq] = True
            ties -= eq.numel()
        parts.append(np.packbits(sel.cpu().numpy()))
    return BitsetMask(names, shapes, np.concatenate(parts))


def gradient_bitset(grads: Mapping[str, torch.Tensor], names: Sequence[str] | None = None, *,
                    fraction: float | None = MASK_FRACTION, threshold: float | None = None,
                    overwrite: bool = False, cap: int = 1 << 23) -> BitsetMask:
    """The gradient mask of ``grads`` as a :class:`BitsetMask`, one tensor at a time.

    ``threshold`` given: ``|ḡ| ≥ τ`` (as :func:`~taskspace.probes.gradient.masks.threshold_mask`); else the top
    ``round(fraction · N)`` entries of ``|ḡ|`` with the ties rule of
    :func:`~taskspace.probes.gradient.masks.top_fraction_mask` (the same mask, bit for bit; :class:`TopCut`).

    ``overwrite=True`` (top fraction, float32 tensors) turns ``grads`` into their sort keys in place:
    the passes then share one set of keys instead of recomputing ``|g|`` (an allocation the
    size of each tensor) each time. Use it on a gradient buffer that is reset afterwards.
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
        return full_bitset(shapes, names, k > 0)
    if overwrite and all(grads[n].dtype == torch.float32 for n in names):
        keys: Mapping[str, torch.Tensor] = {n: _keys_in_place(grads[n]) for n in names}
    else:
        keys = _LazyKeys(grads)
    cut = TopCut(k, grads[names[0]].device, cap=cap)
    for n in names:
        for part in keys[n].split(_STEP):
            cut.observe(part)
    return cut.select(keys, names, shapes)


def random_bitset(shapes: Mapping[str, Sequence[int]], size: float | int, seed: int) -> BitsetMask:
    """A uniformly random mask of exactly ``round(size · N)`` entries (``size`` an int: that count) —
    the random-mask control — without a permutation of all N positions (a randperm of a 1B model is
    8 GB of int64). Each position gets a pseudo-random key from a hash of (seed, parameter name,
    position), the sketch's hash under another domain; the mask is the top ``k`` keys, found by
    :class:`TopCut` one tensor at a time, so memory is one tensor's keys and the mask is the same on
    every device and in every mode."""
    names = list(shapes)
    shapes = {n: tuple(int(x) for x in shapes[n]) for n in names}
    n_total = sum(math.prod(s) for s in shapes.values())
    k = int(size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else int(round(size * n_total))
    if not 0 <= k <= n_total:
        raise InputError(f"random mask size must be within 0 … {n_total}, got {k}", field="mask_fraction")
    if k == 0 or k == n_total:
        return full_bitset(shapes, names, k > 0)
    keys = _HashKeys({n: (tensor_key(seed, n, domain="random-mask"), math.prod(shapes[n])) for n in names})
    cut = TopCut(k)
    for n in names:
        for part in keys[n].split(_STEP):
            cut.observe(part, nan_free=True)
    return cut.select(keys, names, shapes)


class _HashKeys(Mapping[str, torch.Tensor]):
    """Non-negative int32 pseudo-random keys of every position of a tensor, computed when read."""

    def __init__(self, spec: Mapping[str, tuple[int, int]]) -> None:
        self.spec = spec

    def __getitem__(self, name: str) -> torch.Tensor:
        key, n = self.spec[name]
        return hashes(key, 0, n) & 0x7FFFFFFF

    def __iter__(self) -> Iterator[str]:
        return iter(self.spec)

    def __len__(self) -> int:
        return len(self.spec)


def full_bitset(shapes: Mapping[str, Sequence[int]], names: Sequence[str], value: bool) -> BitsetMask:
    """Every bit set (``value``) or none."""
    parts = [np.packbits(np.full(math.prod(shapes[n]), value, dtype=bool)) for n in names]
    return BitsetMask(names, shapes, np.concatenate(parts) if parts else np.zeros(0, np.uint8))


class _LazyKeys(Mapping[str, torch.Tensor]):
    """Keys computed per tensor when read (memory: one tensor's keys at a time); ``ready``: keys
    already at hand (a gradient buffer turned into its keys in place), returned as they are."""

    def __init__(self, grads: Mapping[str, torch.Tensor], ready: Mapping[str, torch.Tensor] | None = None) -> None:
        self.grads = grads
        self.ready = ready or {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.ready:
            return self.ready[name]
        return _keys(self.grads[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.grads)

    def __len__(self) -> int:
        return len(self.grads)


def _whole_file_map(a: np.ndarray) -> bool:
    """True for a memory map of a whole ``.npy`` file's data (a slice's ``offset`` would be wrong)."""
    return (isinstance(a, np.memmap) and bool(a.filename) and a.ndim == 1
            and a.offset + a.nbytes == os.path.getsize(a.filename))


def overlap_from_bitsets(bitsets: Sequence[BitsetMask | np.ndarray], chunk_bytes: int = 1 << 16) -> np.ndarray:
    """Jaccard ``|M_a ∩ M_b| / |M_a ∪ M_b|`` of every pair of bitsets (NaN where both are empty).

    Reads ``chunk_bytes`` of every bitset at a time and counts intersections with popcounts on 64-bit
    words: T²/2 × N/64 of them in all. The chunk is small (64 KB: T chunks and their ANDs stay in
    cache, and the working memory — 3 × T × chunk, preallocated — does not grow with the model; with
    4 MB chunks, 67 tasks took 0.8 GB at the end of a 210M probe and most of its time in memory
    traffic). Bitsets memory-mapped from disk (:meth:`BitsetMask.load`) are read with plain file reads:
    every page of a mapping that is touched counts in the process's resident memory until it is
    unmapped: at the end of a run that would be every bitset (T × N/8 bytes; 8.4 GB for 67 tasks at
    1B parameters).
    """
    arrs = [b.bits if isinstance(b, BitsetMask) else b for b in bitsets]
    t = len(arrs)
    out = np.full((t, t), np.nan)
    if t == 0:
        return out
    n = arrs[0].shape[0]
    if any(a.shape[0] != n for a in arrs):
        raise ValueError("bitsets of different lengths")
    chunk_bytes = max(8, chunk_bytes - chunk_bytes % 8)
    files = [open(a.filename, "rb") if _whole_file_map(a) else None for a in arrs]
    try:
        inter = np.zeros((t, t), dtype=np.int64)
        block = np.zeros((t, min(chunk_bytes, n + (-n) % 8)), dtype=np.uint8)
        both = np.empty((t, block.shape[1] // 8), dtype=np.uint64)
        ones = np.empty(both.shape, dtype=np.uint8)
        for start in range(0, n, chunk_bytes):
            width = min(chunk_bytes, n - start)
            for i, (a, f) in enumerate(zip(arrs, files)):
                if f is None:
                    block[i, :width] = a[start:start + width]
                else:
                    f.seek(a.offset + start)
                    if f.readinto(memoryview(block[i, :width])) != width:
                        raise ValueError(f"bitset file {a.filename} is shorter than its header says")
            if width < block.shape[1]:
                block[:, width:] = 0             # the last chunk: zero padding up to whole words
            words = block.view(np.uint64)
            for a in range(t):
                m = t - a
                np.bitwise_and(words[a], words[a:], out=both[:m])
                np.bitwise_count(both[:m], out=ones[:m])
                inter[a, a:] += ones[:m].sum(axis=1, dtype=np.int64)
    finally:
        for f in files:
            if f is not None:
                f.close()
    sizes = np.diag(inter).copy()
    for a in range(t):
        for b in range(a, t):
            union = sizes[a] + sizes[b] - inter[a, b]
            out[a, b] = out[b, a] = inter[a, b] / union if union else np.nan
    return out
