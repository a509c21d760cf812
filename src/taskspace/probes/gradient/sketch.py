"""Gradient sketches: cosines of ḡ_a, ḡ_b from k numbers per task instead of one model per task (docs/design.md, "Scale").

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
sketched to ``module_dim`` buckets with the same hash: a module's sketch is its share of the total's
``dim`` buckets folded to ``module_dim`` (bucket mod ``module_dim``), so one scatter per coordinate
serves both. On a CPU the hash codes are computed once per run and kept as int16 (2 bytes a
parameter, :meth:`SketchSet.codes`): hashing costs more than the scatter. :class:`SketchSet` holds, per task, the total
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


def tensor_key(seed: int, name: str, domain: str = "sketch") -> int:
    """A 31-bit key for parameter ``name`` under ``seed`` (stable across processes, unlike ``hash``);
    ``domain`` separates the uses of the hash (the sketch, the random-mask control)."""
    h = hashlib.sha256(f"{domain}\x00{int(seed)}\x00{name}".encode()).digest()
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


def signed_codes(key: int, start: int, stop: int, dim: int, device: Any = "cpu") -> torch.Tensor:
    """Bucket and sign of positions ``start … stop-1`` as one int32 code in ``[0, 2·dim)``: ``h(i)`` for
    sign +1, ``dim + h(i)`` for −1. Scattering values into ``2·dim`` slots by code and subtracting the
    upper half from the lower gives the sketch without a separate sign multiplication."""
    bucket, sign = buckets_signs(key, start, stop, dim, device)
    return torch.where(sign, bucket, bucket + dim)


def sketch_tensor(g: torch.Tensor, key: int, dim: int) -> torch.Tensor:
    """``S(g)`` (float64, ``dim`` numbers) of one tensor ``g`` (any shape) under ``key``.

    Chunks of ``_CHUNK`` elements are scattered in float32 (about ``_CHUNK / dim`` values per bucket,
    so rounding is ~1e-7 relative) and accumulated in float64.
    """
    flat = g.detach().reshape(-1)
    out = torch.zeros(2 * dim, dtype=torch.float64, device=flat.device)
    for start in range(0, flat.numel(), _CHUNK):
        stop = min(flat.numel(), start + _CHUNK)
        codes = signed_codes(key, start, stop, dim, flat.device)
        out += torch.zeros(2 * dim, dtype=torch.float32, device=flat.device).index_add_(
            0, codes, flat[start:stop].float()).double()
    return out[:dim] - out[dim:]


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
        self._codes: dict[str, torch.Tensor] = {}

    def describe(self) -> dict:
        """What provenance records about the sketch."""
        return {"kind": KIND, "dim": self.dim, "seed": self.seed, "module_dim": self.module_dim,
                "exact_modules": sorted(self.exact_modules, key=self.order.index)}

    @property
    def numbers_per_task(self) -> int:
        return self.dim + sum(self.module_sizes[m] if m in self.exact_modules else self.module_dim
                              for m in self.order)

    # -- the hash codes ------------------------------------------------------------------------
    def codes(self, name: str, start: int, stop: int, device: Any = "cpu") -> torch.Tensor:
        """int32 codes (:func:`signed_codes`) of positions ``start … stop-1`` of parameter ``name``.

        On a CPU the codes of a tensor are hashed once and kept as int16 (2 bytes a parameter, when
        ``2·dim ≤ 65,536``, i.e. up to the default k): hashing costs ~2 ns a coordinate, more than the
        scatter itself, and every task would pay it again. On a GPU hashing is nearly free and memory
        dear, so codes are recomputed per chunk there (they are the same numbers)."""
        dev = torch.device(device)
        cached = self.cached_codes(name) if dev.type == "cpu" else None
        if cached is None:
            return signed_codes(self.keys[name], start, stop, self.dim, dev)
        return cached[start:stop].to(torch.int32).add_(1 << 15)

    def cached_codes(self, name: str) -> torch.Tensor | None:
        """The CPU cache of :meth:`codes` for a whole tensor: int16 ``code − 32768`` (built on first
        use); None when the codes do not fit 16 bits (``2·dim > 65,536``)."""
        if 2 * self.dim > (1 << 16):
            return None
        cached = self._codes.get(name)
        if cached is None:
            n = math.prod(self.shapes[name])
            cached = torch.empty(n, dtype=torch.int16)
            for a in range(0, n, _CHUNK):
                b = min(n, a + _CHUNK)
                cached[a:b] = signed_codes(self.keys[name], a, b, self.dim).sub_(1 << 15)
            self._codes[name] = cached
        return cached

    # -- sketching ------------------------------------------------------------------------------
    def start(self, device: Any = "cpu") -> "TaskSketch":
        """An empty sketch of one task's gradient, to be fed one chunk at a time (:class:`TaskSketch`)."""
        return TaskSketch(self, torch.device(device))

    def sketch(self, grads: Mapping[str, torch.Tensor | None]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(total sketch, ``{module: vector}``) of one gradient given per tensor (None = zero)."""
        present = [v for v in grads.values() if v is not None]
        ts = self.start(present[0].device if present else "cpu")
        for n in self.param_names:
            g = grads.get(n)
            flat = (g.detach() if g is not None else torch.zeros(self.shapes[n])).reshape(-1)
            for a in range(0, flat.numel(), _CHUNK):
                ts.add(n, a, flat[a:a + _CHUNK])
            ts.end_tensor(n)
        return ts.finish()

    def keep(self, task: str, total: np.ndarray, mods: Mapping[str, np.ndarray]) -> None:
        """Keep one task's sketch (:attr:`numbers_per_task` float32 numbers)."""
        self.tasks.append(task)
        # kept in float32 (4 bytes a number, as module_dim_for budgets); products run in float64
        self._total.append(np.asarray(total, dtype=np.float32))
        for m in self.order:
            self._mods[m].append(np.asarray(mods[m], dtype=np.float32))

    def add(self, task: str, grads: Mapping[str, torch.Tensor | None]) -> None:
        """Sketch ḡ_t of ``task`` and keep only the sketch (:attr:`numbers_per_task` float32 numbers)."""
        self.keep(task, *self.sketch(grads))

    def reorder(self, tasks: Sequence[str]) -> None:
        """Put the kept sketches in the order of ``tasks`` (the tasks kept, reordered): the split-half pass's
        one-pass route sketches the halves t~1, t~2 of each task in turn, and its space lists every t~1 first.
        The rows themselves are untouched, so the Gram matrix is the one of sketches kept in that order."""
        if sorted(tasks) != sorted(self.tasks):
            raise ValueError("reorder takes the tasks kept, in another order")
        at = [self.tasks.index(t) for t in tasks]
        self.tasks = list(tasks)
        self._total = [self._total[i] for i in at]
        self._mods = {m: [v[i] for i in at] for m, v in self._mods.items()}

    def sibling(self) -> "SketchSet":
        """An empty sketch set with the same parameters, ``dim``, seed and module sketches, sharing this one's
        CPU cache of hash codes (:meth:`cached_codes`), so sketching a second set of tasks in the same pass
        (the halves beside the full tasks) neither hashes again nor keeps a second cache."""
        other = SketchSet(self.param_names, self.shapes, self.modules, dim=self.dim, seed=self.seed,
                          module_dim=self.module_dim)
        other._codes = self._codes
        return other

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


class TaskSketch:
    """One task's sketch, built a chunk at a time: the gradient probe reads each chunk of ``.grad``
    once and hands it here, to the statistics and to the mask's histogram (docs/design.md, "Scale").

    Each chunk is scattered by its codes into ``2·dim`` float32 slots; at the end of a tensor the slots
    are added in float64 to the total and to the tensor's module. A module's sketch is the fold of its
    share of the total (bucket mod ``module_dim``), so one scatter serves both; modules kept exactly
    copy their values. Threads that sketch different tensors each use their own TaskSketch and
    :meth:`merge` them (sums, so the result does not depend on which thread took which tensor)."""

    def __init__(self, sk: SketchSet, device: torch.device) -> None:
        self.sk = sk
        self.device = device
        self._slots = torch.zeros(2 * sk.dim, dtype=torch.float32, device=device)
        self._total = torch.zeros(2 * sk.dim, dtype=torch.float64, device=device)
        self._mods: dict[str, torch.Tensor] = {}
        self._exact: dict[str, list[torch.Tensor]] = {}     # by parameter name

    def add(self, name: str, start: int, part: torch.Tensor) -> None:
        """Scatter ``part`` = elements ``start …`` of parameter ``name`` (flat); ``part`` is not kept."""
        v = part if part.dtype == torch.float32 else part.float()
        self._slots.index_add_(0, self.sk.codes(name, start, start + v.numel(), v.device), v)
        if self.sk.modules[name] in self.sk.exact_modules:
            self._exact.setdefault(name, []).append(v.double().cpu())

    def add_slots(self, name: str) -> torch.Tensor:
        """The float32 ``2·dim`` slots a compiled loop scatters tensor ``name`` into (flushed by
        :meth:`end_tensor`); None for a module kept exactly, whose values must be copied (:meth:`add`)."""
        return None if self.sk.modules[name] in self.sk.exact_modules else self._slots

    def end_tensor(self, name: str) -> None:
        """Flush the tensor's slots into the total and its module (after its last chunk)."""
        s = self._slots.double()
        self._slots.zero_()
        self._total += s
        m = self.sk.modules[name]
        if m not in self.sk.exact_modules:
            if m in self._mods:
                self._mods[m] += s
            else:
                self._mods[m] = s

    def merge(self, other: "TaskSketch") -> "TaskSketch":
        """Add ``other``'s tensors (disjoint from this one's) into this sketch."""
        self._total += other._total
        for m, v in other._mods.items():
            self._mods[m] = self._mods[m] + v if m in self._mods else v
        self._exact.update(other._exact)
        return self

    def finish(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(total sketch, ``{module: vector}``), as :meth:`SketchSet.sketch` returns them."""
        sk = self.sk
        d, md = sk.dim, sk.module_dim
        fold = None
        out: dict[str, np.ndarray] = {m: [] for m in sk.exact_modules}
        for n in sk.param_names:       # exact modules: values in parameter order
            if n in self._exact:
                out[sk.modules[n]].extend(self._exact[n])
        for m in sk.order:
            if m in sk.exact_modules:
                parts = out[m]
                out[m] = (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)).numpy()
                continue
            s = self._mods.get(m)
            v = s[:d] - s[d:] if s is not None else torch.zeros(d, dtype=torch.float64, device=self.device)
            if md != d:
                if fold is None:
                    fold = torch.arange(d, device=self.device) % md
                v = torch.zeros(md, dtype=torch.float64, device=self.device).index_add_(0, fold, v)
            out[m] = v.cpu().numpy()
        return (self._total[:d] - self._total[d:]).cpu().numpy(), out
