"""The gradient and overlap probes: task spaces from gradient differentials (docs/design.md, "Probes").

- :func:`gradient_space`: ``G[a, b] = cos(ḡ_a, ḡ_b)`` over all parameters, and the same per module;
- :func:`compute_masks` / :func:`overlap_space`: masks ``M_t`` and ``O[a, b] = Jaccard(M_a, M_b)``;
- :func:`distributedness`: per task, how ``|ḡ_t|`` spreads (norm, participation ratio, mask size,
  share per module);
- :func:`run_gradient_probes`: all of it for one model checkpoint and a suite, ready to write.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ...errors import InputError
from ...provenance import timestamp
from ...spaces import TaskSpace
from ..common import convention_of, cosine_from_gram
from ..output import probe_dir, write_distributedness, write_gradient_spaces, write_space
from ..registry import by_method, get
from ..registry import names as probe_names
from ..settings import MASK_FRACTION, ProbeSettings
from .bitsets import BitsetMask, overlap_from_bitsets
from .differentials import TaskGradients, _unwrap, gradient_provenance, iter_task_gradients, task_gradients
from .masks import (
    Mask,
    mask_size,
    module_shares,
    overlap_matrix,
    pack,
    participation_ratio,
    random_mask,
    task_seed,
    threshold_mask,
    top_fraction_mask,
    write_masks,
)
from .modules import layer_index, resolve_modules
from .sketch import SketchSet
from .sketch_engine import BitsetMaskSet, SketchedGradients, StreamedStats, one_pass

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..spec import ProbeSpec

#: the methods (``ProbeSpec.method``) of the probes one gradient pass computes: the cosine of the tasks' ḡ_t
#: (overall and per module) and the Jaccard overlap of their masks
COSINE, JACCARD = "gradient-cosine", "mask-jaccard"


def gradient_probes(probes: Sequence[str] | None = None) -> dict[str, "ProbeSpec"]:
    """``{method: registry entry}`` of the gradient pass's probes named in ``probes`` (default: all of them);
    a name that is not one of them is a ValueError."""
    if probes is None:
        return {m: by_method(m) for m in (COSINE, JACCARD)}
    known = set(probe_names())
    unknown = [p for p in probes if p not in known or get(p).method not in (COSINE, JACCARD)]
    if unknown:
        raise ValueError(f"unknown gradient probe(s): {', '.join(unknown)}")
    return {get(p).method: get(p) for p in probes}


def _provenance(grads: Any, probe: str, settings: ProbeSettings | None, **extra: Any) -> dict:
    """``grads``: a :class:`TaskGradients` or anything with its ``provenance``, ``convention`` and
    ``n_pairs`` (the sketch mode's :class:`SketchedGradients`)."""
    base = dict(grads.provenance)
    model = base.get("model", {})
    out = {"probe": probe, "created": timestamp(), "model": model,
           "revision": model.get("revision") if isinstance(model, dict) else None,
           "convention": grads.convention, "settings": settings.to_dict() if settings is not None else None,
           "seed": settings.seed if settings is not None else None,
           "suite": base.get("suite"), "n_train_pairs": grads.n_pairs,
           "gradients_computed": base.get("created"), "versions": base.get("versions"),
           "torch_threads": base.get("torch_threads"),
           "gradient_mode": base.get("gradient_mode", "exact"), "sketch": base.get("sketch"),
           "autocast": base.get("autocast", "none"),
           # "from halves": ḡ_t is the pair-weighted mean of its halves' ḡ (the split-half pass's one-pass
           # route, gradient/halves.py), the direct ḡ_t up to float rounding, not bit for bit
           "gradient_pass": base.get("gradient_pass", "direct")}
    out.update(extra)
    return out


def gradient_space(grads: TaskGradients, settings: ProbeSettings | None = None) -> tuple[TaskSpace, dict[str, TaskSpace]]:
    """The gradient probe: cosine of ḡ_a and ḡ_b over all parameters (kind ``gradients``, the space of the
    probe whose method is :data:`COSINE`), and a space per module (``embed``, ``block0.attn`` …; provenance
    field ``module``).

    A task whose ḡ is zero (e.g. only identical pairs) gets NaN entries.
    """
    total, by_module = grads.gram(per_module=True)
    return _cosine_spaces(grads, total, by_module, grads.tasks, grads.groups, settings)


def _cosine_spaces(src: Any, total: np.ndarray, by_module: Mapping[str, np.ndarray], tasks: list[str],
                   groups: list[str], settings: ProbeSettings | None) -> tuple[TaskSpace, dict[str, TaskSpace]]:
    """The cosine space and its per-module spaces from Gram matrices (exact or sketched), named as the
    registry names the probe of :data:`COSINE`."""
    spec = by_method(COSINE)
    name = spec.spaces[0].name
    prov = _provenance(src, spec.name, settings)
    space = TaskSpace(cosine_from_gram(total), tasks, groups, name, prov)
    modules = {m: TaskSpace(cosine_from_gram(g), tasks, groups, name, dict(prov, module=m))
               for m, g in by_module.items()}
    return space, modules


class MaskSet(Mapping[str, Mask]):
    """The masks of every task, computed from ḡ_t when asked for (so T masks never sit in memory at
    once unless you ``dict()`` them).

    ``kind="gradient"``: top ``fraction`` of ``|ḡ_t|``, or ``|ḡ_t| ≥ threshold`` when a threshold is
    given. ``kind="random"``: a seeded random mask per task of the same size the gradient mask has.
    """

    def __init__(self, grads: TaskGradients, *, fraction: float = MASK_FRACTION, threshold: float | None = None,
                 kind: str = "gradient", seed: int = 0) -> None:
        self.grads = grads
        self.fraction = fraction
        self.threshold = threshold
        self.kind = kind
        self.seed = seed

    def describe(self) -> dict:
        return {"kind": self.kind, "fraction": None if self.threshold is not None else self.fraction,
                "threshold": self.threshold, "seed": self.seed if self.kind == "random" else None}

    def mask_for(self, task: str, grad: Mapping[str, torch.Tensor] | None = None) -> Mask:
        """The mask of ``task``; pass ``grad`` when ḡ_t is already loaded to skip reading it again."""
        if task not in self.grads.tasks:
            raise KeyError(task)
        if self.kind == "random":
            size: float | int = self.fraction
            if self.threshold is not None:
                g = grad if grad is not None else self.grads.get(task)
                size = int(mask_size(threshold_mask(g, self.threshold)))
            return random_mask(self.grads.shapes, size, task_seed(self.seed, task))
        g = grad if grad is not None else self.grads.get(task)
        if self.threshold is not None:
            return threshold_mask(g, self.threshold)
        return top_fraction_mask(g, self.fraction)

    def __getitem__(self, task: str) -> Mask:
        return self.mask_for(task)

    def __iter__(self) -> Iterator[str]:
        return iter(self.grads.tasks)

    def __len__(self) -> int:
        return len(self.grads.tasks)


def compute_masks(grads: TaskGradients, settings: ProbeSettings, model: Any = None) -> MaskSet:
    """``{task: mask}`` per ``settings`` (``mask_kind`` gradient or random, ``mask_fraction`` or
    ``mask_threshold``, ``seed``), computed lazily per task. ``model`` is accepted for symmetry with
    the other probes; parameter names and shapes come from ``grads``."""
    return MaskSet(grads, fraction=settings.mask_fraction, threshold=settings.mask_threshold,
                   kind=settings.mask_kind, seed=settings.seed)


def overlap_space(grads: TaskGradients, fraction: float = MASK_FRACTION, threshold: float | None = None, *,
                  masks: Mapping[str, Mask] | None = None, settings: ProbeSettings | None = None) -> TaskSpace:
    """The overlap probe: ``O[a, b] = |M_a ∩ M_b| / |M_a ∪ M_b|`` (kind ``overlap``, the space of the probe
    whose method is :data:`JACCARD`).

    Masks come from ``masks`` (e.g. :func:`compute_masks`), else from ``settings``, else from
    ``fraction`` / ``threshold``. Masks are packed to bits one task at a time (T × N/8 bytes).
    """
    if masks is None:
        masks = (compute_masks(grads, settings) if settings is not None
                 else MaskSet(grads, fraction=fraction, threshold=threshold))
    packed = [pack(masks[t]) for t in grads.tasks]
    mdesc = masks.describe() if isinstance(masks, MaskSet) else {"fraction": fraction, "threshold": threshold}
    return _overlap_from_packed(grads, packed, settings, mdesc)


def _overlap_from_packed(grads: TaskGradients, packed: Sequence[np.ndarray], settings: ProbeSettings | None,
                         mdesc: dict) -> TaskSpace:
    return _jaccard_space(grads, overlap_matrix(packed), grads.tasks, grads.groups, settings, mdesc)


def _jaccard_space(src: Any, matrix: np.ndarray, tasks: list[str], groups: list[str],
                   settings: ProbeSettings | None, mdesc: dict) -> TaskSpace:
    """The overlap space, named as the registry names the probe of :data:`JACCARD`."""
    spec = by_method(JACCARD)
    return TaskSpace(matrix, tasks, groups, spec.spaces[0].name, _provenance(src, spec.name, settings, mask=mdesc))


def _task_stats(task: str, group: str, grads: TaskGradients, g: Mapping[str, torch.Tensor], mask: Mask) -> dict:
    shares = module_shares(g, grads.modules)
    norm = float(np.sqrt(sum(float(v.double().pow(2).sum()) for v in g.values())))
    layered = {m: s for m, s in shares.items() if layer_index(m) is not None and np.isfinite(s)}
    mass = sum(layered.values())
    centroid = (sum(layer_index(m) * s for m, s in layered.items()) / mass) if mass > 0 else float("nan")
    row = {"task": task, "group": group, "n_pairs": grads.n_pairs.get(task), "grad_norm": norm,
           "participation_ratio": participation_ratio(g), "mask_size": mask_size(mask, relative=True),
           "layer_centroid": centroid}
    row.update({f"share:{m}": s for m, s in shares.items()})
    return row


def distributedness(grads: TaskGradients, masks: Mapping[str, Mask], model: Any = None) -> "pd.DataFrame":
    """Per task: task, group, n_pairs, grad_norm (‖ḡ_t‖₂), participation_ratio of ``|ḡ_t|``, mask_size
    (fraction of parameters), layer_centroid (``|ḡ|``-weighted mean block index) and one
    ``share:<module>`` column per module (share of ``Σ|ḡ_t|``). ``model`` is unused when ``grads``
    already knows its modules (it always does when made by :func:`task_gradients`)."""
    rows = []
    for t, grp in zip(grads.tasks, grads.groups):
        g = grads.get(t)
        m = masks.mask_for(t, g) if isinstance(masks, MaskSet) else masks[t]
        rows.append(_task_stats(t, grp, grads, g, m))
    return pd.DataFrame(rows)


@dataclass
class GradientProbeResult:
    """The results of :func:`run_gradient_probes` for one model checkpoint."""

    grads: "TaskGradients | SketchedGradients"                      # no tensors in sketch mode
    masks: "MaskSet | BitsetMaskSet"
    spaces: dict[str, TaskSpace] = field(default_factory=dict)     # by name: "gradients", "overlap"
    by_module: dict[str, TaskSpace] = field(default_factory=dict)  # module → gradient space
    distributedness: "pd.DataFrame | None" = None
    provenance: dict = field(default_factory=dict)
    mode: str = "exact"                                             # exact | sketch
    sketches: SketchSet | None = None                               # sketch mode: k numbers per task

    def write(self, out: str | Path, *, control: bool = False, save_masks: bool = False) -> list[Path]:
        """Write into the layout of :mod:`taskspace.probes.output` (``DIR`` or ``DIR/control``)."""
        d = probe_dir(out, control)
        paths: list[Path] = []
        cosine, jaccard = (by_method(m).spaces[0].name for m in (COSINE, JACCARD))
        if cosine in self.spaces:
            paths += write_gradient_spaces(d, self.spaces[cosine], self.by_module, name=cosine)
        if jaccard in self.spaces:
            paths.append(write_space(d, jaccard, self.spaces[jaccard]))
        if self.distributedness is not None:
            paths.append(write_distributedness(d, self.distributedness, self.provenance))
        if save_masks:
            meta = {k: str(v) for k, v in self.masks.describe().items()}
            paths += write_masks(d, self.masks, meta)
        return paths


#: auto mode keeps exact gradient copies while tasks × parameters × 4 bytes stay within this (4 GiB:
#: all 67 BLiMP tasks on a ≤ 16M-parameter model). A fixed number, not a share of this machine's free
#: memory, so the same command picks the same mode — and gives the same spaces — on every machine.
EXACT_BUDGET_BYTES = 4 << 30


def resolve_gradient_mode(mode: str, n_parameters: int, n_tasks: int,
                          budget_bytes: int = EXACT_BUDGET_BYTES) -> str:
    """``exact`` or ``sketch``: ``auto`` → exact iff ``n_tasks × n_parameters × 4 ≤ budget_bytes``
    (the float32 copies the exact mode keeps), else sketch."""
    if mode == "auto":
        return "exact" if n_tasks * n_parameters * 4 <= budget_bytes else "sketch"
    if mode not in ("exact", "sketch"):
        raise ValueError(f"unknown gradient mode {mode!r}")
    return mode


class SketchTasks:
    """What the sketch mode keeps of a set of tasks while their gradients stream past, one task at a time
    (:meth:`take`): their count sketches (``sk``, only when the cosine is asked), their masks as bitset
    files (``store/masks``, or a temporary folder) and their distributedness rows; :meth:`result` turns
    them into a :class:`GradientProbeResult`. Nothing of the model's size is kept per task. ``keeps``: whether
    :meth:`take` holds on to the tensors it is given (no: they may be reused for the next task)."""

    keeps = False

    def __init__(self, train: "Suite", settings: ProbeSettings, sk: SketchSet, *, cosine: bool, prov: dict,
                 convention: dict, modules: Mapping[str, str], shapes: Mapping[str, Sequence[int]],
                 store: str | Path | None) -> None:
        by_task = train.by_task()
        self.tasks = list(by_task)
        self.groups = [train.group_of(t) for t in self.tasks]
        self.settings, self.modules, self.shapes = settings, modules, shapes
        self.sk = sk if cosine else None
        prov = dict(prov, gradient_mode="sketch", sketch=sk.describe(), autocast=settings.autocast)
        self.src = SketchedGradients(self.tasks, self.groups, prov, convention,
                                     {t: len(ps) for t, ps in by_task.items()})
        keep = None
        if store is not None:
            folder = Path(store) / "masks"
        else:
            keep = tempfile.TemporaryDirectory(prefix="taskspace-masks-")
            folder = Path(keep.name)
        folder.mkdir(parents=True, exist_ok=True)
        self.mdesc = {"kind": settings.mask_kind,
                      "fraction": None if settings.mask_threshold is not None else settings.mask_fraction,
                      "threshold": settings.mask_threshold,
                      "seed": settings.seed if settings.mask_kind == "random" else None, "storage": "bitset"}
        self.masks = BitsetMaskSet(folder, self.tasks, self.mdesc, keep)
        self.rows: dict[str, dict] = {}

    @property
    def provenance(self) -> dict:
        """How the gradients were computed (every space's provenance reads it)."""
        return self.src.provenance

    def take(self, task: str, grads: Mapping[str, torch.Tensor], shared: set[str]) -> None:
        """Sketch ``task``'s gradient (every parameter; ``shared``: zero stand-ins not to be written), reduce it
        to its distributedness row and write its mask. ``grads`` is overwritten (:func:`one_pass`)."""
        acc = StreamedStats(self.modules)
        bits = one_pass(task, grads, shared, self.sk, acc, self.settings, self.shapes)
        i = self.tasks.index(task)
        self.rows[task] = acc.row(task, self.groups[i], self.src.n_pairs[task], bits)
        bits.save(self.masks.path(task))

    def result(self, jaccard: bool) -> GradientProbeResult:
        """The spaces (the cosine when sketched, the overlap when ``jaccard``) and the distributedness table,
        tasks in suite order whatever order they were taken in."""
        tasks, groups, settings, src = self.tasks, self.groups, self.settings, self.src
        res = GradientProbeResult(grads=src, masks=self.masks, mode="sketch", sketches=self.sk)
        if self.sk is not None:
            self.sk.reorder(tasks)
            total, by_module = self.sk.gram(per_module=True)
            space, res.by_module = _cosine_spaces(src, total, by_module, tasks, groups, settings)
            res.spaces[space.kind] = space
        if jaccard:
            o = overlap_from_bitsets([BitsetMask.load(self.masks.path(t)) for t in tasks])
            space = _jaccard_space(src, o, tasks, groups, settings, self.mdesc)
            res.spaces[space.kind] = space
        res.distributedness = pd.DataFrame([self.rows[t] for t in tasks])
        res.provenance = _provenance(src, "distributedness", settings, mask=self.mdesc)
        return res


def zero_stand_ins(grads: Mapping[str, torch.Tensor | None], zeros: dict[str, torch.Tensor],
                   shapes: Mapping[str, Sequence[int]], device: Any) -> dict[str, torch.Tensor]:
    """``grads`` with a parameter the loss does not reach (no ``.grad``) given one shared zero tensor,
    made once per parameter into ``zeros`` (whose names :func:`one_pass` must not write over)."""
    for n, v in grads.items():
        if v is None and n not in zeros:
            zeros[n] = torch.zeros(shapes[n], device=device)
    return {n: (v if v is not None else zeros[n]) for n, v in grads.items()}


def sketch_setup(model: Any, settings: ProbeSettings) -> tuple[dict, dict, SketchSet]:
    """The sketch mode's view of ``model``: parameter shapes, modules and an empty :class:`SketchSet`."""
    params = list(model.named_parameters())
    names = [n for n, _ in params]
    shapes = {n: tuple(p.shape) for n, p in params}
    modules = resolve_modules(model, names)
    return shapes, modules, SketchSet(names, shapes, modules, dim=settings.sketch_dim, seed=settings.seed)


def _sketch_probes(loaded: "LoadedModel", train: "Suite", settings: ProbeSettings, cosine: bool, jaccard: bool,
                   store: str | Path | None, progress: bool) -> GradientProbeResult:
    """The sketch mode: per task, ḡ_t is computed into ``.grad`` and, before the next task, sketched
    (k numbers), reduced to its distributedness row, and turned into a bitset mask written to disk;
    nothing of size N is kept per task. Overlap comes from the bitset files in chunks."""
    model, tokenizer, describe = _unwrap(loaded, None)
    by_task = train.by_task()
    if not by_task:
        raise InputError("the suite has no pairs to compute gradients from", field="tasks")
    shapes, modules, sk = sketch_setup(model, settings)
    convention = convention_of(model, tokenizer, settings)
    prov = gradient_provenance(model, describe, train, convention, settings.batch_tokens)
    kept = SketchTasks(train, settings, sk, cosine=cosine, prov=prov, convention=convention, modules=modules,
                       shapes=shapes, store=store)
    zeros: dict[str, torch.Tensor] = {}
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    for task, g in iter_task_gradients(model, tokenizer, by_task, settings, reuse=True, progress=progress):
        kept.take(task, zero_stand_ins(g, zeros, shapes, device), set(zeros))
    return kept.result(jaccard)


def run_gradient_probes(
    loaded: "LoadedModel",
    suite: "Suite",
    settings: ProbeSettings = ProbeSettings(),
    *,
    probes: Sequence[str] | None = None,
    store: str | Path | None = None,
    storage_dtype: str = "float32",
    progress: bool = True,
) -> GradientProbeResult:
    """Gradient differentials on the training split of ``suite`` (per ``settings``), then the asked
    ``probes`` (``gradients`` and/or ``overlap``: :func:`gradient_probes`; default both) and the
    distributedness table, in one pass over the tasks for masks and statistics. ``spaces`` of the result
    are keyed by the probes' space names.

    ``settings.gradient_mode``: ``exact`` keeps ḡ_t of every task (in memory, or in ``store``) and
    computes exact cosines; ``sketch`` keeps a count sketch of ``settings.sketch_dim`` numbers per task
    (plus per-module vectors) and writes each task's mask as a bitset (``store/masks`` or a temporary
    folder), so memory does not grow with the number of tasks; ``auto`` picks by
    :func:`resolve_gradient_mode`. Every space's provenance records the mode, and the sketch's k and seed.
    """
    asked = gradient_probes(probes)
    cosine, jaccard = COSINE in asked, JACCARD in asked
    train = settings.splits(suite)["train"]
    model = loaded.model if hasattr(loaded, "model") else loaded
    mode = resolve_gradient_mode(settings.gradient_mode, sum(p.numel() for p in model.parameters()),
                                 len(train.tasks))
    if mode == "sketch":
        return _sketch_probes(loaded, train, settings, cosine, jaccard, store, progress)
    grads = task_gradients(loaded, None, train, settings, store=store, storage_dtype=storage_dtype,
                           progress=progress)
    return exact_probes(grads, settings, cosine, jaccard)


def exact_probes(grads: TaskGradients, settings: ProbeSettings, cosine: bool, jaccard: bool) -> GradientProbeResult:
    """The exact mode's spaces from ``grads`` (the cosine overall and per module when ``cosine``, the overlap
    when ``jaccard``) and the distributedness table, masks and statistics in one read of each ḡ_t."""
    grads.provenance.update(gradient_mode="exact", sketch=None, autocast=settings.autocast)
    masks = compute_masks(grads, settings)
    res = GradientProbeResult(grads=grads, masks=masks)
    if cosine:
        space, res.by_module = gradient_space(grads, settings)
        res.spaces[space.kind] = space
    rows, packed = [], []
    for t, grp in zip(grads.tasks, grads.groups):
        g = grads.get(t)
        m = masks.mask_for(t, g)
        rows.append(_task_stats(t, grp, grads, g, m))
        if jaccard:
            packed.append(pack(m))
    if jaccard:
        space = _overlap_from_packed(grads, packed, settings, masks.describe())
        res.spaces[space.kind] = space

    res.distributedness = pd.DataFrame(rows)
    res.provenance = _provenance(grads, "distributedness", settings, mask=masks.describe())
    return res
