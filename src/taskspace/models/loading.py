"""Load a causal LM and its tokenizer from a local folder or the Hugging Face hub.

A local folder with ``revision="stepN"`` means the sub-folder ``stepN`` (the layout that
``taskspace pretrain`` writes and that ``../shared/models/gutenberg-gpt2-5m`` uses); a hub name with a
revision is passed to ``from_pretrained(revision=...)`` (Pythia's ``stepN`` branches).
"""
from __future__ import annotations

import json
import math
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelLoadError
from ..io import user_path

# torch, transformers and huggingface_hub are imported inside the functions that use them: `import taskspace`
# and the command line start without them

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

    @classmethod
    def from_hf(cls, model: Any, tokenizer: Any, *, name: str | None = None,
                revision: str | None = None) -> "LoadedModel":
        """Wrap a causal LM and its tokenizer that are already loaded (a ``transformers`` model, as
        ``AutoModelForCausalLM.from_pretrained`` gives it), for :func:`taskspace.score` and
        :func:`taskspace.probe`. The model is used where it is, in its dtype and mode (scoring and the
        probes switch it to eval mode while they run and back afterwards).

        ``name`` and ``revision`` are recorded in every output: by default the name the model was
        loaded from (``config._name_or_path``) and the revision transformers recorded, if any. Give
        them when the model did not come from a folder or the hub as it is, so outputs say what it is.

        >>> model = AutoModelForCausalLM.from_pretrained("EleutherAI/pythia-70m", revision="step3000")
        >>> tok = AutoTokenizer.from_pretrained("EleutherAI/pythia-70m")
        >>> lm = taskspace.LoadedModel.from_hf(model, tok, revision="step3000")
        """
        if not hasattr(model, "parameters") or not callable(getattr(model, "forward", None)):
            raise TypeError(f"expected a torch model (a transformers causal LM), got {type(model).__name__}")
        if not callable(tokenizer):
            raise TypeError(f"expected a transformers tokenizer, got {type(tokenizer).__name__}")
        config = getattr(model, "config", None)
        path = str(getattr(config, "_name_or_path", "") or "")
        name = name if name is not None else (path or type(model).__name__)
        revision = revision if revision is not None else getattr(config, "_commit_hash", None)
        check_tokenizer(tokenizer, name)
        p0 = next(model.parameters(), None)
        if p0 is None:
            raise TypeError("the model has no parameters")
        return cls(model=model, tokenizer=tokenizer, name=str(name), revision=revision, path=path or "memory",
                   device=_placed_on(model), dtype=str(p0.dtype).replace("torch.", ""),
                   info={**_model_info(model), "loaded_by": "caller"})


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


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | None) -> str:
    """The device to load on, the one resolver every command and call uses: ``None``/``"auto"`` → CUDA
    when available, else Apple's MPS, else cpu. An explicit ``cuda[:N]`` or ``mps`` that is not there
    is a :class:`ModelLoadError`."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but no CUDA device is available")
    if device.startswith("mps") and not _mps_available():
        raise ModelLoadError(f"device {device!r} asked for, but no MPS device is available")
    return device


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` (process-wide); ``None`` leaves torch's choice."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ModelLoadError(f"threads must be a positive integer, got {threads!r}")
    import torch

    torch.set_num_threads(threads)


def check_revision_name(revision: str | None) -> None:
    """A revision names a checkpoint (``step2577``, a hub branch or commit, ``init[:SEED]``), never a path:
    ``../other-model/step0`` would read another model's weights under this model's name. One-line
    :class:`ModelLoadError` for a revision with ``/`` or ``\\``, a leading ``.``, or a control character."""
    if revision is None:
        return
    if (not isinstance(revision, str) or not revision.strip() or "/" in revision or "\\" in revision
            or revision.startswith(".") or any(ord(c) < 32 or ord(c) == 127 for c in revision)):
        raise ModelLoadError(f"revision {revision!r} is not a checkpoint name: a revision names a checkpoint "
                             "(e.g. step2577, a hub branch or commit), never a path (no '/', no leading '.')")


def resolve_local(name: str, revision: str | None) -> Path | None:
    """The local folder for ``name``/``revision``, or None when ``name`` is not a local path."""
    check_revision_name(revision)
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


def check_model_folder(folder: str | Path, *, deep: bool = True) -> None:
    """Refuse a local model folder that could not give a working model, without loading weights.

    Always (cheap, no transformers): a ``config.json`` (a JSON object naming a ``model_type``), tokenizer
    files (:data:`TOKENIZER_FILES`) and a weights file (:data:`WEIGHT_FILES`; each ``.safetensors`` file's
    header intact and the file as long as the header says). ``deep`` (what a run's pre-flight does): the
    config loads with transformers (an unknown ``model_type`` is refused), the tokenizer loads and works
    (a truncated ``tokenizer.json`` is refused), and the weights' shapes in the safetensors headers are
    those of the model the config describes (built on the meta device: no memory, no weights read).
    One-line :class:`ModelLoadError` naming the folder."""
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
    shapes = weight_shapes(p)             # reads the safetensors headers; refuses a damaged file
    if deep:
        _check_loadable(p, shapes)


def weight_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """``{tensor name: shape}`` from the safetensors header(s) of a model folder (``model.safetensors`` or
    the shards its index names), reading headers only; None for a folder whose weights are not
    safetensors. :class:`ModelLoadError` for a damaged file."""
    p = Path(folder)
    if (p / "model.safetensors").is_file():
        files = [p / "model.safetensors"]
    elif (p / "model.safetensors.index.json").is_file():
        try:
            index = json.loads((p / "model.safetensors.index.json").read_text(encoding="utf-8"))
            files = [p / f for f in sorted(set(index["weight_map"].values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelLoadError(f"model folder {p}: model.safetensors.index.json is damaged "
                                 "(no weight_map)") from None
    else:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        if not f.is_file():
            raise ModelLoadError(f"model folder {p}: {f.name}, named by model.safetensors.index.json, is missing")
        header, problem = _safetensors_header(f)
        if problem:
            raise ModelLoadError(f"model folder {p}: {f.name} is damaged ({problem})")
        for k, t in header.items():
            if k != "__metadata__" and isinstance(t, dict) and isinstance(t.get("shape"), list):
                shapes[k] = tuple(int(x) for x in t["shape"])
    return shapes


def parameter_count(folder: str | Path) -> int | None:
    """Parameters of a local checkpoint, from its safetensors header(s) alone (tied weights are stored
    once, so counted once); None when the weights are not safetensors."""
    shapes = weight_shapes(folder)
    return None if shapes is None else sum(math.prod(s) for s in shapes.values())


def _check_loadable(p: Path, shapes: dict[str, tuple[int, ...]] | None) -> None:
    """The deep half of :func:`check_model_folder`: config, tokenizer, and weight shapes vs the config."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        with quiet_loading():
            config = AutoConfig.from_pretrained(str(p))
    except Exception as e:  # noqa: BLE001 - unknown model_type, bad values: one line
        raise ModelLoadError(f"model folder {p}: config.json does not load ({_first_line(e)})") from None
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(p))
    except Exception as e:  # noqa: BLE001 - truncated tokenizer.json, missing merges: one line
        raise ModelLoadError(f"model folder {p}: the tokenizer does not load ({_first_line(e)})") from None
    check_tokenizer(tokenizer, str(p))
    if shapes:
        _check_shapes(p, config, shapes)


def _check_shapes(p: Path, config: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """The model ``config`` describes, built on the meta device (no memory), must have the stored
    tensors' shapes; a tensor the model does not have is ignored (as loading ignores it), but at least
    one stored name must match."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"), quiet_loading():
            model = AutoModelForCausalLM.from_config(config)
            # transformers 5.0 leaves tied weights untied when it builds on the meta device (later releases
            # tie them): tie here, or a tied head reads as a weight the file does not hold
            model.tie_weights()
    except Exception as e:  # noqa: BLE001 - a config transformers cannot build: one line
        raise ModelLoadError(f"model folder {p}: config.json does not describe a causal LM "
                             f"({_first_line(e)})") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # a checkpoint saved from the bare backbone has names without the head's prefix (transformer., model.)
    prefix = getattr(model, "base_model_prefix", "") or ""
    matched = 0
    for name, shape in shapes.items():
        ref = want.get(name) or want.get(f"{prefix}.{name}")
        if ref is None:
            continue
        matched += 1
        if ref != shape:
            raise ModelLoadError(f"model folder {p}: config.json disagrees with the weights: {name} is "
                                 f"{list(shape)} in the safetensors header, the config makes it {list(ref)}")
    if not matched:
        raise ModelLoadError(f"model folder {p}: none of the {len(shapes)} stored tensors is a weight of the "
                             f"{type(model).__name__} that config.json describes")
    # a parameter the file does not hold would be initialised at random by from_pretrained (with a
    # warning), so the model would not be the checkpoint. Tied parameters are listed once; a stored tensor
    # under another name (transformers renames some when it loads: GPT-NeoX's embed_out is lm_head) counts
    # for a missing parameter of its shape.
    def stored(n: str) -> bool:
        return n in shapes or bool(prefix and n.startswith(prefix + ".") and n[len(prefix) + 1:] in shapes)

    unmatched = [shape for name, shape in shapes.items() if name not in want and f"{prefix}.{name}" not in want]
    missing = []
    for n, t in model.named_parameters():
        if stored(n):
            continue
        if tuple(t.shape) in unmatched:
            unmatched.remove(tuple(t.shape))
            continue
        missing.append(n)
    if missing:
        raise ModelLoadError(f"model folder {p}: config.json describes {len(missing)} weight(s) the safetensors "
                             f"file does not hold (e.g. {missing[0]} {list(dict(model.named_parameters())[missing[0]].shape)})"
                             ": the config is not this checkpoint's")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def hub_cache_lookup(name: str, revision: str | None) -> tuple[str, str | None]:
    """Where a hub model's ``config.json`` at ``revision`` stands in the local Hugging Face cache, looked
    up on disk only (never the network): ``("cached", path)``, ``("absent", None)`` when the cache records
    that the file does not exist there, or ``("unknown", None)`` when the cache cannot say (not
    downloaded, or ``huggingface_hub`` missing). A revision of ``init[:SEED]`` takes the default branch's
    config, as :func:`load_model` does."""
    if revision is not None and (revision == "init" or revision.startswith("init:")):
        revision = None
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.file_download import _CACHED_NO_EXIST
    except ImportError:  # pragma: no cover - transformers brings huggingface_hub
        return "unknown", None
    try:
        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a name the hub would refuse (bad characters): not in the cache
        return "unknown", None
    if found is _CACHED_NO_EXIST:
        return "absent", None
    return ("cached", str(found)) if isinstance(found, str) else ("unknown", None)


def config_parameter_count(config_path: str | Path) -> int | None:
    """Parameters of the causal LM a ``config.json`` describes (built on the meta device: no memory, no
    weights), or None when transformers cannot build it."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        with quiet_loading():
            config = AutoConfig.from_pretrained(str(Path(config_path).parent))
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - an estimate only: unknown
        return None


def _safetensors_header(path: Path) -> tuple[dict, str | None]:
    """The JSON header of a .safetensors file and why the file is damaged (None when it is whole)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8 or n > 100_000_000:
                return {}, "header longer than the file"
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError, RecursionError):
        return {}, "unreadable header"
    if not isinstance(header, dict):
        return {}, "unreadable header"
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets") or ()) == 2]
    if ends and 8 + n + max(ends) > size:
        return header, f"truncated: {size} bytes, the header needs {8 + n + max(ends)}"
    return header, None


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
    device: str | None = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    threads: int | None = None,
    device_map: str | dict | None = None,
) -> LoadedModel:
    """Load ``AutoModelForCausalLM`` and its tokenizer, in eval mode, on ``device`` in ``dtype``.

    ``device``: ``auto`` (default: CUDA, else MPS, else cpu; :func:`resolve_device`), ``cpu``,
    ``cuda[:N]``, ``mps``. ``attn_implementation``: passed to transformers (``eager``, ``sdpa``,
    ``flash_attention_2``, ...; default: transformers' choice). ``threads``: ``torch.set_num_threads``
    (process-wide). ``device_map`` (e.g. ``"auto"``): transformers spreads a model that does not fit one
    device over several (``device`` is then ignored); only forward-only work (scoring, the
    ``activations`` probe) may use such a model, probes that take gradients or fine-tune need it on one
    device (README, "Large models").

    Raises :class:`ModelLoadError` with one clear line when the folder, revision or hub is unreachable.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_revision_name(revision)
    set_threads(threads)
    dtype_name, torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device) if device_map is None else "device_map"
    if revision is not None and (revision == "init" or revision.startswith("init:")):
        if device_map is not None:
            raise ModelLoadError("a fresh initialisation (revision init) is built on one device; "
                                 "give --device, not a device map")
        return _load_fresh_init(name, revision, device=device, dtype=dtype_name,
                                trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
    local = resolve_local(name, revision)
    src = str(local) if local is not None else name
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if local is None and revision:
        kwargs["revision"] = revision
    model_kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **kwargs, **model_kwargs)
    except Exception as e:  # noqa: BLE001 - hub, file and config errors all become one clear line
        raise _load_error(name, revision, local is None, e) from None
    check_tokenizer(tokenizer, src)
    if device_map is None:
        model.to(device)
    else:
        device = _placed_on(model)
    model.eval()
    info = {**_model_info(model), "trust_remote_code": trust_remote_code}
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, revision=revision, path=src,
                       device=device, dtype=dtype_name, info=info)


def _model_info(model: Any) -> dict:
    """Architecture, parameter count, attention implementation and (if any) device map of ``model``."""
    info: dict[str, Any] = {"architecture": type(model).__name__,
                            "n_parameters": sum(p.numel() for p in model.parameters())}
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if attn is not None:
        info["attn_implementation"] = str(attn)
    dmap = getattr(model, "hf_device_map", None)
    if dmap:
        info["device_map"] = {str(k): str(v) for k, v in dmap.items()}
    return info


def _placed_on(model: Any) -> str:
    """The one device ``model``'s parameters are on, or ``"device_map"`` when they are spread."""
    devices = {str(p.device) for p in model.parameters()}
    return devices.pop() if len(devices) == 1 else "device_map"


def as_loaded(lm: Any) -> LoadedModel:
    """``lm`` as a :class:`LoadedModel`: a LoadedModel as it is, a ``(model, tokenizer)`` pair through
    :meth:`LoadedModel.from_hf`; anything else is a TypeError."""
    if isinstance(lm, LoadedModel):
        return lm
    if isinstance(lm, tuple) and len(lm) == 2:
        return LoadedModel.from_hf(*lm)
    raise TypeError(f"expected a LoadedModel or a (model, tokenizer) pair, got {type(lm).__name__}")


def _load_error(name: str, revision: str | None, hub: bool, e: Exception) -> ModelLoadError:
    where = name + (f" (revision {revision})" if revision else "")
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if hub:
        return ModelLoadError(f"could not load model {where} from the Hugging Face hub (no network, "
                              f"or no such model/revision; a local folder works offline): {first}")
    return ModelLoadError(f"could not load model {where}: {first}")


def _load_fresh_init(name: str, revision: str, *, device: str, dtype: str,
                     trust_remote_code: bool, attn_implementation: str | None = None) -> LoadedModel:
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
        extra = {"attn_implementation": attn_implementation} if attn_implementation is not None else {}
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code, **extra)
        except (ValueError, ImportError) as e:        # e.g. an attention implementation not installed
            raise _load_error(name, revision, local is None, e) from None
    model.to(device=device, dtype=resolve_dtype(dtype)[1])
    model.eval()
    info = {**_model_info(model), "trust_remote_code": trust_remote_code, "initialised_from_config_of": src,
            "init_seed": seed}
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, revision=revision, path=src,
                       device=device, dtype=dtype, info=info)
