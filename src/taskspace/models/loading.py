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


#: files that hold a tokenizer's vocabulary (fast tokenizer, GPT-2/BPE, WordPiece, SentencePiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
#: files that hold a model's weights (single file or a sharded index)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: a sentence every tokenizer must encode to at least one id
PROBE_SENTENCE = "The cat sleeps."


def check_model_folder(folder: str | Path) -> None:
    """Refuse a local model folder that could not give a working model, without loading weights:
    it needs a ``config.json`` (a JSON object naming a ``model_type``), tokenizer files
    (:data:`TOKENIZER_FILES`) and a weights file (:data:`WEIGHT_FILES`; a ``.safetensors`` file's
    header must be intact and the file as long as the header says). One-line :class:`ModelLoadError`
    naming the folder. Used by a run's pre-flight, so a plan is refused before anything is written."""
    import json

    p = Path(folder)
    if not p.is_dir():
        raise ModelLoadError(f"model folder {p} does not exist")
    cfg = p / "config.json"
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model folder {p} holds no config.json") from None
    except (OSError, ValueError, RecursionError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"model folder {p}: config.json is not readable JSON ({first})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"model folder {p}: config.json names no model_type")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"model folder {p} holds no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
                             "save the tokenizer beside the model")
    weights = next((p / f for f in WEIGHT_FILES if (p / f).is_file()), None)
    if weights is None:
        raise ModelLoadError(f"model folder {p} holds no weights ({' or '.join(WEIGHT_FILES[::2])})")
    if weights.name == "model.safetensors":
        problem = _safetensors_problem(weights)
        if problem:
            raise ModelLoadError(f"model folder {p}: model.safetensors is damaged ({problem})")


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is damaged (bad header, truncated), or None; reads the header only."""
    import json
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8 or n > 100_000_000:
                return "header longer than the file"
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError, RecursionError):
        return "unreadable header"
    if not isinstance(header, dict):
        return "unreadable header"
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets") or ()) == 2]
    if ends and 8 + n + max(ends) > size:
        return f"truncated: {size} bytes, the header needs {8 + n + max(ends)}"
    return None


def check_tokenizer(tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer that would make every score meaningless: no vocabulary, or a probe sentence
    that encodes to no ids (e.g. a folder without tokenizer files loads an empty tokenizer)."""
    try:
        n_vocab = len(tokenizer)
        ids = tokenizer(PROBE_SENTENCE, add_special_tokens=False)["input_ids"]
    except Exception as e:  # noqa: BLE001 - any failure here is the same finding: no usable tokenizer
        raise ModelLoadError(f"the tokenizer of {where} does not work ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0]})") from None
    if not n_vocab or not ids:
        raise ModelLoadError(f"the tokenizer of {where} is empty (vocabulary {n_vocab}, {PROBE_SENTENCE!r} "
                             f"encodes to {list(ids)}): the folder has no usable tokenizer files")


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
    check_tokenizer(tokenizer, src)
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
    check_tokenizer(tokenizer, src)
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
