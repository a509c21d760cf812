"""Load a causal LM and its tokenizer from a local folder or the Hugging Face hub.

A local folder with ``revision="stepN"`` means the sub-folder ``stepN`` (the layout that
``taskspace pretrain`` writes and that ``../shared/models/gutenberg-gpt2-5m`` uses); a hub name with a
revision is passed to ``from_pretrained(revision=...)`` (Pythia's ``stepN`` branches).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelLoadError
from ..io import user_path

DTYPES = {"float32": "float32", "fp32": "float32", "float64": "float64", "fp64": "float64",
          "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


@dataclass
class LoadedModel:
    """A model, its tokenizer, and where they came from (recorded in every output)."""

    model: Any
    tokenizer: Any
    name: str
    revision: str | None
    path: str
    device: str
    dtype: str
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """Where the model came from, for provenance (name, revision, path, device, dtype, ...)."""
        return {"model": self.name, "revision": self.revision, "path": self.path,
                "device": self.device, "dtype": self.dtype, **self.info}


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" bars and info warnings while we load; restore after."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_dtype(dtype: str) -> tuple[str, Any]:
    """``(name, torch.dtype)`` for a dtype name (float32, fp32, float64, bfloat16, bf16, float16, fp16)."""
    import torch

    key = DTYPES.get(str(dtype).lower())
    if key is None:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of float32, float64, bfloat16, float16")
    return key, getattr(torch, key)


def resolve_device(device: str | None) -> str:
    """The device to load on: ``None``/``"auto"`` → cuda when available, else cpu."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but no CUDA device is available")
    return device


def resolve_local(name: str, revision: str | None) -> Path | None:
    """The local folder for ``name``/``revision``, or None when ``name`` is not a local path."""
    p = user_path(name)
    if not p.exists():
        if name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise ModelLoadError(f"model folder {name} does not exist")
        return None
    if not p.is_dir():
        raise ModelLoadError(f"model path {name} is not a folder")
    if revision:
        sub = p / revision
        if not sub.is_dir():
            have = list_revisions(str(p))
            raise ModelLoadError(f"model folder {name} has no revision {revision!r}"
                                 + (f" (it has: {', '.join(have)})" if have else ""))
        p = sub
    if not (p / "config.json").exists():
        revs = list_revisions(str(p))
        hint = f"; pass --revision, one of: {', '.join(revs)}" if revs else ""
        raise ModelLoadError(f"{p} holds no config.json{hint}")
    return p


def list_revisions(name: str) -> list[str]:
    """Checkpoint sub-folders of a local model folder, in training order (``stepN`` by N)."""
    p = Path(name)
    if not p.is_dir():
        return []
    revs = [d.name for d in p.iterdir() if d.is_dir() and (d / "config.json").exists()]

    def key(r: str):
        return (0, int(r[4:])) if r.startswith("step") and r[4:].isdigit() else (1, r)

    return sorted(revs, key=key)


def load_model(
    name: str,
    revision: str | None = None,
    *,
    device: str | None = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``AutoModelForCausalLM`` and its tokenizer, in eval mode, on ``device`` in ``dtype``.

    Raises :class:`ModelLoadError` with one clear line when the folder, revision or hub is unreachable.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype_name, torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    if revision is not None and (revision == "init" or revision.startswith("init:")):
        return _load_fresh_init(name, revision, device=device, dtype=dtype_name,
                                trust_remote_code=trust_remote_code)
    local = resolve_local(name, revision)
    src = str(local) if local is not None else name
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if local is None and revision:
        kwargs["revision"] = revision
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **kwargs)
    except Exception as e:  # noqa: BLE001 - hub, file and config errors all become one clear line
        raise _load_error(name, revision, local is None, e) from None
    model.to(device)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    info = {"architecture": type(model).__name__, "n_parameters": n_params,
            "trust_remote_code": trust_remote_code}
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, revision=revision, path=src,
                       device=device, dtype=dtype_name, info=info)


def _load_error(name: str, revision: str | None, hub: bool, e: Exception) -> ModelLoadError:
    where = name + (f" (revision {revision})" if revision else "")
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if hub:
        return ModelLoadError(f"could not load model {where} from the Hugging Face hub (no network, "
                              f"or no such model/revision; a local folder works offline): {first}")
    return ModelLoadError(f"could not load model {where}: {first}")


def _load_fresh_init(name: str, revision: str, *, device: str, dtype: str,
                     trust_remote_code: bool) -> LoadedModel:
    """The control ``revision="init[:SEED]"``: the model's architecture and tokenizer, weights freshly
    initialised with a fixed seed (default 0). For a local folder of checkpoints the config and
    tokenizer come from its first checkpoint."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        seed = int(revision.split(":", 1)[1]) if ":" in revision else 0
    except ValueError:
        raise ModelLoadError(f"revision {revision!r}: the seed after 'init:' must be an integer") from None
    revs = list_revisions(name)
    ref_rev = revs[0] if revs else None
    local = resolve_local(name, ref_rev)
    src = str(local) if local is not None else name
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    try:
        with quiet_loading():
            config = AutoConfig.from_pretrained(src, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise _load_error(name, ref_rev, local is None, e) from None
    # a seeded generator of its own: the control is the same for a seed, and the caller's RNG is untouched
    with torch.random.fork_rng(devices=[]), quiet_loading():
        torch.manual_seed(seed)
        # initialised in float32 and then cast, so a seed gives the same weights in every dtype
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    model.to(device=device, dtype=resolve_dtype(dtype)[1])
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    info = {"architecture": type(model).__name__, "n_parameters": n_params,
            "trust_remote_code": trust_remote_code, "initialised_from_config_of": src, "init_seed": seed}
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, revision=revision, path=src,
                       device=device, dtype=dtype, info=info)
