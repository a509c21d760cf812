"""A scoring's results in lm-evaluation-harness's output shapes, for tools that read lm-eval's files.

A leaf writer: it receives the per-pair table and the provenance of a scoring
(:class:`~taskspace.scoring.results.ScoreResult`'s ``pairs`` and ``provenance``) and knows nothing else.

lm-eval (0.4.x) writes ``results_<date>.json`` and, with ``--log_samples``, one
``samples_<task>_<date>.jsonl`` per task (``lm_eval/loggers/evaluation_tracker.py``). We write
``results.json`` and ``samples_<task>.jsonl`` (no date: the folder is the run) with lm-eval's keys:

- ``results``: ``{task: {"alias": task, "acc,none": mean of acc, "acc_stderr,none": stderr}}``, the task
  named ``blimp_<UID>`` for a BLiMP suite (lm-eval's task names), else the task id. The stderr is
  lm-eval's ``mean_stderr`` (``lm_eval/api/metrics.py``): ``sample_stddev(acc) / sqrt(n)`` with the
  sample (n − 1) standard deviation, which for 0/1 values is ``sqrt(p (1 − p) / (n − 1))``; ``"N/A"``
  for one pair, as lm-eval writes it;
- ``versions``: lm-eval's task version (1.0 for its BLiMP tasks) where the numbers are lm-eval's own
  computation (a BLiMP suite under the ``lm-eval`` convention), else null; ``n-shot`` (0) and
  ``higher_is_better``;
- ``config``: ``model``, ``model_revision``, ``model_dtype``, ``model_num_parameters``, ``device``,
  ``limit`` as lm-eval names them, plus ``convention`` (ours, in full) and taskspace's versions.

A sample record has lm-eval's keys: ``doc_id`` (0-based position in the task), ``doc`` (BLiMP's field
names: ``sentence_good``, ``sentence_bad``, ``UID``, ``linguistics_term``, ``pairID``), ``target`` (``"0"``,
the good sentence), ``arguments`` (``{"gen_args_0": {"arg_0": "", "arg_1": text scored}, ...}``), ``resps``
and ``filtered_resps`` (the two log-likelihoods, written as strings as lm-eval's sanitiser writes them,
with ``is_greedy`` as ``"None"``: taskspace does not compute it), ``filter`` (``"none"``), ``metrics``
(``["acc"]``) and ``acc``. lm-eval's ``doc_hash`` / ``prompt_hash`` / ``target_hash`` are left out (its
``doc`` holds BLiMP columns we do not keep, so the hash would not match its own).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_path, write_json

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: lm-eval's version of its BLiMP task configs (``metadata: version: 1.0`` in ``_template_yaml``)
BLIMP_TASK_VERSION = 1.0


def mean_stderr(values: Any) -> float | str:
    """lm-eval's ``mean_stderr``: sample standard deviation (n − 1) / sqrt(n); ``"N/A"`` for n < 2."""
    xs = [float(x) for x in values]
    n = len(xs)
    if n < 2:
        return "N/A"
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def task_name(task: str, blimp: bool) -> str:
    """lm-eval's name of a task: ``blimp_<UID>`` for BLiMP, else the task id."""
    return f"blimp_{task}" if blimp else task


def _file_stem(name: str, taken: set[str]) -> str:
    stem = re.sub(r"[^\w.-]", "_", name, flags=re.ASCII) or "task"
    out, k = stem, 1
    while out in taken:
        k += 1
        out = f"{stem}-{k}"
    taken.add(out)
    return out


def lm_eval_results(pairs: "pd.DataFrame", provenance: dict) -> dict:
    """lm-eval's ``results.json`` content for a scoring's pairs and provenance (see the module docstring)."""
    prov = provenance
    conv = prov.get("convention", {})
    blimp = prov.get("suite", {}).get("name") == "blimp"
    own = blimp and conv.get("name") == "lm-eval"
    results, versions, n_shot, better = {}, {}, {}, {}
    for task, df in pairs.groupby("task", sort=False):
        name = task_name(str(task), blimp)
        acc = df["correct"].astype(float)
        results[name] = {"alias": name, "acc,none": float(acc.mean()), "acc_stderr,none": mean_stderr(acc)}
        versions[name] = BLIMP_TASK_VERSION if own else None
        n_shot[name] = 0
        better[name] = {"acc": True}
    model = prov.get("model", {})
    config = {"model": model.get("model"), "model_revision": model.get("revision"),
              "model_dtype": model.get("dtype"), "model_num_parameters": model.get("n_parameters"),
              "device": model.get("device"), "limit": prov.get("limit_per_task"), "convention": conv,
              "taskspace_versions": prov.get("versions", {})}
    return {"results": results, "versions": versions, "n-shot": n_shot, "higher_is_better": better,
            "config": config, "transformers_version": prov.get("versions", {}).get("transformers")}


def lm_eval_samples(pairs: "pd.DataFrame", provenance: dict) -> dict[str, list[dict]]:
    """``{lm-eval task name: [sample record, ...]}`` (see the module docstring)."""
    conv = provenance.get("convention", {})
    blimp = provenance.get("suite", {}).get("name") == "blimp"
    space = " " if conv.get("leading_space") else ""
    has_text = "good" in pairs.columns and "bad" in pairs.columns
    out: dict[str, list[dict]] = {}
    for task, df in pairs.groupby("task", sort=False):
        records = []
        for i, row in enumerate(df.itertuples(index=False)):
            good = row.good if has_text else None
            bad = row.bad if has_text else None
            lls = [str(float(row.logp_good)), str(float(row.logp_bad))]
            records.append({
                "doc_id": i,
                "doc": {"sentence_good": good, "sentence_bad": bad, "UID": str(task),
                        "linguistics_term": row.group, "pairID": row.pair_id},
                "target": "0",
                "arguments": {f"gen_args_{j}": {"arg_0": "", "arg_1": None if s is None else space + s}
                              for j, s in enumerate((good, bad))},
                "resps": [[[ll, "None"]] for ll in lls],
                "filtered_resps": [[ll, "None"] for ll in lls],
                "filter": "none",
                "metrics": ["acc"],
                "acc": 1.0 if bool(row.correct) else 0.0,
            })
        out[task_name(str(task), blimp)] = records
    return out


def write_lm_eval(pairs: "pd.DataFrame", provenance: dict, out_dir: str | Path) -> list[Path]:
    """Write ``results.json`` and one ``samples_<task>.jsonl`` per task into ``out_dir`` (atomically);
    return the paths written."""
    out = Path(out_dir)
    paths = [out / "results.json"]
    write_json(paths[0], lm_eval_results(pairs, provenance))
    taken: set[str] = set()
    for name, records in lm_eval_samples(pairs, provenance).items():
        path = out / f"samples_{_file_stem(name, taken)}.jsonl"
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths
