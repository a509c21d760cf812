"""Probes: how two tasks interact inside a model (DESIGN §2).

Every probe kind is one entry of the registry (:mod:`.registry`; built-in entries in :mod:`.kinds`), run
through one call (:func:`probe`) that returns one result type (:class:`ProbeResult`). The pieces:

- gradient differentials ḡ_t (:mod:`.gradients`) and readable module names (:mod:`.modules`);
- masks, overlap and how a gradient spreads (:mod:`.masks`);
- the ``gradients`` and ``overlap`` task spaces and the distributedness table (:mod:`.similarity`);
- controls: first checkpoint or fresh initialisation (:mod:`.controls`);
- the on-disk layout of a probe run (:mod:`.output`);
- FTGD, transfer and the entangled baseline (:mod:`.ftgd`, :mod:`.transfer`);
- the newer probes, one module each: :mod:`.activations`, :mod:`.latent`, :mod:`.lookahead`,
  :mod:`.transfer_estimate`, :mod:`.ablation` (``docs/probes.md``).

>>> from taskspace.probes import ProbeSettings, probe
>>> res = probe(lm, suite, "gradients", ProbeSettings(train_pairs=50))
>>> res.spaces["gradients"].within_between()
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Re-exports load on first use (PEP 562), so `taskspace.probes.settings` and the CLI's input checks
# do not pay for importing torch.
_EXPORTS = {
    "control_revision": "controls", "summarize_with_control": "controls",
    "TaskGradients": "gradients", "task_gradients": "gradients",
    "jaccard": "masks", "load_mask": "masks", "mask_size": "masks", "module_shares": "masks",
    "participation_ratio": "masks", "random_mask": "masks", "save_mask": "masks",
    "threshold_mask": "masks", "top_fraction_mask": "masks",
    "layer_index": "modules", "module_of": "modules", "param_modules": "modules",
    "ProbeSettings": "settings", "parse_tasks": "settings",
    "ProbeResult": "result", "probe": "run", "ProbeSpec": "registry", "SpaceSpec": "registry",
    "register": "registry",
    "GradientProbeResult": "similarity", "MaskSet": "similarity", "compute_masks": "similarity",
    "distributedness": "similarity", "gradient_space": "similarity", "overlap_space": "similarity",
    "run_gradient_probes": "similarity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from .controls import control_revision, summarize_with_control
    from .gradients import TaskGradients, task_gradients
    from .masks import (jaccard, load_mask, mask_size, module_shares, participation_ratio, random_mask,
                        save_mask, threshold_mask, top_fraction_mask)
    from .modules import layer_index, module_of, param_modules
    from .registry import ProbeSpec, SpaceSpec, register
    from .result import ProbeResult
    from .run import probe
    from .settings import ProbeSettings, parse_tasks
    from .similarity import (GradientProbeResult, MaskSet, compute_masks, distributedness, gradient_space,
                             overlap_space, run_gradient_probes)
