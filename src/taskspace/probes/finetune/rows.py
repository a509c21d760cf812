"""What one FTGD row — one source task's fine-tuning — needs besides the fine-tuning itself: its mask and
its resume key. The transfer probe and the transfer estimate share them, so a delta written by one is
found by the other (the same key formula, written once)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from ...provenance import hash_records
from ..common import convention_of
from ..gradient.differentials import iter_task_gradients
from ..gradient.sketch_engine import task_bitset
from ..settings import EXECUTION_SETTINGS

if TYPE_CHECKING:  # pragma: no cover
    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..settings import ProbeSettings

#: settings that do not change a fine-tuned task's results (so they do not invalidate a resume)
NOT_IN_KEY = ("tasks", "bootstrap", "gradient_mode", "sketch_dim", *EXECUTION_SETTINGS)


def row_keys(loaded: "LoadedModel", splits: Mapping[str, "Suite"], tasks: Sequence[str], settings: "ProbeSettings",
             probe: str, heldout: Sequence[str] | None) -> tuple[str, dict[str, str]]:
    """The key of the base model's scores and the resume key of every source task: a hash of the probe,
    the model, the convention, the eval pairs, the held-out text, the settings that change a fine-tuning
    and the task's own train and dev pairs. A task's files with this key are its finished result (also for
    other probes that reuse the deltas, e.g. ``transfer-estimate``)."""
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    dev_counts = dev.counts()
    convention = convention_of(loaded.model, loaded.tokenizer, settings)
    base = {"model": {k: v for k, v in loaded.describe().items() if k != "device"}, "convention": convention,
            "eval": test.data_hash, "heldout": hash_records(heldout) if heldout is not None else None}
    run_settings = {k: v for k, v in settings.to_dict().items() if k not in NOT_IN_KEY}
    keys = {a: hash_records([probe, base, run_settings, train.select([a]).data_hash,
                             dev.select([a]).data_hash if dev_counts.get(a) else None]) for a in tasks}
    return hash_records([probe, base]), keys


def task_mask(loaded: "LoadedModel", task: str, train_pairs: list, group: str, settings: "ProbeSettings"):
    """ḡ_a on the task's training pairs, then its mask (gradient or random, per ``settings``).

    ḡ_a is read where backward leaves it (``.grad``), one tensor at a time, and the mask is a
    :class:`~taskspace.probes.gradient.bitsets.BitsetMask` (1 bit per parameter, unpacked per tensor when FTGD
    reads it) — no float32 copy of the model and no byte-per-parameter mask is kept."""
    model = loaded.model
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    mask = None
    for _, g in iter_task_gradients(model, loaded.tokenizer, {task: list(train_pairs)}, settings, progress=False):
        full = {n: (v if v is not None else torch.zeros(shapes[n])) for n, v in g.items()}
        mask = task_bitset(full, shapes, task, settings, overwrite=True)
        del full, g
    return mask
