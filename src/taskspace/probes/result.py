"""One result type for every probe: :class:`ProbeResult` (``.spaces``, ``.summary()``, ``.save(dir)``)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..io import atomic_path, write_json
from .output import probe_dir, space_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..spaces import TaskSpace


@dataclass
class ProbeResult:
    """What one probe (or one job computing several probes) found on one model checkpoint.

    ``spaces``: task spaces keyed by their file stem under ``spaces/`` (``gradients``,
    ``transfer_normalized``, ``gradients_by_module/block0.attn``). ``tables``: per-task tables keyed by
    their path relative to the probe folder (``stats/distributedness.csv``, ``cards/latent.csv``), each
    with its provenance. ``records``: JSON files keyed the same way. ``workdir``: a folder the probe
    already wrote per-task files into while it ran (FTGD's resume units, deltas, per-pair logs);
    :meth:`save` copies them when saving elsewhere. ``writers``: functions that write more files into
    the probe folder at save time (e.g. the masks with ``save_masks``; each returns the paths written).
    ``extra``: in-memory objects for Python users (e.g. the gradients), never written. ``halves``: the
    split-half pass's result, when the runner made it in the same call (``ProbeSpec.joint_halves``);
    ``taskspace.probe`` files its main spaces as ``spaces["halves/<name>"]`` and lets it go.
    """

    kinds: tuple[str, ...]
    spaces: dict[str, "TaskSpace"] = field(default_factory=dict)
    tables: dict[str, tuple["pd.DataFrame", dict]] = field(default_factory=dict)
    records: dict[str, Any] = field(default_factory=dict)
    workdir: Path | None = None
    provenance: dict = field(default_factory=dict)
    writers: list[Callable[[Path], list[Path]]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    halves: "ProbeResult | None" = None

    def main_spaces(self) -> dict[str, "TaskSpace"]:
        """The top-level spaces (not the per-module / per-layer ones)."""
        return {k: v for k, v in self.spaces.items() if "/" not in k}

    def summary(self) -> dict[str, dict]:
        """``{space: {"within", "between", "difference"}}`` for every top-level space."""
        return {k: v.within_between() for k, v in self.main_spaces().items()}

    def save(self, out: str | Path, *, control: bool = False) -> list[Path]:
        """Write everything into the probe folder ``out`` (``out/control`` with ``control=True``),
        each file atomically; returns the paths written."""
        d = probe_dir(out, control)
        paths: list[Path] = []
        if self.workdir is not None and Path(self.workdir).resolve() != d.resolve():
            for src in sorted(p for p in Path(self.workdir).rglob("*") if p.is_file()):
                dst = d / src.relative_to(self.workdir)
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
                paths.append(dst)
        for name, space in self.spaces.items():
            base, _, part = name.partition("/")
            path = space_path(d, base) if not part else d / "spaces" / base / f"{part}.csv"
            paths.append(space.save(path))
        for rel, (df, prov) in self.tables.items():
            path = d / rel
            with atomic_path(path) as tmp:
                df.to_csv(tmp, index=False, float_format="%.10g")
            write_json(path.with_suffix(".json"), {"columns": list(df.columns), "provenance": prov})
            paths += [path, path.with_suffix(".json")]
        for rel, obj in self.records.items():
            write_json(d / rel, obj)
            paths.append(d / rel)
        for write in self.writers:
            paths += write(d)
        return paths

    def __repr__(self) -> str:
        return f"ProbeResult(kinds={list(self.kinds)}, spaces={list(self.main_spaces())})"
