"""Controls: the same probe on a model that has learned nothing (docs/design.md, "Controls").

Task similarity can come from the surface of the pairs — the same words in the same positions — rather
than from what the model learned: on ``gutenberg-gpt2-5m`` the top-5% masks of the untrained weights
already overlap more within BLiMP groups than between. So every probe can run on a control, and results
are reported as trained, control and their difference:

- ``first``: the first checkpoint of a local model folder (``step0`` of a ``taskspace pretrain`` run);
- ``init``: the same architecture freshly initialised with a fixed seed (``load_model`` revision
  ``init``), which works for any model, hub or local.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError, TaskspaceError
from ..models.loading import list_revisions
from .settings import CONTROLS

if TYPE_CHECKING:  # pragma: no cover
    from ..spaces import TaskSpace


def control_revision(model_name: str, revision: str | None, control: str) -> str:
    """The revision to load for ``control`` (``first`` or ``init``) of ``model_name``.

    ``first`` needs a local folder of checkpoints (``taskspace.models.list_revisions``); ``init`` is
    the revision ``"init"`` that :func:`taskspace.models.load_model` turns into a fresh, seeded
    initialisation of the same architecture.
    """
    if control not in CONTROLS:
        raise InputError(f"unknown control {control!r}; choose one of {', '.join(CONTROLS)}", field="control")
    if control == "init":
        return "init"
    revs = list_revisions(model_name)
    if not revs:
        raise TaskspaceError(f"control 'first' needs a local model folder with checkpoint sub-folders; "
                             f"{model_name} has none (use --control init)")
    if revision is not None and revision == revs[0]:
        raise TaskspaceError(f"control 'first' is {revs[0]}, the revision being probed; probe a later "
                             f"checkpoint or use --control init")
    return revs[0]


def summarize_with_control(trained: "TaskSpace", control: "TaskSpace | None") -> dict:
    """Within-group mean, between-group mean and their difference for the trained space, the control
    space, and trained − control (``control`` and the difference are None without a control)."""
    out: dict = {"kind": trained.kind, "trained": trained.within_between(), "control": None,
                 "trained_minus_control": None}
    if control is not None:
        if control.tasks != trained.tasks:
            raise TaskspaceError("the control space covers different tasks than the trained one")
        c = control.within_between()
        out["control"] = c
        out["trained_minus_control"] = {k: out["trained"][k] - c[k] for k in ("within", "between", "difference")}
    return out
