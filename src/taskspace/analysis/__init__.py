"""Analysis of task spaces: comparison with linguistic theory, controls, checkpoints and model sizes
(docs/design.md, "Comparing with theory"; docs/reliability.md).

Plain arrays, DataFrames and dicts out::

    from taskspace.analysis import compare_run, mantel, hypothesis_space
    cmp = compare_run("runs/blimp")          # writes runs/blimp/comparison.json
"""
from __future__ import annotations

from .bootstrap import bootstrap_space, paired_delta
from .clustering import cluster_space
from .collect import Cell, ModelCells, RunData, load_probe_dir, load_run
from .compare import compare_run, compare_spaces, summarize_space
from .distributedness import summarize_distributedness
from .dynamics import largest_change, revision_key, space_correlation, space_dynamics
from .findings import findings, headline
from .generalization import generalization_table, group_generalization, wide
from .hypothesis import group_blocks, group_order, hypothesis_space
from .reliability import noise_ceiling, split_space  # reliability(): taskspace.analysis.reliability
from .stats import complete_tasks, mantel, spearman_offdiagonal, within_between

__all__ = [
    "Cell", "ModelCells", "RunData", "bootstrap_space", "cluster_space", "compare_run", "compare_spaces", "complete_tasks",
    "findings", "generalization_table", "group_blocks", "group_generalization", "group_order", "headline",
    "hypothesis_space", "load_probe_dir", "load_run", "mantel", "noise_ceiling", "paired_delta",
    "revision_key", "split_space", "space_correlation",
    "space_dynamics", "spearman_offdiagonal", "largest_change", "summarize_distributedness",
    "summarize_space", "wide", "within_between",
]
