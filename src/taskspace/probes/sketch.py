"""Gradient sketches: cosines of ḡ_a, ḡ_b from k numbers per task instead of one model per task (DESIGN §4).

A *count sketch* (a sparse sign sketch, SJLT with one non-zero per column) maps a vector ``g`` of N
coordinates to ``k`` buckets: coordinate ``i`` goes to bucket ``h(i)`` with sign ``s(i) ∈ {±1}``,

    S(g)[j] = Σ_{i: h(i) = j} s(i) · g_i .

Inner products are unbiased, ``E[⟨S(a), S(b)⟩] = ⟨a, b⟩`` (cross terms cancel in expectation because
the signs are independent), and the cosine error falls as about ``√((1 + cos²) / k)``. The cost is one
pass over the coordinates — linear in N whatever k is — where a dense Gaussian projection of 210M
coordinates to 8,192 would be 1.7e12 multiply-adds per task.

``h`` and ``s`` are never stored: they come from a hash of (seed, parameter name, position in the
tensor), computed in 32-bit integer arithmetic (murmur3's finaliser) on the tensor's own device, so

- the sketch of a tensor depends only on the seed, its name and its values — not on the order in
  which tensors arrive, nor on other tensors;
- CPU and CUDA give the same buckets and signs (no device-specific random generator);
- memory is one chunk of hashes at a time (``_CHUNK`` elements), never a projection matrix.

Per-module spaces get per-module sketches: a module with at most ``module_dim`` coordinates (layer
norms, biases) is kept exactly — a sketch of it would be larger than the module — and the others are
sketched to ``module_dim`` buckets with the same hash. :class:`SketchSet` holds, per task, the total
sketch (``dim`` numbers) and the per-module vectors; that is all a task leaves behind.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .modules import module_order

#: elements hashed at a time: bounds the temporary memory of a sketch (int32 hashes + signed values).
#: 1M elements = 4 MB temporaries: small enough for glibc to recycle them from its heap; a fresh
#: mmap'd buffer per chunk costs a page fault per 4 KiB (measured: ~1.3M minor faults per task at 210M
#: with 4M-element chunks and whole-tensor temporaries elsewhere).
_CHUNK = 1 << 20
# murmur3 fmix32 constants as signed int32 (torch multiplies int32 with wrap-around)
_C1 = 0x85EBCA6B - (1 << 32)
_C2 = 0xC2B2AE35 - (1 << 32)
#: the sketch's name in provenance
KIND = "count sketch (murmur3-hashed bucket and sign per coordinate)"


def tensor_key(seed: int, name: str) -> int:
    """A 31-bit key for parameter ``name`` under ``seed`` (stable across processes, unlike ``hash``)."""
    h = hashlib.sha256(f"sketch\x00{int(seed)}\x00{name}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser, in place on an int32 tensor (logical shifts via masks: torch's
    ``>>`` on int32 is arithmetic)."""
    x ^= (x >> 16) & 0xFFFF
    x *= _C1
    x ^= (x >> 13) & 0x7FFFF
    x *= _C2
    x ^= (x >> 16) & 0xFFFF
    return x


def hashes(key: int, start: int, stop: int, device: Any = "cpu") -> torch.Tensor:
    """The int32 hash of positions ``start … stop-1`` of the tensor with ``key`` (see :func:`tensor_key`)."""
    x = torch.arange(start, stop, dtype=torch.int32, device=device)
    # wrap the key into int32 range before adding: positions < 2^31 and key < 2^31
    x += key if key < (1 << 31) else key - (1 << 32)
    return _fmix32(x)


def buckets_signs(key: int, start: int, stop: int, dim: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket ``h(i) ∈ [0, dim)`` (int32) and sign bit (True = +1) of positions ``start … stop-1``."""
    x = hashes(key, start, stop, device)
    sign = (x & 1).bool()
    if dim & (dim - 1) == 0:
        # a power of two: a mask of the low bits above the sign bit (same as % dim, cheaper)
        bucket = (x >> 1) & (dim - 1)
    else:
        bucket = ((x >> 1) & 0x7FFFFFFF) % dim
    return bucket, sign


def sketch_tensor(g: torch.Tensor, key: int, dim: int) -> torch.Tensor:
    """``S(g)`` (float64, ``dim`` numbers) of one tensor ``g`` (any shape) under ``key``.

    Chunks of ``_CHUNK`` elements are scattered in float32 (about ``_CHUNK / dim`` values per bucket,
    so rounding is ~1e-7 relative) and accumulated in float64.
    """
    flat = g.detach().reshape(-1)
    out = torch.zeros(dim, dtype=torch.float64, device=flat.device)
    for start in range(0, flat.numel(), _CHUNK):
        stop = min(flat.numel(), start + _CHUNK)
        bucket, sign = buckets_signs(key, start, stop, dim, flat.device)
        v = flat[start:stop].float()
        v = torch.where(sign, v, -v)
        out += torch.zeros(dim, dtype=torch.float32, device=flat.device).index_add_(0, bucket, v).double()
    return out


def module_dim_for(dim: int, n_modules: int, budget_bytes: int = 8 << 20) -> int:
    """Buckets per module sketch: ``dim``, unless ``n_modules × dim`` float32 numbers per task exceed
    ``budget_bytes`` (8 MiB by default, so 67 tasks hold < 0.6 GB of module sketches); then the
    largest power of two that fits (at least 1,024)."""
    if n_modules * dim * 4 <= budget_bytes:
        return dim
    d = 1 << int(math.floor(math.log2(max(1, budget_bytes // (4 * max(1, n_modules))))))
    return max(1024, min(dim, d))


class SketchSet:
    """Per task: the count sketch of ḡ_t over all parameters (``dim`` numbers) and one vector per
    module (exact when the module has at most ``module_dim`` coordinates, else its own sketch).

    Build with :meth:`add` straight from the gradients in ``.grad`` (one tensor at a time, nothing
    kept but the sketch), then :meth:`gram` for ``G[a, b] ≈ ḡ_a · ḡ_b`` in total and per module.
    """

    def __init__(self, param_names: Sequence[str], shapes: Mapping[str, Sequence[int]],
                 modules: Mapping[str, str], *, dim: int = 32768, seed: int = 0,
                 module_dim: int | None = None) -> None:
        if dim < 1:
            raise ValueError(f"sketch dimension must be >= 1, got {dim}")
        self.param_names = list(param_names)
        self.shapes = {n: tuple(int(s) for s in shapes[n]) for n in self.param_names}
        self.modules = {n: modules[n] for n in self.param_names}
        self.order = module_order(self.modules.values())
        self.dim = int(dim)
        self.seed = int(seed)
        self.module_dim = int(module_dim if module_dim is not None else module_dim_for(dim, len(self.order)))
        self.keys = {n: tensor_key(seed, n) for n in self.param_names}
        sizes: dict[str, int] = {m: 0 for m in self.order}
        for n in self.param_names:
            sizes[self.modules[n]] += math.prod(self.shapes[n])
        self.module_sizes = sizes
        # a module no larger than its sketch is kept exactly (fewer numbers, no error)
        self.exact_modules = {m for m, s in sizes.items() if s <= self.module_dim}
        self.tasks: list[str] = []
        self._total: list[np.ndarray] = []
        self._mods: dict[str, list[np.ndarray]] = {m: [] for m in self.order}

    def describe(self) -> dict:
        """What provenance records about the sketch."""
        return {"kind": KIND, "dim": self.dim, "seed": self.seed, "module_dim": self.module_dim,
                "exact_modules": sorted(self.exact_modules, key=self.order.index)}

    @property
    def numbers_per_task(self) -> int:
        return self.dim + sum(self.module_sizes[m] if m in self.exact_modules else self.module_dim
                              for m in self.order)

    def sketch(self, grads: Mapping[str, torch.Tensor | None]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(total sketch, ``{module: vector}``) of one gradient given per tensor (None = zero)."""
        total = None
        mods: dict[str, Any] = {}
        for n in self.param_names:
            g = grads.get(n)
            m = self.modules[n]
            if g is None:
                g = torch.zeros(self.shapes[n])
            v = sketch_tensor(g, self.keys[n], self.dim)
            total = v if total is None else total + v.to(total.device)
            if m in self.exact_modules:
                mods.setdefault(m, []).append(g.detach().reshape(-1).double().cpu())
            else:
                w = v if self.module_dim == self.dim else sketch_tensor(g, self.keys[n], self.module_dim)
                mods[m] = w if m not in mods else mods[m] + w
        out_mods = {}
        for m in self.order:
            x = mods[m]
            out_mods[m] = (torch.cat(x) if isinstance(x, list) else x).cpu().numpy()
        assert total is not None
        return total.cpu().numpy(), out_mods

    def add(self, task: str, grads: Mapping[str, torch.Tensor | None]) -> None:
        """Sketch ḡ_t of ``task`` and keep only the sketch (:attr:`numbers_per_task` float32 numbers)."""
        total, mods = self.sketch(grads)
        self.tasks.append(task)
        # kept in float32 (4 bytes a number, as module_dim_for budgets); products run in float64
        self._total.append(total.astype(np.float32))
        for m in self.order:
            self._mods[m].append(mods[m].astype(np.float32))

    def vectors(self, module: str | None = None) -> np.ndarray:
        """tasks × numbers: the total sketches, or one module's vectors."""
        rows = self._total if module is None else self._mods[module]
        return np.stack(rows).astype(np.float64) if rows else np.zeros((0, 0))

    def gram(self, per_module: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``G[a, b] = ⟨S(ḡ_a), S(ḡ_b)⟩`` (an unbiased estimate of ``ḡ_a · ḡ_b``) and per module."""
        s = self.vectors()
        total = s @ s.T
        by_module = {}
        if per_module:
            for m in self.order:
                v = self.vectors(m)
                by_module[m] = v @ v.T
        return total, by_module

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in self._total) + sum(x.nbytes for v in self._mods.values() for x in v)
