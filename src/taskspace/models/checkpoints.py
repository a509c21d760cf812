"""Checkpoints and training state on disk for :mod:`taskspace.models.pretrain` (safetensors + JSON,
never pickle).

A checkpoint ``DIR/stepN`` is written to a temporary folder and renamed into place, so it is either
complete or absent. The latest one also holds ``training_state/`` (optimizer moments and step counts,
RNG state, data position, the rows of ``training.csv``), from which a killed run resumes exactly.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import TaskspaceError
from ..io import atomic_path, write_json

# torch and safetensors are imported where a checkpoint is read or written; fcntl (POSIX only) where a folder
# is locked

STATE_DIR = "training_state"
CSV_COLUMNS = ("step", "tokens_seen", "train_loss", "heldout_loss", "elapsed_s")


def optimizer_to_disk(optimizer: Any) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON-able scalars."""
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{idx}.{k}"] = v.detach().clone().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_disk(optimizer: Any, tensors: dict, meta: dict) -> None:
    """Inverse of :func:`optimizer_to_disk`: restore the moments and step counts exactly."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def find_resume_checkpoint(out: Path) -> Path | None:
    """The latest ``stepN`` folder that holds a complete training state, or None."""
    best: tuple[int, Path] | None = None
    if not out.is_dir():
        return None
    for d in out.iterdir():
        if d.is_dir() and d.name.startswith("step") and d.name[4:].isdigit():
            if (d / STATE_DIR / "state.json").is_file() and (d / STATE_DIR / "state.safetensors").is_file():
                n = int(d.name[4:])
                if best is None or n > best[0]:
                    best = (n, d)
    return best[1] if best else None


def commit_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final`` (replacing an older copy), so ``final`` is never half-written."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)


def clean_stale(out: Path) -> None:
    """Remove temporary folders a killed run left behind (never a committed checkpoint)."""
    for d in out.iterdir():
        if d.name.startswith(".step") and (".tmp-" in d.name or ".old-" in d.name):
            shutil.rmtree(d, ignore_errors=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(",".join(CSV_COLUMNS) + "\n")
            for r in rows:
                f.write(",".join(_fmt(r.get(c)) for c in CSV_COLUMNS) + "\n")


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def save_checkpoint(out: Path, step: int, model: Any, tok: Any, opt: Any, state: dict) -> None:
    """Write checkpoint ``out/stepN`` atomically: model, tokenizer and training state. ``tok`` is a
    tokenizer, or ``{file name: bytes}`` of its saved files (written as they are)."""
    import torch
    from safetensors.torch import save_file


    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".step{step}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is as readable as any folder
    model.save_pretrained(tmp, safe_serialization=True)
    if isinstance(tok, dict):
        for name, data in tok.items():
            (tmp / name).write_bytes(data)
    else:
        tok.save_pretrained(tmp)
    (tmp / STATE_DIR).mkdir()
    tensors, opt_meta = optimizer_to_disk(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / STATE_DIR / "state.safetensors"))
    write_json(tmp / STATE_DIR / "state.json", dict(state, optimizer=opt_meta))
    commit_dir(tmp, out / f"step{step}")
    # only the latest checkpoint keeps a training state (it is twice the model's size)
    for d in out.iterdir():
        if d.is_dir() and d.name.startswith("step") and d.name != f"step{step}" and (d / STATE_DIR).exists():
            shutil.rmtree(d / STATE_DIR, ignore_errors=True)


class _Lock:
    def __init__(self, f: Any) -> None:
        self.f = f

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def lock_folder(out: Path) -> _Lock:
    """An exclusive lock on ``out`` for this process (released by the OS if the process is killed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        return _Lock(None)
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise TaskspaceError(f"{out} is being written by another process") from None
    return _Lock(f)
