"""Pretrain a small GPT-2 from scratch, with log-spaced checkpoints and exact resume after a kill.

Layout of an output folder ``DIR``::

    DIR/pretrain.json        preset, model config, parameter counts, seed, corpus hash, versions, status
    DIR/training.csv         step, tokens_seen, train_loss, heldout_loss, elapsed_s (one row per checkpoint)
    DIR/step0/               the untrained initialisation (always)
    DIR/stepN/               transformers format (config.json, model.safetensors) + tokenizer
    DIR/stepN/training_state/   only in the latest checkpoint while training runs: optimizer state,
                                RNG state (safetensors) and scalars / data position (JSON); no pickle

Every checkpoint is written to a temporary folder and renamed into place, so a folder ``stepN`` is
either complete or absent. A run killed at any moment restarts from the latest checkpoint that holds a
``training_state`` and ends with the same final weights as an uninterrupted run (bitwise on the same
machine and thread count): the data order is a pure function of (seed, step), the learning rate a pure
function of the step, and the optimizer moments are restored exactly.

Training data follows the scoring convention of :mod:`taskspace.scoring`: a corpus of short documents
(sentences) is trained one document per row as ``<|endoftext|> document <|endoftext|>``, exactly the
context ``P(sentence | <|endoftext|>)`` is scored in; long documents (real text) are joined with
``<|endoftext|>`` into one stream and cut into blocks of the model's context length.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import InputError, TaskspaceError
from ..faults import crash_point
from ..io import read_json, write_json
from ..progress import progress_bar
from ..provenance import timestamp, versions
from .checkpoints import (
    CSV_COLUMNS,
    STATE_DIR,
    clean_stale,
    find_resume_checkpoint,
    lock_folder,
    optimizer_from_disk,
    optimizer_to_disk,
    save_checkpoint,
    write_csv,
)
from .presets import (
    Preset,
    checkpoint_steps,
    get_preset,
    model_config,
    non_embedding_parameters,
    parameter_counts,
    planned_checkpoints,
)
from .training_data import (
    BatchStream,
    Corpus,
    Data,
    build_tokenizer,
    encode_documents,
    epoch_batches,
    load_corpus,
    make_data,
    pad_rows,
)

# torch, transformers and safetensors are imported inside the functions that use them: the command line and a
# run's planning read this module without them

__all__ = ["BatchStream", "CSV_COLUMNS", "Corpus", "Data", "STATE_DIR", "build_tokenizer", "checkpoint_steps",
           "encode_documents", "epoch_batches", "find_resume_checkpoint", "heldout_loss", "learning_rate",
           "lm_loss", "load_corpus", "make_data", "optimizer_from_disk", "optimizer_to_disk", "pad_rows",
           "pretrain"]

if TYPE_CHECKING:  # pragma: no cover
    import torch


# ---------------------------------------------------------------------------------------------------
# loss, schedule, checkpoints
# ---------------------------------------------------------------------------------------------------
def lm_loss(model: Any, batch: "torch.Tensor", pad_id: int) -> tuple["torch.Tensor", int]:
    """Mean next-token NLL over the real (non-padding) targets of ``batch`` and their number.

    Padding is marked -1 in ``batch`` and is on the right, where a causal model's real tokens never
    look, so no attention mask is needed; only the loss ignores it.
    """
    import torch
    import torch.nn.functional as F

    real = batch >= 0
    ids = torch.where(real, batch, torch.full_like(batch, pad_id))
    keep = real[:, 1:]
    hidden = model.transformer(input_ids=ids).last_hidden_state[:, :-1][keep]
    logits = model.lm_head(hidden)
    targets = ids[:, 1:][keep]
    return F.cross_entropy(logits.float(), targets), int(targets.numel())


def learning_rate(step: int, total: int, preset: Preset) -> float:
    """Linear warm-up over ``preset.warmup`` of the steps, then cosine decay to ``min_lr_ratio * lr``."""
    warm = max(1, int(round(preset.warmup * total)))
    if step < warm:
        return preset.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    floor = preset.min_lr_ratio * preset.lr
    return floor + 0.5 * (preset.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def heldout_loss(model: Any, examples: list[np.ndarray], pad_id: int, batch_tokens: int = 8192) -> float:
    """Token-weighted mean NLL over the held-out examples."""
    import torch

    was = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    with torch.no_grad():
        i = 0
        while i < len(order):
            width = len(examples[order[i]])
            k = max(1, batch_tokens // max(1, width))
            chunk = [examples[j] for j in order[i:i + k]]
            loss, n = lm_loss(model, pad_rows(chunk), pad_id)
            total += float(loss) * n
            count += n
            i += k
    model.train(was)
    return total / max(1, count)


# ---------------------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------------------
def pretrain(
    corpus: "str | Path | Sequence[str]",
    size: str,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    seed: int = 0,
    tokenizer: str = "auto",
    checkpoints: Sequence[int] | None = None,
    progress: bool = True,
    sentences: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    n_positions: int | None = None,
    vocab_size: int = 8192,
    mode: str = "auto",
    threads: int | None = None,
    keep_training_state: bool = False,
    stop_at: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train a GPT-2 of preset ``size`` from scratch on ``corpus`` and write checkpoints to ``out_dir``.

    ``corpus``: ``"toy"`` / ``"toy:SEED"`` (``sentences`` sentences of the toy grammar), a text file
    (one document per line) or a list of sentences. ``tokenizer``: ``auto`` (word-level for the toy
    language, byte-level BPE of ``vocab_size`` otherwise), ``word``, ``bpe`` or a tokenizer folder.
    ``checkpoints``: steps to save besides ``0`` and ``steps`` (default: 5 log-spaced ones).
    ``stop_at``: stop after the first checkpoint at or beyond this step, leaving the run resumable
    (what a kill does, without the kill). Re-running the same call on the same folder resumes an
    interrupted run, or returns at once when it is complete; a folder holding a different run is
    refused. Returns ``out_dir``.

    >>> pretrain("toy", "small", "models/toy-small")        # then --model models/toy-small --revision stepN
    """
    say = log or (lambda msg: None)
    out = Path(out_dir)
    recipe = _recipe(size, batch_size, lr)
    steps = recipe.steps if steps is None else int(steps)
    ckpts = planned_checkpoints(size, steps, checkpoints)

    _check_out_folder(out)
    corp = load_corpus(corpus, sentences=sentences)  # bad input fails here, before anything is written
    corpus_info = corp.describe()
    say(f"corpus {corpus_info['spec']}: {corpus_info['n_documents']:,} documents")
    settings = {"size": size, "recipe": recipe.to_dict(), "steps": steps, "seed": seed,
                "checkpoints": ckpts, "corpus": corpus_info["spec"], "corpus_hash": corpus_info["hash"],
                "tokenizer": tokenizer, "vocab_size": vocab_size, "n_positions": n_positions,
                "mode": mode}
    if tokenizer not in ("auto", "word", "bpe") and not Path(tokenizer).is_dir():
        raise InputError("tokenizer must be auto, word, bpe or a folder with a saved tokenizer",
                         field="tokenizer")
    with _holding(out, threads):
        if _already_complete(out, settings, steps, say):
            return out
        clean_stale(out)
        resume = find_resume_checkpoint(out)
        run = _prepare(out, resume, corp, recipe, settings, seed=seed, tokenizer=tokenizer,
                       vocab_size=vocab_size, n_positions=n_positions, mode=mode, lr_given=lr is not None,
                       say=say)
        meta = _write_metadata(run, corpus_info, steps=steps, ckpts=ckpts, seed=seed)
        run.t0 = time.perf_counter()
        if resume is None:
            _checkpoint(run, 0, None, say)
        done = _train_steps(run, steps, ckpts, size=size, progress=progress, stop_at=stop_at, say=say)
        if done < steps:
            say(f"stopped after step {done}; run the same command again to resume")
            return out
        _finish(run, meta, steps, ckpts, keep_training_state)
    return out


@contextlib.contextmanager
def _holding(out: Path, threads: int | None) -> Iterator[None]:
    """While training: ``out``'s lock held, transformers quiet, torch at ``threads`` threads (all
    restored after); a run that fails before writing anything leaves no folder behind."""
    import torch

    threads_before = torch.get_num_threads()
    created = not out.exists()
    lock = lock_folder(out)
    quiet = _quiet_transformers()
    if threads is not None:
        # tiny models on a shared machine: one thread can be many times faster than two that spin-wait
        torch.set_num_threads(int(threads))
    ok = False
    try:
        yield
        ok = True
    finally:
        torch.set_num_threads(threads_before)
        quiet()
        lock.close()
        if not ok and created and all(d.name == ".lock" for d in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # failed before writing anything: leave no folder


@dataclasses.dataclass
class _Run:
    """What a pretraining run holds while it trains: its folder, data, model, optimizer and progress."""

    out: Path
    settings: dict
    recipe: Preset
    tok: Any
    tok_kind: str
    tok_files: dict[str, bytes]
    eot: int
    data: Data
    stream: BatchStream
    model: Any
    opt: Any
    params: list
    start: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0
    rows: list = dataclasses.field(default_factory=list)
    t0: float = 0.0


def _recipe(size: str, batch_size: int | None, lr: float | None) -> Preset:
    """The preset ``size`` with the caller's batch size and learning rate, both checked."""
    preset = get_preset(size)
    overrides = {k: v for k, v in (("batch_size", batch_size), ("lr", lr)) if v is not None}
    if overrides.get("batch_size", 1) < 1:
        raise InputError(f"batch size must be positive, got {batch_size}", field="batch_size")
    if overrides.get("lr", 1.0) <= 0:
        raise InputError(f"learning rate must be positive, got {lr}", field="lr")
    return dataclasses.replace(preset, **overrides)


def _check_out_folder(out: Path) -> None:
    """Refuse an output path that is a file, or a non-empty folder that holds no pretraining run."""
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", file=out)
    if out.is_dir() and any(not d.name.startswith(".") for d in out.iterdir()) \
            and not (out / "pretrain.json").is_file():
        raise TaskspaceError(f"{out} is not empty and holds no pretrain.json; choose a new folder for --out")


def _already_complete(out: Path, settings: dict, steps: int, say: Callable[[str], None]) -> bool:
    """Whether ``out`` holds this run, complete; refuses a folder that holds a different run."""
    existing = out / "pretrain.json"
    if not existing.is_file():
        return False
    prev = read_json(existing)
    diff = [k for k in settings if prev.get("settings", {}).get(k) != settings[k]]
    if diff:
        raise TaskspaceError(f"{out} holds a different pretraining run ({', '.join(diff)} differ); "
                             "choose a new folder for --out or repeat the same settings to resume")
    if prev.get("status") == "complete":
        say(f"{out} is already complete ({steps} steps)")
        return True
    return False


def _prepare(out: Path, resume: Path | None, corp: Corpus, recipe: Preset, settings: dict, *, seed: int,
             tokenizer: str, vocab_size: int, n_positions: int | None, mode: str, lr_given: bool,
             say: Callable[[str], None]) -> _Run:
    """Tokenizer, data, model and optimizer, fresh or restored from the checkpoint ``resume``."""
    tok, tok_kind = _tokenizer(out, resume, corp, tokenizer, vocab_size, n_positions, say)
    npos = n_positions or (64 if tok_kind == "word" else 128)
    tok.model_max_length = npos
    # the tokenizer files every checkpoint gets, byte for byte the same whether or not the run was
    # resumed: a reloaded tokenizer saves extra keys ("is_local", "local_files_only"), which would
    # change the checkpoints' fingerprints and every downstream job key
    tok_files = tokenizer_files(tok, resume)
    eot = int(tok.eos_token_id)
    say("tokenizing")
    data = make_data(corp.documents, tok, n_positions=npos, mode=mode)
    if data.mode == "blocks" and not lr_given:
        recipe = dataclasses.replace(recipe, lr=recipe.text_lr)
    stream = BatchStream(data.train, recipe.batch_size, seed)
    model, opt, params = _model_and_optimizer(recipe, tok, npos, eot, seed, resume)
    run = _Run(out=out, settings=settings, recipe=recipe, tok=tok, tok_kind=tok_kind, tok_files=tok_files,
               eot=eot, data=data, stream=stream, model=model, opt=opt, params=params)
    if resume is not None:
        _restore_state(run, resume)
        say(f"resuming from {resume.name}")
    return run


def _tokenizer(out: Path, resume: Path | None, corp: Corpus, tokenizer: str, vocab_size: int,
               n_positions: int | None, say: Callable[[str], None]) -> tuple[Any, str]:
    """The run's tokenizer and its kind: the one saved in ``resume``, or a new one built on the corpus."""
    if resume is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resume)
        existing = out / "pretrain.json"
        prev = read_json(existing) if existing.is_file() else {}
        return tok, prev.get("tokenizer", {}).get("kind", "saved")
    say("building the tokenizer")
    return build_tokenizer(corp, tokenizer, vocab_size=vocab_size, n_positions=n_positions or 128)


def _model_and_optimizer(recipe: Preset, tok: Any, npos: int, eot: int, seed: int,
                         resume: Path | None) -> tuple[Any, Any, list]:
    """A seeded GPT-2 (with the weights of ``resume`` when resuming), its AdamW and its parameters."""
    import torch
    from transformers import GPT2LMHeadModel

    config = model_config(recipe, vocab_size=len(tok), n_positions=npos, eot_id=eot)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if resume is not None:
        ref = GPT2LMHeadModel.from_pretrained(resume, dtype=torch.float32)
        model.load_state_dict(ref.state_dict())
        del ref
    model.train()
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=recipe.lr, betas=(0.9, 0.95), eps=1e-8)
    return model, opt, decay + no_decay


def _restore_state(run: _Run, resume: Path) -> None:
    """Optimizer moments, RNG state, step, token count, elapsed time and rows saved in ``resume``."""
    import torch
    from safetensors.torch import load_file

    st = read_json(resume / STATE_DIR / "state.json")
    tensors = load_file(str(resume / STATE_DIR / "state.safetensors"))
    optimizer_from_disk(run.opt, tensors, st["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    run.start, run.tokens_seen, run.elapsed, run.rows = st["step"], st["tokens_seen"], st["elapsed_s"], st["rows"]
    if st["data_position"] != run.stream.position(run.start):
        raise TaskspaceError(f"{resume}: saved data position {st['data_position']} does not match "
                             f"the corpus ({run.stream.position(run.start)}); was the corpus changed?")


def _write_metadata(run: _Run, corpus_info: dict, *, steps: int, ckpts: list[int], seed: int) -> dict:
    """Write ``pretrain.json`` with status ``running`` (keeping the first creation time); returns it."""
    import torch

    existing = run.out / "pretrain.json"
    recipe, tok = run.recipe, run.tok
    counts = parameter_counts(run.model)
    meta = {
        "kind": "pretrain", "status": "running", "created": timestamp(), "settings": run.settings,
        "preset": recipe.to_dict(), "config": run.model.config.to_dict(),
        "parameters": dict(counts, non_embedding_formula=non_embedding_parameters(recipe)),
        "seed": seed, "steps": steps, "checkpoints": ckpts, "corpus": corpus_info,
        "tokenizer": {"kind": run.tok_kind, "vocab_size": len(tok), "special": tok.eos_token,
                      "bos = eos = pad": True, "adds_special_tokens": False},
        "data": run.data.describe(), "batches_per_epoch": run.stream.per_epoch,
        "optimizer": {"name": "AdamW", "betas": [0.9, 0.95], "eps": 1e-8, "grad_clip": 1.0,
                      "schedule": "linear warm-up, cosine decay"},
        "threads": torch.get_num_threads(), "device": "cpu", "dtype": "float32",
        "versions": versions(),
    }
    if existing.is_file():
        meta["created"] = read_json(existing).get("created", meta["created"])
    write_json(existing, meta)
    return meta


def _checkpoint(run: _Run, step: int, train_loss: float | None, say: Callable[[str], None]) -> None:
    """Measure the held-out loss, save checkpoint ``step`` with its training state, rewrite training.csv."""
    h = heldout_loss(run.model, run.data.heldout, run.eot)
    rows = run.rows
    rows[:] = [r for r in rows if r["step"] < step]
    rows.append({"step": step, "tokens_seen": run.tokens_seen, "train_loss": train_loss,
                 "heldout_loss": h, "elapsed_s": round(run.elapsed + (time.perf_counter() - run.t0), 3)})
    save_checkpoint(run.out, step, run.model, run.tok_files, run.opt, {
        "step": step, "tokens_seen": run.tokens_seen, "elapsed_s": rows[-1]["elapsed_s"],
        "data_position": run.stream.position(step), "rows": rows, "settings": run.settings})
    write_csv(run.out / "training.csv", rows)
    say(f"step {step}: held-out loss {h:.4f}")


def _train_step(run: _Run, step: int, steps: int) -> tuple[float, float]:
    """One optimizer step at ``step``; returns its training loss and learning rate."""
    import torch

    lr_now = learning_rate(step, steps, run.recipe)
    for g in run.opt.param_groups:
        g["lr"] = lr_now
    batch = run.stream.batch(step)
    loss, _ = lm_loss(run.model, batch, run.eot)
    if not torch.isfinite(loss):
        raise TaskspaceError(f"training diverged at step {step + 1} (loss {float(loss)}); "
                             "try a smaller --lr")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.opt.step()
    run.tokens_seen += int((batch >= 0).sum())
    return float(loss.detach()), lr_now


def _train_steps(run: _Run, steps: int, ckpts: list[int], *, size: str, progress: bool, stop_at: int | None,
                 say: Callable[[str], None]) -> int:
    """Train from ``run.start`` to ``steps``, saving the planned checkpoints; returns the last step done
    (less than ``steps`` when ``stop_at`` stopped the run at a checkpoint)."""
    loss_sum, loss_n = 0.0, 0
    done = run.start
    with progress_bar(f"pretraining {size}", total=steps, fields=True, show=progress) as advance:
        if run.start:
            advance(run.start)
        for step in range(run.start, steps):
            loss, lr_now = _train_step(run, step, steps)
            loss_sum += loss
            loss_n += 1
            done = step + 1
            crash_point("pretrain_step")  # kill -9 injection for the resume test (off by default)
            if done in ckpts:
                _checkpoint(run, done, loss_sum / loss_n, say)
                loss_sum, loss_n = 0.0, 0
                if stop_at is not None and done >= stop_at and done < steps:
                    advance(1, loss=loss)
                    return done
            advance(1, loss=loss, lr=lr_now)
    return done


def _finish(run: _Run, meta: dict, steps: int, ckpts: list[int], keep_training_state: bool) -> None:
    """Mark ``pretrain.json`` complete and drop the final checkpoint's training state unless kept."""
    meta.update(status="complete", finished=timestamp(), tokens_seen=run.tokens_seen,
                elapsed_s=run.rows[-1]["elapsed_s"], final_heldout_loss=run.rows[-1]["heldout_loss"],
                revisions=[f"step{s}" for s in ckpts])
    write_json(run.out / "pretrain.json", meta)
    if not keep_training_state:
        shutil.rmtree(run.out / f"step{steps}" / STATE_DIR, ignore_errors=True)


def tokenizer_files(tok: Any, source: Path | None = None) -> dict[str, bytes]:
    """``{file name: bytes}`` of the files ``tok.save_pretrained`` writes. With ``source`` (the
    checkpoint a run resumes from), each file's bytes come from there, as the first save wrote them:
    a tokenizer loaded back from disk would save different bytes."""
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        fresh = {f.name: f.read_bytes() for f in sorted(Path(d).iterdir()) if f.is_file()}
    if source is None:
        return fresh
    return {name: (source / name).read_bytes() if (source / name).is_file() else data
            for name, data in fresh.items()}


def _quiet_transformers() -> Callable[[], None]:
    """Silence transformers' per-save progress bars and padding advice; returns the undo."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    def undo() -> None:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()

    return undo

