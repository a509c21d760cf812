"""The transfer probe and the entangled baseline: fine-tune on task a, evaluate on every task b (DESIGN §2).

Per task a (one at a time, so peak memory does not grow with the number of tasks):

- ``transfer``: gradient differential ḡ_a on a's training pairs → mask ``M_a`` → FTGD → ``Δ_a``;
- ``baseline``: plain fine-tuning on a's good sentences, all parameters;

then every task's eval pairs are scored with ``θ_0 + Δ_a`` and the task's results are written
atomically. A re-run with the same settings skips tasks already done (resume after a kill); at the
end the spaces are assembled from the per-pair logs. Layout in ``out_dir`` (``P`` = transfer or
baseline)::

    spaces/P.csv|.json                       T[a,b]: mean-margin transfer (row a = fine-tuned on)
    spaces/P_normalized.csv|.json            T̃[a,b] = T[a,b] / |T[a,a]|
    spaces/P_accuracy.csv|.json              accuracy transfer
    spaces/P_accuracy_normalized.csv|.json
    scores/base.parquet                      base model, per eval pair
    scores/P.parquet                         per fine-tuned task, per eval pair (the per-sample log)
    scores/P/<task>.parquet                  the same, one file per fine-tuned task (resume unit)
    ftgd/<task>.json | baseline/<task>.json  status (ok | failed, why), steps, best step, loss curves,
                                             self-transfer, LM damage, mask size, seconds
    deltas/<task>.safetensors                sparse Δ_a (transfer; dense baseline deltas only on request,
                                             under deltas/baseline/)
    stats/P_tasks.csv                        one row per fine-tuned task (the JSONs as a table)

Each space's ``ci_low`` / ``ci_high`` hold 95% paired-bootstrap intervals over eval pairs.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import TaskspaceError
from .evaluation import METRICS, heldout_nll, lm_nll, self_transfer, transfer_matrices

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..models.loading import LoadedModel
    from ..spaces import TaskSpace
    from ..suites.schema import Suite
    from .settings import ProbeSettings

PROBES = ("transfer", "baseline")
#: settings that do not change a fine-tuned task's results (so they do not invalidate a resume)
_NOT_IN_KEY = ("tasks", "bootstrap")


def space_names(probe: str) -> list[str]:
    """``["transfer", "transfer_normalized", "transfer_accuracy", "transfer_accuracy_normalized"]``."""
    return [probe + m for m in METRICS]


def transfer_probe(
    loaded: "LoadedModel",
    suite: "Suite",
    settings: "ProbeSettings",
    out_dir: str | Path,
    *,
    baseline: bool = False,
    progress: bool = True,
    heldout: Sequence[str] | None = None,
    save_deltas: bool | None = None,
) -> dict[str, "TaskSpace"]:
    """Run the transfer probe (FTGD) or, with ``baseline=True``, the entangled baseline; write every
    result under ``out_dir`` and return the four spaces keyed as in :func:`space_names`.

    ``heldout``: sentences on which LM damage is measured (default: the good sentences of all eval
    pairs). ``save_deltas``: write ``Δ_a`` files (default: yes for FTGD's sparse deltas, no for the
    baseline's dense ones, which are the size of the model per task).
    """
    from ..io import write_json
    from ..progress import progress_bar
    from ..provenance import hash_records, timestamp, versions
    from ..scoring import Scorer

    probe = "baseline" if baseline else "transfer"
    out = Path(out_dir)
    save_deltas = (not baseline) if save_deltas is None else save_deltas
    splits = settings.splits(suite)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    tasks = suite.select(list(settings.tasks) if settings.tasks is not None else None).tasks
    groups = {t: suite.group_of(t) for t in tasks}
    n_test, n_train = test.counts(), train.counts()
    empty = [t for t in tasks if not n_test.get(t) or not n_train.get(t)]
    if empty:
        raise TaskspaceError(f"task(s) {', '.join(empty[:5])} have no training or eval pairs "
                             f"(pairs per task too few for --train-pairs/--dev-pairs/--eval-pairs)")
    model, tokenizer = loaded.model, loaded.tokenizer
    scorer = Scorer(model, tokenizer, reduction=settings.reduction, prefix=settings.prefix,
                    batch_tokens=settings.batch_tokens)
    eval_pairs = test.pairs
    train_by, dev_by = train.by_task(), dev.by_task()

    model_desc = loaded.describe()
    base_key = {"model": {k: v for k, v in model_desc.items() if k != "device"},
                "convention": scorer.convention.to_dict(), "eval": test.data_hash,
                "heldout": hash_records(heldout) if heldout is not None else None}
    run_settings = {k: v for k, v in settings.to_dict().items() if k not in _NOT_IN_KEY}

    timings = {"base_eval": 0.0, "gradients": 0.0, "finetune": 0.0, "eval": 0.0}
    t = time.perf_counter()
    if progress:
        n_sent = len({s for p in eval_pairs for s in (p.good, p.bad)})
        with progress_bar(f"{probe}: scoring base model", total=n_sent) as adv:
            base_df = scorer.score_pairs(eval_pairs, progress=adv)
    else:
        base_df = scorer.score_pairs(eval_pairs)
    base_nll = heldout_nll(scorer, heldout) if heldout is not None else lm_nll(base_df, settings.reduction)
    timings["base_eval"] = time.perf_counter() - t
    _write_parquet(out / "scores" / "base.parquet", base_df)

    status_dir = out / ("baseline" if baseline else "ftgd")
    rows_dir = out / "scores" / probe
    records: dict[str, dict] = {}
    with progress_bar(probe, total=len(tasks), fields=True) if progress else _null() as advance:
        for a in tasks:
            key = hash_records([probe, base_key, run_settings, train.select([a]).data_hash,
                                dev.select([a]).data_hash if dev_by.get(a) else None])
            rec = _done(status_dir, rows_dir, a, key)
            if rec is not None:
                records[a] = rec
                advance(1, task=a, status="done before")
                continue
            rec = _run_task(a, probe=probe, loaded=loaded, scorer=scorer, settings=settings,
                            train_pairs=train_by[a], dev_pairs=dev_by.get(a, []), eval_pairs=eval_pairs,
                            base_df=base_df, base_nll=base_nll, heldout=heldout, groups=groups,
                            out=out, rows_dir=rows_dir, save_deltas=save_deltas, timings=timings)
            rec.update({"task": a, "group": groups[a], "probe": probe, "key": key,
                        "model": model_desc, "created": timestamp()})
            # the status file is written last: its presence (with this key) marks the task as done
            write_json(_task_path(status_dir, a, ".json"), rec)
            records[a] = rec
            advance(1, task=a, status=rec["status"])
            _release_memory()

    # assemble from the per-pair logs (also those of tasks finished by an earlier, killed run)
    t = time.perf_counter()
    finetuned = {a: (_read_parquet(_task_path(rows_dir, a, ".parquet")) if records[a]["status"] == "ok"
                     else None) for a in tasks}
    est = transfer_matrices(base_df, finetuned, tasks, bootstrap=settings.bootstrap, seed=settings.seed)
    failed = {a: records[a].get("reason") for a in tasks if records[a]["status"] != "ok"}
    prov_common = {
        "probe": probe, "created": timestamp(), "model": model_desc,
        "convention": scorer.convention.to_dict(), "settings": settings.to_dict(),
        "suite": suite.select(tasks).describe(), "seed": settings.seed,
        "bootstrap": {"resamples": settings.bootstrap, "level": 0.95, "paired": True,
                      "unit": "eval pair"},
        "lm_damage_text": "heldout sentences" if heldout is not None else "good sentences of all eval pairs",
        "failed_tasks": failed, "versions": versions(),
        "rows": "task fine-tuned on", "columns": "task evaluated",
    }
    from ..spaces import TaskSpace

    spaces: dict[str, TaskSpace] = {}
    for m in METRICS:
        name = probe + m
        e = est[m]
        what = ("accuracy" if "accuracy" in m else "mean margin") + (
            " change / |self-transfer|" if "normalized" in m else " change")
        sp = TaskSpace(e.value, tasks, [groups[a] for a in tasks], name,
                       dict(prov_common, perf=what), e.low, e.high)
        sp.save(out / "spaces" / f"{name}.csv")
        spaces[name] = sp
    frames = []
    for a in tasks:
        if finetuned[a] is not None:
            df = finetuned[a].copy()
            df.insert(0, "finetuned_on", a)
            frames.append(df)
    if frames:
        import pandas as pd

        _write_parquet(out / "scores" / f"{probe}.parquet", pd.concat(frames, ignore_index=True))
    _write_task_table(out / "stats" / f"{probe}_tasks.csv", [records[a] for a in tasks])
    timings["assemble"] = time.perf_counter() - t
    write_json(out / "stats" / f"{probe}_timings.json", timings)
    return spaces


def _run_task(a: str, *, probe: str, loaded: "LoadedModel", scorer: Any, settings: "ProbeSettings",
              train_pairs: list, dev_pairs: list, eval_pairs: list, base_df: "pd.DataFrame",
              base_nll: float, heldout: Sequence[str] | None, groups: dict, out: Path, rows_dir: Path,
              save_deltas: bool, timings: dict) -> dict:
    """Fine-tune on one task, evaluate on all, write its per-pair log and delta; return its record."""
    from .deltas import applied, save_delta
    from .ftgd import finetune_lm, ftgd

    model, tokenizer = loaded.model, loaded.tokenizer
    common = dict(steps=settings.steps, lr=settings.lr, patience=settings.patience,
                  eval_every=settings.eval_every, batch_pairs=settings.batch_pairs, prefix=settings.prefix,
                  batch_tokens=settings.batch_tokens, seed=settings.seed)
    mask_info: dict = {"kind": "all parameters"}
    grad_seconds = 0.0
    if probe == "baseline":
        res = finetune_lm(model, tokenizer, train_pairs, dev_pairs, **common)
    else:
        t = time.perf_counter()
        mask = _task_mask(loaded, a, train_pairs, groups[a], settings)
        grad_seconds = time.perf_counter() - t
        timings["gradients"] += grad_seconds
        mask_info = {"kind": settings.mask_kind, "fraction": settings.mask_fraction,
                     "threshold": settings.mask_threshold}
        res = ftgd(model, tokenizer, train_pairs, dev_pairs, mask, objective=settings.objective,
                   reduction=settings.reduction, **common)
        del mask
    timings["finetune"] += res.seconds
    rec = res.to_dict()
    rec["mask"] = mask_info
    rec["gradient_seconds"] = grad_seconds
    rec["eval_seconds"] = 0.0
    if not res.ok:
        return rec
    t = time.perf_counter()
    res.delta.meta.update({"task": a, "probe": probe, "model": loaded.describe(),
                           "best_step": res.best_step})
    with applied(model, res.delta):
        df = scorer.score_pairs(eval_pairs)
        nll = heldout_nll(scorer, heldout) if heldout is not None else lm_nll(df, settings.reduction)
    st = self_transfer(base_df, df, a)
    rec.update({"self_transfer": st["margin"], "self_transfer_accuracy": st["accuracy"],
                "lm_nll_base": base_nll, "lm_nll": nll, "lm_damage": nll - base_nll})
    rec["eval_seconds"] = time.perf_counter() - t
    timings["eval"] += rec["eval_seconds"]
    if save_deltas:
        sub = Path("deltas") / ("baseline" if probe == "baseline" else "")
        save_delta(_task_path(out / sub, a, ".safetensors"), res.delta)
    _write_parquet(_task_path(rows_dir, a, ".parquet"), df)
    return rec


def _task_mask(loaded: "LoadedModel", task: str, train_pairs: list, group: str, settings: "ProbeSettings"):
    """ḡ_a on the task's training pairs, then its mask (gradient or random, per ``settings``)."""
    from ..suites.schema import Suite
    from . import compute_masks
    from .gradients import task_gradients

    one = Suite(list(train_pairs), name="train")
    grads = task_gradients(loaded.model, loaded.tokenizer, one, reduction=settings.reduction,
                           prefix=settings.prefix, batch_tokens=settings.batch_tokens, progress=False)
    mask = dict(compute_masks(grads, settings, loaded.model)[task])
    del grads
    return mask


def _done(status_dir: Path, rows_dir: Path, task: str, key: str) -> dict | None:
    """The record of a task finished earlier with the same key (and its per-pair log, if ok)."""
    from ..io import read_json

    path = _task_path(status_dir, task, ".json")
    if not path.exists():
        return None
    try:
        rec = read_json(path)
    except ValueError:
        return None
    if rec.get("key") != key:
        return None
    if rec.get("status") == "ok" and not _task_path(rows_dir, task, ".parquet").exists():
        return None
    return rec


def _task_path(folder: Path, task: str, suffix: str) -> Path:
    from .output import task_filename

    return Path(folder) / f"{task_filename(task)}{suffix}"


def _write_parquet(path: Path, df: "pd.DataFrame") -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _read_parquet(path: Path) -> "pd.DataFrame":
    import pandas as pd

    return pd.read_parquet(path)


def _write_task_table(path: Path, records: list[dict]) -> None:
    import pandas as pd

    from ..io import atomic_path

    cols = ["task", "group", "status", "reason", "steps_run", "best_step", "stopped_early", "mask_size",
            "mask_fraction", "self_transfer", "self_transfer_accuracy", "lm_nll_base", "lm_nll",
            "lm_damage", "delta_norm", "seconds", "gradient_seconds", "eval_seconds"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in records], columns=cols)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")


def _release_memory() -> None:
    """Free what the finished task allocated, and hand freed heap back to the OS (glibc keeps it
    otherwise, and tasks with longer sentences would raise the peak step by step)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class _null:
    def __enter__(self) -> Callable[..., None]:
        return lambda n=1, **kw: None

    def __exit__(self, *exc: object) -> None:
        return None


def summary(spaces: dict[str, "TaskSpace"], probe: str, records_csv: str | Path | None = None) -> dict:
    """What the CLI prints: diagonal mean of T, within- vs between-group mean of T̃, failed tasks, LM damage."""
    import numpy as np

    T = spaces[probe]
    Tn = spaces[probe + "_normalized"]
    out: dict[str, Any] = {"probe": probe, "n_tasks": T.n_tasks,
                           "diagonal_mean": float(np.nanmean(np.diag(T.matrix)))
                           if np.isfinite(np.diag(T.matrix)).any() else float("nan"),
                           "normalized": Tn.within_between(),
                           "failed": T.provenance.get("failed_tasks", {})}
    if records_csv is not None and Path(records_csv).exists():
        import pandas as pd

        df = pd.read_csv(records_csv)
        ok = df[df["status"] == "ok"]
        out["lm_damage_mean"] = float(ok["lm_damage"].mean()) if len(ok) else float("nan")
    return out
