"""Model size presets for pretraining from scratch: ``tiny``, ``small``, ``base``.

The paper (Weber et al., ACL 2024) compares models of 27M, 70M and 203M parameters, a ratio of about
1 : 2.6 : 7.5. The presets keep that ratio in **non-embedding** parameters (transformer blocks and final
layer norm; token and position embeddings excluded, since they depend on the tokenizer) and are scaled
down so that all three train on the toy corpus on two CPU cores in minutes. GPT-2 architecture, tied
input / output embeddings, no dropout (training is deterministic for a seed).

Parameter counts (non-embedding; total with the toy word-level vocabulary and 64 positions is printed by
``python benchmarks/bench_pretrain.py`` and recorded in each run's ``pretrain.json``):

======  ======  ===  =====  =============  =====  =============  =====
preset  layers  d    heads  non-embedding  ratio  default steps  lr
======  ======  ===  =====  =============  =====  =============  =====
tiny    2       96   4      223,872        1      1200           3e-3
small   3       128  4      595,072        2.66   1500           3e-3
base    4       184  4      1,635,024      7.30   1800           2e-3
======  ======  ===  =====  =============  =====  =============  =====

With the toy language's word-level vocabulary (236 tokens) and 64 positions the totals are
252,672 / 633,472 / 1,690,224; with a BPE vocabulary of 8,192 and 128 positions 1,022,592 / 1,660,032 /
3,165,904. Batches: 64 sequences (toy sentences average ~10 tokens with the two ``<|endoftext|>``).

(see :data:`PRESETS` for the exact values; ``non_embedding_parameters`` computes them.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..errors import InputError

# transformers is imported where a model config is built: plans and dry runs read the presets without it


@dataclass(frozen=True)
class Preset:
    """One model size and its default training recipe (tuned on the toy corpus).

    ``steps`` is the default number of optimizer steps, ``batch_size`` the number of sequences per
    step, ``lr`` the peak AdamW learning rate (linear warm-up over ``warmup`` of the steps, then cosine
    decay to ``min_lr_ratio * lr``). ``text_lr`` replaces ``lr`` for real text cut into blocks (BPE,
    large embedding): 3e-3 there diverges within the first few dozen steps.
    """

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    steps: int
    batch_size: int = 64
    lr: float = 3e-3
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    text_lr: float = 1e-3
    n_inner: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", n_layer=2, n_embd=96, n_head=4, steps=1200),
    "small": Preset("small", n_layer=3, n_embd=128, n_head=4, steps=1500),
    "base": Preset("base", n_layer=4, n_embd=184, n_head=4, steps=1800, lr=2e-3),
}


def get_preset(size: str) -> Preset:
    """The preset called ``size``; :class:`InputError` naming the choices otherwise."""
    try:
        return PRESETS[size]
    except KeyError:
        raise InputError(f"unknown size {size!r}; choose one of {', '.join(PRESETS)}", field="size") from None


def model_config(preset: Preset, *, vocab_size: int, n_positions: int, eot_id: int = 0) -> Any:
    """A ``GPT2Config`` for ``preset`` with no dropout and ``eot_id`` as BOS = EOS = pad."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=preset.n_embd, n_layer=preset.n_layer,
        n_head=preset.n_head, n_inner=preset.n_inner, activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        tie_word_embeddings=True, bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id,
        use_cache=False,
    )


def checkpoint_steps(total: int, n: int = 5, first_fraction: float = 0.02) -> list[int]:
    """``0``, about ``n`` log-spaced steps from ``first_fraction * total``, and ``total``."""
    if total < 1:
        raise InputError(f"steps must be at least 1, got {total}", field="steps")
    first = max(1.0, first_fraction * total)
    pts = {0, total}
    if n > 0 and total > 1:
        ratio = (total / first) ** (1.0 / n)
        pts.update(min(total, int(round(first * ratio ** i))) for i in range(n))
    return sorted(pts)


def planned_checkpoints(size: str, steps: int | None = None, checkpoints: Sequence[int] | None = None) -> list[int]:
    """The steps at which ``pretrain(corpus, size, steps=steps, checkpoints=checkpoints)`` saves a checkpoint
    ``stepN``: ``0``, the last step and ``checkpoints`` (default: :func:`checkpoint_steps`, log-spaced).
    The one rule: pretraining saves these, and a dry run lists the jobs of a model trained in a run from them
    before it is trained. ``steps`` None is the preset's default (``small``: 1,500 → step0, 30, 66, 143,
    314, 686, 1500)."""
    total = get_preset(size).steps if steps is None else int(steps)
    if checkpoints is None:
        return checkpoint_steps(total)
    ckpts = sorted({0, total, *map(int, checkpoints)})
    if ckpts[0] < 0 or ckpts[-1] > total:
        raise InputError(f"checkpoints must lie in 0..{total}, got {list(checkpoints)}", field="checkpoints")
    return ckpts


#: what a model trained on the toy corpus gets: the word-level tokenizer (234 word forms and punctuation,
#: plus ``<|endoftext|>`` and ``<unk>``) and 64 positions; on other text a byte-level BPE of 8,192 and 128
TOY_VOCABULARY, TOY_POSITIONS, TEXT_VOCABULARY, TEXT_POSITIONS = 236, 64, 8192, 128


def estimated_parameters(size: str, corpus: str = "toy") -> int:
    """Parameters of a model ``pretrain(corpus, size)`` would train (tied embeddings counted once), known
    before training: the non-embedding part exactly, the embeddings from the tokenizer pretraining picks
    (toy corpus: the word-level toy vocabulary and 64 positions; other text: BPE of 8,192 and 128
    positions, an upper bound when its BPE ends smaller)."""
    preset = get_preset(size)
    toy = corpus == "toy" or str(corpus).startswith("toy:")
    vocab, positions = (TOY_VOCABULARY, TOY_POSITIONS) if toy else (TEXT_VOCABULARY, TEXT_POSITIONS)
    return non_embedding_parameters(preset) + preset.n_embd * (vocab + positions)


def non_embedding_parameters(preset: Preset) -> int:
    """Parameters of the transformer blocks and the final layer norm (closed form for GPT-2)."""
    d = preset.n_embd
    inner = preset.n_inner or 4 * d
    per_block = (2 * d            # ln_1
                 + d * 3 * d + 3 * d  # attention qkv
                 + d * d + d      # attention output
                 + 2 * d          # ln_2
                 + d * inner + inner  # mlp in
                 + inner * d + d)  # mlp out
    return preset.n_layer * per_block + 2 * d


def parameter_counts(model: Any) -> dict[str, int]:
    """``total`` (tied weights counted once), ``embedding`` (token + position) and ``non_embedding``."""
    total = sum(p.numel() for p in model.parameters())
    emb = 0
    seen: set[int] = set()
    for mod in (model.get_input_embeddings(), getattr(getattr(model, "transformer", None), "wpe", None)):
        if mod is not None and id(mod.weight) not in seen:
            seen.add(id(mod.weight))
            emb += mod.weight.numel()
    return {"total": total, "embedding": emb, "non_embedding": total - emb}
