"""Sparse parameter deltas ``Δ_a`` (docs/design.md, "Probes", transfer): ``θ_a = θ_0 + Δ_a``.

A :class:`Delta` holds, per parameter, the flat indices it changes and the float32 values added there
(or every entry, in flat order, for a dense delta from full fine-tuning). On disk it is one
safetensors file: ``<name>.indices`` (int64, absent for a dense entry) and ``<name>.values`` per
parameter, with shapes and provenance in the file's metadata — so a fine-tuned model can be rebuilt
and inspected without ever storing a second copy of the model.

:func:`applied` adds a delta to a model for the duration of a ``with`` block and restores the
original values bit-exactly afterwards (they are saved, never recomputed by subtraction).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...errors import InputError
from ...io import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class Delta:
    """Per parameter: ``(indices or None, values)``; ``indices=None`` means every entry (dense).

    ``values`` are float32 whatever the model's dtype, so small updates to a bfloat16 model are not
    rounded away in the file; :func:`applied` adds them in float32 and casts once.
    """

    entries: dict[str, tuple["torch.Tensor | None", "torch.Tensor"]]
    shapes: dict[str, tuple[int, ...]]
    meta: dict = field(default_factory=dict)

    @property
    def n_entries(self) -> int:
        """Number of parameter entries the delta touches."""
        return sum(int(v.numel()) for _, v in self.entries.values())

    def n_nonzero(self) -> int:
        return sum(int((v != 0).sum()) for _, v in self.entries.values())

    def norm(self) -> float:
        """Euclidean norm of Δ over all parameters."""
        return float(sum(float(v.double().pow(2).sum()) for _, v in self.entries.values()) ** 0.5)

    def dense(self, name: str) -> "torch.Tensor":
        """The full-shape float32 delta of one parameter (zeros where untouched)."""
        idx, val = self.entries[name]
        shape = self.shapes[name]
        if idx is None:
            return val.reshape(shape).clone()
        out = torch.zeros(int(torch.tensor(shape).prod()) if shape else 1, dtype=torch.float32)
        out[idx] = val
        return out.reshape(shape)


def save_delta(path: str | Path, delta: Delta) -> Path:
    """Write ``delta`` as one safetensors file, atomically."""
    tensors = {}
    for name, (idx, val) in delta.entries.items():
        if idx is not None:
            tensors[f"{name}.indices"] = idx.to("cpu", dtype=_long()).contiguous()
        tensors[f"{name}.values"] = val.to("cpu", dtype=_float()).contiguous()
    meta = {"format": "taskspace.delta/1",
            "shapes": json.dumps({k: list(v) for k, v in delta.shapes.items()}),
            "meta": json.dumps(delta.meta, default=str)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_delta(path: str | Path) -> Delta:
    """Read a delta written by :func:`save_delta`."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            if md.get("format") != "taskspace.delta/1":
                raise InputError("not a taskspace delta file", file=path, field="format")
            shapes = {k: tuple(v) for k, v in json.loads(md["shapes"]).items()}
            keys = set(f.keys())
            entries = {}
            for name in shapes:
                idx = f.get_tensor(f"{name}.indices") if f"{name}.indices" in keys else None
                entries[name] = (idx, f.get_tensor(f"{name}.values"))
            meta = json.loads(md.get("meta", "{}"))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file is bad input, reported in one line
        raise InputError(f"unreadable delta file ({type(e).__name__}: {e})", file=path) from None
    return Delta(entries, shapes, meta)


@contextmanager
def applied(model: Any, delta: Delta | None) -> Iterator[Any]:
    """``with applied(model, delta): ...`` evaluates ``θ_0 + Δ``; on exit every touched parameter
    holds its original bits again (saved values are copied back, nothing is subtracted).

    ``delta=None`` is a no-op (the base model).
    """
    if delta is None:
        yield model
        return
    params = dict(model.named_parameters())
    missing = [n for n in delta.entries if n not in params]
    if missing:
        raise InputError(f"delta names parameters the model does not have: {', '.join(missing[:3])}",
                         field="delta")
    saved: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, (idx, val) in delta.entries.items():
                p = params[name]
                if tuple(p.shape) != tuple(delta.shapes[name]):
                    raise InputError(f"delta shape {tuple(delta.shapes[name])} does not match "
                                     f"parameter {name} {tuple(p.shape)}", field="delta")
                flat = p.data.view(-1)
                v = val.to(p.device)
                if idx is None:
                    orig = flat.clone()
                    saved.append((flat, None, orig))
                    flat.copy_((orig.float() + v).to(p.dtype))
                else:
                    i = idx.to(p.device)
                    orig = flat[i]  # advanced indexing copies
                    saved.append((flat, i, orig))
                    flat.index_copy_(0, i, (orig.float() + v).to(p.dtype))
        yield model
    finally:
        with torch.no_grad():
            for flat, i, orig in reversed(saved):
                if i is None:
                    flat.copy_(orig)
                else:
                    flat.index_copy_(0, i, orig)


def _long():
    return torch.int64


def _float():
    return torch.float32
