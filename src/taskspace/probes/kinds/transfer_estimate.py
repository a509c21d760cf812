"""The transfer estimate (``transfer-estimate``): the first-order Taylor term of FTGD transfer, no evaluation.

::

    T̂[a, b] = ∇m_b(θ_0) · Δ_a = −⟨ḡ_b^eval, Δ_a⟩        space ``transfer_estimate``
    T̂̃[a, b] = T̂[a, b] / |T̂[a, a]|                       space ``transfer_estimate_normalized`` (main)

``Δ_a`` is FTGD's delta for task a (sparse, on ``M_a``), ``m_b`` task b's mean margin over its eval
pairs — the same pairs the transfer probe evaluates on — and ``ḡ_b^eval = −∇m_b`` its gradient
differential there. The measured transfer is ``m_b(θ_0 + Δ_a) − m_b(θ_0)``; this is its linear part,
which replaces T fine-tuned models × all eval pairs of scoring (about two thirds of the transfer
probe's time) by one backward pass per task over its eval pairs. How well it ranks like the measured
space is a measurement (docs/design.md, "Probes"): 50 Adam steps at lr 1e-3 go far past the linear regime.

Deltas: when ``ctx.out/deltas/<task>.safetensors`` exists from a transfer run of the same settings
(its ``ftgd/<task>.json`` says ok, with the job key this run would give that task, so the model,
convention, eval pairs, training and dev data and every FTGD setting match), it is reused; otherwise
FTGD runs for that task (the transfer probe's own mask and fine-tuning) and nothing is evaluated. The
heldout text of the transfer run is part of its key: pass the same ``heldout`` option to reuse.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from ...errors import InputError
from ...io import read_json
from ...spaces import TaskSpace
from ..common import convention_of, normalize_rows, probe_provenance, probe_tasks
from ..finetune.deltas import load_delta
from ..finetune.ftgd import ftgd
from ..finetune.rows import row_keys, task_mask
from ..gradient.differentials import sparse_dots, task_gradient_stream
from ..output import task_filename
from ..registry import get, runner_probes
from ..result import ProbeResult

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ...models.loading import LoadedModel
    from ...suites.schema import Suite
    from ..finetune.deltas import Delta
    from ..result import ProbeResult
    from ..settings import ProbeSettings
    from ..spec import ProbeSpec, RunContext


def flat_delta(model: Any, delta: "Delta") -> tuple["torch.Tensor", "torch.Tensor"]:
    """``Δ`` as ``(flat indices, values)`` over the parameters in ``model.named_parameters()`` order
    (the order of :class:`~taskspace.probes.gradient.differentials.TaskGradients.flat`)."""
    offsets: dict[str, int] = {}
    n = 0
    for name, p in model.named_parameters():
        offsets[name] = n
        n += p.numel()
    unknown = [k for k in delta.entries if k not in offsets]
    if unknown:
        raise InputError(f"delta names parameters the model does not have: {', '.join(unknown[:3])}",
                         field="delta")
    idx_parts, val_parts = [], []
    for name, (idx, val) in delta.entries.items():
        if idx is None:
            idx = torch.arange(val.numel())
        idx_parts.append(idx.to(torch.int64) + offsets[name])
        val_parts.append(val.reshape(-1))
    if not idx_parts:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    idx = torch.cat(idx_parts)
    # int32 indices where they fit: T deltas stay in memory at once (8 bytes per entry, not 12)
    return (idx.to(torch.int32) if n < 2 ** 31 else idx), torch.cat(val_parts)


def estimate_matrix(model: Any, tokenizer: Any, test: "Suite", tasks: Sequence[str], settings: "ProbeSettings",
                    deltas: dict[str, "Delta | None"]) -> np.ndarray:
    """``T̂[a, b] = −⟨ḡ_b^eval, Δ_a⟩`` (rows without a delta are NaN). One dense eval gradient is held at
    a time; the deltas are kept sparse."""
    rows = {a: flat_delta(model, d) for a, d in deltas.items() if d is not None}
    have = [a for a in tasks if a in rows]
    est = np.full((len(tasks), len(tasks)), np.nan)
    ri = [tasks.index(a) for a in have]
    for j, (b, grads) in enumerate(task_gradient_stream(model, tokenizer, test, tasks, settings)):
        if have:
            est[ri, j] = -sparse_dots(rows, have, grads.flat(b))
        del grads
    return est


def source_probe(spec: "ProbeSpec | None" = None) -> "ProbeSpec":
    """The probe whose deltas this one reuses (``needs`` of this probe's registry entry ``spec``, by default
    the one whose runner is :func:`run`), which declares where it writes them (``files``: ``deltas`` and the
    per-task ``status`` records)."""
    return get((spec if spec is not None else runner_probes(run)[0]).needs[0])


def reusable_delta(loaded: "LoadedModel", out: Path, a: str, key: str) -> "Delta | None":
    """The delta of task ``a`` from a transfer run in ``out`` whose job key for ``a`` is ``key``."""
    src = source_probe()
    status = out / src.file("status") / f"{task_filename(a)}.json"
    path = out / src.file("deltas") / f"{task_filename(a)}.safetensors"
    if not (status.exists() and path.exists()):
        return None
    try:
        rec = read_json(status)
    except ValueError:
        return None
    if rec.get("key") != key or rec.get("status") != "ok":
        return None
    return load_delta(path)


def transfer_keys(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", tasks: Sequence[str],
                  heldout: Sequence[str] | None) -> dict[str, str]:
    """The job key the transfer probe gives each task (:func:`~taskspace.probes.finetune.rows.row_keys`),
    so a delta is reused only when the run that made it had the same model, data and FTGD settings."""
    _, keys = row_keys(loaded, settings.splits(suite), tasks, settings, source_probe().name, heldout)
    return keys


def run_ftgd(loaded: "LoadedModel", a: str, train_pairs: list, dev_pairs: list, group: str,
             settings: "ProbeSettings") -> tuple["Delta | None", dict]:
    """FTGD on task ``a`` with the transfer probe's mask (:func:`~taskspace.probes.finetune.rows.task_mask`);
    no evaluation."""
    t = time.perf_counter()
    mask = task_mask(loaded, a, train_pairs, group, settings)
    grad_s = time.perf_counter() - t
    res = ftgd(loaded.model, loaded.tokenizer, train_pairs, dev_pairs, mask, settings)
    rec = {k: v for k, v in res.to_dict().items() if k not in ("history", "settings")}
    rec.update(gradient_seconds=grad_s)
    return (res.delta if res.ok else None), rec


def run(loaded: "LoadedModel", suite: "Suite", settings: "ProbeSettings", ctx: "RunContext",
        kinds: Sequence[str] | None = None) -> "ProbeResult":
    """The ``transfer-estimate`` probe on one checkpoint: deltas (reused or fine-tuned), eval gradients,
    ``T̂`` and its normalised form; ``stats/transfer_estimate_tasks.csv`` says per row where its delta
    came from, and ``stats/transfer_estimate_timings.json`` how long each part took."""
    (spec,) = runner_probes(run, kinds, ctx)
    estimate, normalized = (s.name for s in spec.spaces)      # as the registry declares them
    splits, tasks, rows = probe_tasks(suite, settings, ["train", "test"], ctx.rows)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    groups = {t: suite.group_of(t) for t in tasks}
    out = Path(ctx.out) if ctx.out is not None else None
    keys = (transfer_keys(loaded, suite, settings, rows, ctx.options.get("heldout"))
            if out is not None and (out / source_probe(spec).file("deltas")).is_dir() else {})
    timings = {"finetune": 0.0, "eval_gradients": 0.0}
    deltas: dict[str, Delta | None] = {}
    records = []
    train_by, dev_by = train.by_task(), dev.by_task()
    for a in rows:
        d = reusable_delta(loaded, out, a, keys[a]) if keys else None
        if d is not None:
            deltas[a] = d
            records.append({"task": a, "group": groups[a], "source": "transfer run", "status": "ok",
                            "delta_norm": d.norm(), "mask_size": d.n_entries})
            continue
        t = time.perf_counter()
        deltas[a], rec = run_ftgd(loaded, a, train_by[a], dev_by.get(a, []), groups[a], settings)
        timings["finetune"] += time.perf_counter() - t
        records.append({"task": a, "group": groups[a], "source": "ftgd", **rec})
    t = time.perf_counter()
    est = estimate_matrix(loaded.model, loaded.tokenizer, test, tasks, settings, deltas)
    timings["eval_gradients"] = time.perf_counter() - t
    prov = probe_provenance(loaded, suite.select(tasks), settings, spec.name,
                            convention_of(loaded.model, loaded.tokenizer, settings),
                            n_train_pairs=train.counts(), n_eval_pairs=test.counts(),
                            delta_sources={r["task"]: r["source"] for r in records},
                            failed_tasks={r["task"]: r.get("reason") for r in records if r["status"] != "ok"},
                            rows="task fine-tuned on", columns="task evaluated (first order)")
    glist = [groups[t] for t in tasks]
    spaces = {
        estimate: TaskSpace(est, tasks, glist, estimate, dict(prov, value="−<ḡ_b^eval, Δ_a>")),
        normalized: TaskSpace(normalize_rows(est), tasks, glist, normalized,
                              dict(prov, value="T̂[a,b] / |T̂[a,a]|")),
    }
    res = ProbeResult((spec.name,), spaces=spaces, provenance=prov, extra={"deltas": deltas})
    res.tables[f"stats/{estimate}_tasks.csv"] = (pd.DataFrame(records), prov)
    res.records[f"stats/{estimate}_timings.json"] = timings
    return res
