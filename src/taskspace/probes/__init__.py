"""Probes: how two tasks interact inside a model.

The interface: every probe kind is one :class:`ProbeSpec` (:mod:`.spec`) in the registry
(:mod:`.registry`; the built-in entries are data in :mod:`.builtin`, others arrive through the
``taskspace.probes`` entry-point group), configured by :class:`ProbeSettings` (:mod:`.settings`), run
through one call (:func:`probe`, :mod:`.run`) that returns one result type (:class:`ProbeResult`,
:mod:`.result`) written in one layout (:mod:`.output`); controls in :mod:`.controls`; helpers every probe
may use in :mod:`.common`. Below it, one folder each:

- :mod:`.kinds` — one module per probe kind (gradients + overlap, transfer + baseline, activations,
  latent, lookahead, transfer_estimate, ablation, steering + erasure, steering_estimate); they import the
  machinery below, never each other;
- :mod:`.gradient` — gradient differentials ḡ_t, module names, masks, bitsets, count sketches, compiled
  kernels, and the gradient / overlap spaces;
- :mod:`.finetune` — FTGD, sparse deltas, evaluation of fine-tuned models, and what one FTGD row needs.

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
    "TaskGradients": "gradient.differentials", "task_gradients": "gradient.differentials",
    "jaccard": "gradient.masks", "load_mask": "gradient.masks", "mask_size": "gradient.masks",
    "module_shares": "gradient.masks", "participation_ratio": "gradient.masks", "random_mask": "gradient.masks",
    "save_mask": "gradient.masks", "threshold_mask": "gradient.masks", "top_fraction_mask": "gradient.masks",
    "layer_index": "gradient.modules", "module_of": "gradient.modules", "param_modules": "gradient.modules",
    "ProbeSettings": "settings", "parse_tasks": "settings",
    "ProbeResult": "result", "probe": "run", "Option": "spec", "ProbeSpec": "spec", "SpaceSpec": "spec",
    "register": "registry",
    "GradientProbeResult": "gradient.similarity", "MaskSet": "gradient.similarity",
    "compute_masks": "gradient.similarity", "distributedness": "gradient.similarity",
    "gradient_space": "gradient.similarity", "overlap_space": "gradient.similarity",
    "run_gradient_probes": "gradient.similarity",
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
    from .gradient.differentials import TaskGradients, task_gradients
    from .gradient.masks import (
        jaccard,
        load_mask,
        mask_size,
        module_shares,
        participation_ratio,
        random_mask,
        save_mask,
        threshold_mask,
        top_fraction_mask,
    )
    from .gradient.modules import layer_index, module_of, param_modules
    from .gradient.similarity import (
        GradientProbeResult,
        MaskSet,
        compute_masks,
        distributedness,
        gradient_space,
        overlap_space,
        run_gradient_probes,
    )
    from .registry import ProbeSpec, SpaceSpec, register
    from .result import ProbeResult
    from .run import probe
    from .settings import ProbeSettings, parse_tasks
