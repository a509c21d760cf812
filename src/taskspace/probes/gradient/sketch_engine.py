"""The sketch mode's streaming engine (docs/design.md, "Probes"): one read of each task's gradient, chunk
by chunk, feeds its count sketch, its distributedness row and its bitset mask, so nothing of the model's
size is kept per task.

- :func:`one_pass`: the work on one task's gradient, split over threads;
- :class:`StreamedStats` / :func:`streamed_stats`: the distributedness row, fed one chunk at a time;
- :func:`task_bitset`: a threshold or random mask as a bitset, one tensor at a time;
- :class:`BitsetMaskSet`, :class:`SketchedGradients`: what the sketch mode keeps instead of the gradients.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..output import task_filename
from ..settings import ProbeSettings
from . import kernels
from .bitsets import (
    BitsetMask,
    TopCut,
    _keys,
    _LazyKeys,
    _select_exact,
    full_bitset,
    gradient_bitset,
    random_bitset,
)
from .masks import task_seed
from .modules import layer_index, module_order
from .sketch import SketchSet

# empty stand-ins for a compiled loop's unused arguments (numba needs arrays of the right type)
_NO_CODES = np.zeros(0, np.int16)
_NO_SLOTS = np.zeros(0, np.float32)
_NO_HIST = np.zeros(0, np.int64)


class SketchedGradients:
    """What is known of the gradients in sketch mode — tasks, groups, convention, pairs per task and
    provenance, the attributes callers read from a :class:`TaskGradients` — and no tensors (the
    sketches are :attr:`GradientProbeResult.sketches`)."""

    def __init__(self, tasks: list[str], groups: list[str], provenance: dict, convention: dict,
                 n_pairs: dict) -> None:
        self.tasks, self.groups, self.provenance = tasks, groups, provenance
        self.convention, self.n_pairs = convention, n_pairs


class BitsetMaskSet(Mapping[str, BitsetMask]):
    """The masks of every task as bitset files (``<folder>/<task>.npy``), memory-mapped when read."""

    def __init__(self, folder: Path, tasks: Sequence[str], desc: dict, keep: Any = None) -> None:
        self.folder = Path(folder)
        self.tasks = list(tasks)
        self._desc = desc
        self._keep = keep        # a TemporaryDirectory to keep alive as long as the masks are used

    def path(self, task: str) -> Path:
        return self.folder / f"{task_filename(task)}.npy"

    def describe(self) -> dict:
        return dict(self._desc)

    def mask_for(self, task: str, grad: Any = None) -> BitsetMask:
        if task not in self.tasks:
            raise KeyError(task)
        return BitsetMask.load(self.path(task))

    def __getitem__(self, task: str) -> BitsetMask:
        return self.mask_for(task)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


def task_bitset(grad: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]], task: str,
                settings: ProbeSettings, overwrite: bool = False) -> BitsetMask:
    """The mask of one task per ``settings`` as a bitset, from its gradient one tensor at a time:
    gradient (top fraction or ``|ḡ| ≥ τ``) or the seeded random mask of the same size.
    ``overwrite``: ``grad`` may be overwritten (see :func:`~taskspace.probes.gradient.bitsets.gradient_bitset`)."""
    if settings.mask_kind == "random":
        size: float | int = settings.mask_fraction
        if settings.mask_threshold is not None:
            size = gradient_bitset(grad, list(shapes), fraction=None,
                                   threshold=settings.mask_threshold).count()
        return random_bitset(shapes, size, task_seed(settings.seed, task))
    return gradient_bitset(grad, list(shapes), fraction=settings.mask_fraction,
                           threshold=settings.mask_threshold, overwrite=overwrite)


class StreamedStats:
    """The distributedness row of one task (as :func:`distributedness`), fed one chunk at a time:
    ``‖ḡ‖₂``, the participation ratio ``(Σ|g|)² / (n Σ g²)``, the mask size, the ``|ḡ|``-weighted
    layer centroid and ``share:<module>`` = the module's share of ``Σ|ḡ|``. Norms are reductions of
    each chunk (no ``|g|`` or ``g²`` temporary), summed over chunks in float64."""

    def __init__(self, modules: Mapping[str, str]) -> None:
        self.modules = modules
        self.mass: dict[str, float] = {m: 0.0 for m in module_order(modules.values())}
        self.s1 = self.s2 = 0.0
        self.n = 0

    def add(self, name: str, part: torch.Tensor) -> bool:
        """Count one chunk of parameter ``name``; True when the chunk is finite (no NaN or inf)."""
        t1 = float(torch.linalg.vector_norm(part, 1))
        t2 = float(torch.linalg.vector_norm(part, 2))
        self.s1 += t1
        self.s2 += t2 * t2
        self.n += part.numel()
        self.mass[self.modules[name]] += t1
        return np.isfinite(t1)

    def add_sums(self, name: str, s1: float, s2: float, n: int) -> None:
        """Count a whole tensor from its sums ``Σ|g|`` and ``Σg²`` (a compiled sweep's result)."""
        self.s1 += s1
        self.s2 += s2
        self.n += n
        self.mass[self.modules[name]] += s1

    def merge(self, other: "StreamedStats") -> None:
        """Add another accumulator's chunks (other tensors of the same task)."""
        self.s1 += other.s1
        self.s2 += other.s2
        self.n += other.n
        for m, v in other.mass.items():
            self.mass[m] += v

    def row(self, task: str, group: str, n_pairs: int | None, mask: BitsetMask | None) -> dict:
        s1, s2, n = self.s1, self.s2, self.n
        shares = {m: (v / s1 if s1 > 0 else float("nan")) for m, v in self.mass.items()}
        layered = {m: v for m, v in shares.items() if layer_index(m) is not None and np.isfinite(v)}
        lm = sum(layered.values())
        centroid = (sum(layer_index(m) * v for m, v in layered.items()) / lm) if lm > 0 else float("nan")
        row = {"task": task, "group": group, "n_pairs": n_pairs, "grad_norm": float(np.sqrt(s2)),
               "participation_ratio": s1 * s1 / (n * s2) if s2 > 0 else float("nan"),
               "mask_size": (mask.count() / mask.n_parameters if mask is not None and mask.n_parameters
                             else float("nan")),
               "layer_centroid": centroid}
        row.update({f"share:{m}": v for m, v in shares.items()})
        return row


def streamed_stats(task: str, group: str, n_pairs: int | None, grad: Mapping[str, torch.Tensor],
                   modules: Mapping[str, str], mask: BitsetMask | None) -> dict:
    """The distributedness row of one task, one tensor at a time (:class:`StreamedStats`)."""
    st = StreamedStats(modules)
    for name, g in grad.items():
        for part in g.detach().reshape(-1).split(_STEP):
            st.add(name, part)
    return st.row(task, group, n_pairs, mask)


#: elements per chunk of the sketch mode's pass over a task's gradient (4 MB of float32: the chunk
#: stays in cache while the sketch, the statistics and the mask's histogram read it)
_STEP = 1 << 20


@dataclass
class _Pass:
    """One task's pass over its gradient: the tensors, the sketch, the mask's size and how the work is
    split over threads (:func:`one_pass`)."""

    grads: Mapping[str, torch.Tensor]
    shared: set[str]
    sk: SketchSet | None
    modules: Mapping[str, str]
    shapes: Mapping[str, Sequence[int]]
    names: list[str]
    sizes: dict[str, int]
    device: torch.device
    k: int                      # parameters in the mask
    top: bool                   # a top-fraction gradient mask: the pass builds its histogram
    compiled: bool              # the compiled sweeps of kernels.py
    workers: int                # Python threads (1: none)
    groups: list[list[str]]     # tensors per thread

    @classmethod
    def plan(cls, grads: Mapping[str, torch.Tensor], shared: set[str], sk: SketchSet | None,
             stats: StreamedStats, settings: ProbeSettings, shapes: Mapping[str, Sequence[int]],
             compiled: bool | None) -> "_Pass":
        names = list(shapes)
        device = grads[names[0]].device if names else torch.device("cpu")
        sizes = {n: math.prod(shapes[n]) for n in names}
        k = int(round(settings.mask_fraction * sum(sizes.values())))
        top = settings.mask_kind == "gradient" and settings.mask_threshold is None and 0 < k < sum(sizes.values())
        workers = min(torch.get_num_threads(), len(names)) if device.type == "cpu" else 1
        # the compiled sweeps (kernels.py) on a CPU when numba is installed; compiled=False forces the torch path
        compiled = device.type == "cpu" and kernels.AVAILABLE and compiled is not False
        return cls(grads, shared, sk, stats.modules, shapes, names, sizes, device, k, top, compiled,
                   workers, _balanced(names, sizes, workers))


def one_pass(task: str, grads: Mapping[str, torch.Tensor], shared: set[str], sk: SketchSet | None,
             stats: StreamedStats, settings: ProbeSettings, shapes: Mapping[str, Sequence[int]],
             compiled: bool | None = None) -> BitsetMask:
    """The sketch mode's work on one task's gradient (in ``.grad``), in one read of each chunk:
    sketch, statistics and — for a top-fraction mask — the histogram of its sort keys, written over
    the chunk (the buffers are zeroed before the next task; ``shared`` zero stand-ins are not
    written); then :class:`~taskspace.probes.gradient.bitsets.TopCut` reads the keys once more for the mask.
    Threshold and random masks come from :func:`task_bitset`, which does not need the values kept.
    With numba installed, each CPU tensor is one compiled sweep per pass (:mod:`.kernels`) instead of
    a dozen torch operations per chunk; the results are the same (tested against each other).

    On a CPU the tensors are split over ``torch.get_num_threads()`` Python threads (one torch thread
    each): the scatter, the histograms and the bit packing are serial kernels, which would otherwise
    leave all cores but one idle. Every partial result is a sum or is per tensor, so the outcome does
    not depend on the split beyond float64 rounding (and not at all for a given thread count)."""
    p = _Pass.plan(grads, shared, sk, stats, settings, shapes, compiled)
    with _threads(p.workers) as pool:
        parts = list(pool.map(partial(_first_pass, p), p.groups)) if pool else [_first_pass(p, g) for g in p.groups]
        ts, cut, keys = _merge_first_passes(parts, stats)
        if ts is not None:
            sk.keep(task, *ts.finish())
        if not p.top:
            if settings.mask_kind == "gradient" and settings.mask_threshold is None:
                return full_bitset(shapes, p.names, p.k > 0)
            return task_bitset(grads, shapes, task, settings)
        key_of = _LazyKeys(grads, ready=keys)    # keys written in place, the others computed when read
        planned = cut.plan()
        if planned is not None:
            mask = _cut_mask(p, pool, cut, keys, key_of, *planned)
            if mask is not None:
                return mask
        return _select_exact(key_of, p.names, shapes, p.k)


def _first_pass(p: _Pass, group: list[str]) -> tuple:
    """The first read of the tensors ``group``: their sketch, statistics, key histogram and the keys
    written in place; returns ``(tensor sketch, statistics, TopCut, {name: keys})``."""
    ts = p.sk.start(p.device) if p.sk is not None else None
    st = StreamedStats(p.modules)
    cut = TopCut(p.k, p.device) if p.top else None
    keys: dict[str, Any] = {}
    for n in group:
        flat = p.grads[n].detach().reshape(-1)
        in_place = p.top and n not in p.shared and flat.dtype == torch.float32
        if not _compiled_sweep(p, n, flat, in_place, ts, st, cut, keys):
            _chunked_sweep(p, n, flat, in_place, ts, st, cut, keys)
    return ts, st, cut, keys


def _compiled_sweep(p: _Pass, n: str, flat: torch.Tensor, in_place: bool, ts: Any, st: StreamedStats,
                    cut: Any, keys: dict) -> bool:
    """One compiled sweep over tensor ``n`` (kernels.first_pass): the same slots, keys and histogram as
    :func:`_chunked_sweep`. False when the tensor does not qualify (nothing counted then)."""
    if not (p.compiled and flat.dtype == torch.float32 and flat.is_contiguous() and (in_place or not p.top)):
        return False
    slots = ts.add_slots(n) if ts is not None else None
    codes = p.sk.cached_codes(n) if slots is not None else None
    if not (ts is None or (slots is not None and codes is not None)):
        return False
    s1, s2 = kernels.first_pass(
        flat.numpy(), codes.numpy() if codes is not None else _NO_CODES,
        slots.numpy() if slots is not None else _NO_SLOTS,
        cut.hist.numpy() if p.top else _NO_HIST, codes is not None, in_place)
    st.add_sums(n, s1, s2, flat.numel())
    if ts is not None:
        ts.end_tensor(n)
    if p.top:
        keys[n] = flat.view(torch.int32)
    return True


def _chunked_sweep(p: _Pass, n: str, flat: torch.Tensor, in_place: bool, ts: Any, st: StreamedStats,
                   cut: Any, keys: dict) -> None:
    """The first read of tensor ``n`` in chunks of torch operations."""
    for start in range(0, flat.numel(), _STEP):
        part = flat[start:start + _STEP]
        if ts is not None:
            ts.add(n, start, part)
        finite = st.add(n, part)
        if in_place:
            part.abs_()
            kp = part.view(torch.int32)
            if not finite:
                kp.masked_fill_(torch.isnan(part), -1)
            cut.observe(kp, nan_free=finite)
        elif p.top:
            cut.observe(_keys(part))
    if ts is not None:
        ts.end_tensor(n)
    if in_place:
        keys[n] = flat.view(torch.int32)


def _merge_first_passes(parts: list[tuple], stats: StreamedStats) -> tuple:
    """Add the threads' first passes into the first one's (and ``stats``); returns its
    ``(tensor sketch, TopCut, keys)``."""
    ts, _, cut, keys = parts[0]
    stats.merge(parts[0][1])
    for t2, st2, c2, k2 in parts[1:]:
        stats.merge(st2)
        if ts is not None:
            ts.merge(t2)
        if cut is not None:
            cut.merge(c2)
        keys.update(k2)
    return ts, cut, keys


def _cut_mask(p: _Pass, pool: Any, cut: Any, keys: dict, key_of: Any, b: int,
              greater: Any) -> BitsetMask | None:
    """The second read: the bits above the histogram's cut bin ``b``, and the candidates in it, into
    one mask; None when the candidates do not settle it (then :func:`_select_exact`)."""
    base, off = {}, 0
    for n in p.names:
        base[n] = off
        off += 8 * ((p.sizes[n] + 7) // 8)
    # the mask's bytes, allocated once here: each tensor's bits are written into their slice
    # (per-tensor arrays joined afterwards were two more mask-sized allocations per task)
    whole = np.zeros(off // 8, np.uint8)
    second = partial(_second_pass, p, cut, keys, key_of, b, base, whole, int(cut.hist[b + 1]))
    scans: dict = {}
    for d in (pool.map(second, p.groups) if pool else map(second, p.groups)):
        scans.update(d)
    return cut.assemble(p.names, p.shapes, greater, [scans[n] for n in p.names], bits=whole)


def _second_pass(p: _Pass, cut: Any, keys: dict, key_of: Any, b: int, base: dict[str, int],
                 whole: np.ndarray, in_bin: int, group: list[str]) -> dict:
    """The second read of the tensors ``group``: their bits into ``whole``, and per tensor the
    positions and keys of the candidates in the cut bin."""
    out = {}
    pos = key = None
    for n in group:
        at = slice(base[n] // 8, base[n] // 8 + (p.sizes[n] + 7) // 8)
        if p.compiled and n in keys and in_bin <= cut.cap:
            if pos is None:
                pos, key = np.empty(in_bin, np.int64), np.empty(in_bin, np.int32)
            c = kernels.second_pass(keys[n].numpy(), b, whole[at], pos, key, base[n])
            out[n] = (None, pos[:c].copy(), key[:c].copy())
        else:
            scan = TopCut.scan(key_of[n], b, base[n], cut.cap)
            if scan is not None:
                whole[at] = scan[0]
                scan = (None, scan[1], scan[2])
            out[n] = scan
    return out


def _balanced(names: Sequence[str], sizes: Mapping[str, int], n: int) -> list[list[str]]:
    """``names`` in at most ``n`` groups of about equal total size (largest first to the lightest)."""
    if n <= 1:
        return [list(names)]
    groups: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for name in sorted(names, key=lambda x: -sizes[x]):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += sizes[name]
    return [g for g in groups if g]


class _threads:
    """A pool of ``n`` Python threads with torch at one thread each while it lives (None when n ≤ 1)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> Any:
        if self.n <= 1:
            self.pool = None
            return None

        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)
        self.pool = ThreadPoolExecutor(self.n)
        return self.pool

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            torch.set_num_threads(self.saved)
