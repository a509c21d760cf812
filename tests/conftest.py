"""Shared fixtures: real tiny `transformers` models built in the test session, and paths to ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TASKSPACE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
BLIMP = SHARED / "data" / "blimp"
GUTENBERG_MODEL = SHARED / "models" / "gutenberg-gpt2-5m"

WORDS = ("the a this these that those cat cats dog dogs girl girls boy boys teacher teachers "
         "sleeps sleep sees see saw seen herself himself themselves itself who which "
         "ran run went gone never ever not any some every all . , ? !").split()


def make_word_tokenizer(bos: bool = True, eos: bool = True, adds_bos: bool = False):
    """A real word-level fast tokenizer over WORDS (+ specials). ``adds_bos``: Llama-style, adds BOS
    by itself when called with special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>"] + (["<s>"] if bos else []) + (["</s>"] if eos else [])
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    kw = {"pad_token": "<pad>", "unk_token": "<unk>"}
    if bos:
        kw["bos_token"] = "<s>"
    if eos:
        kw["eos_token"] = "</s>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


EOT = "<|endoftext|>"
BPE_CORPUS = ["The cat sleeps.", "The cats sleep.", "The girl saw herself.", "The boys saw themselves.",
              "The dog never ran.", "A teacher has seen the dogs.", "These dogs went away.",
              "Those boys have gone home."] * 4


def make_bpe_tokenizer():
    """A real GPT-2-style byte-level BPE tokenizer (no prefix space added; EOS = BOS = <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(BPE_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT)


def make_tiny_model(arch: str = "gpt2", vocab_size: int = 64, seed: int = 0, dtype=None):
    """A real randomly initialised causal LM of the given architecture (gpt2 or gpt_neox)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(cfg)
    elif arch == "gpt_neox":
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                            hidden_dropout=0.0, attention_dropout=0.0)
        model = GPTNeoXForCausalLM(cfg)
    else:
        raise ValueError(arch)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A saved tiny GPT-2 + word tokenizer with checkpoints step0/ and step10/ (different weights)."""
    root = tmp_path / "tiny-lm"
    tok = make_word_tokenizer()
    for step, seed in (("step0", 0), ("step10", 1)):
        m = make_tiny_model("gpt2", vocab_size=len(tok), seed=seed)
        m.save_pretrained(root / step)
        tok.save_pretrained(root / step)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and the CI machine is shared: one thread is faster.
    (Also what makes in-process and one-thread worker results comparable bit for bit.)"""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def shared_or_skip(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


MINI_NOUNS = [("cat", "cats"), ("dog", "dogs"), ("girl", "girls"), ("boy", "boys"), ("teacher", "teachers")]


#: a small suite with a pair whose good and bad sentences are the same (it contributes nothing)
AGREEMENT_ROWS = [
    ("sv", "agr", "the cat sleeps .", "the cat sleep ."),
    ("sv", "agr", "the teachers who see the dog sleep .", "the teachers who see the dog sleeps ."),
    ("sv", "agr", "these girls sleep .", "these girls sleeps ."),
    ("det", "agr", "this dog ran .", "these dog ran ."),
    ("det", "agr", "those boys never sleep .", "that boys never sleep ."),
    ("det", "agr", "the dog ran .", "the dog ran ."),                      # identical: contributes 0
    ("refl", "ana", "the girl saw herself .", "the girl saw himself ."),
    ("refl", "ana", "the boys who ran saw themselves !", "the boys who ran saw itself !"),
]


def agreement_suite():
    """Three tasks of :data:`AGREEMENT_ROWS` (two groups), one pair per row."""
    from taskspace.suites import Pair, Suite

    return Suite([Pair(t, g, str(i), good, bad) for i, (t, g, good, bad) in enumerate(AGREEMENT_ROWS)],
                 name="mini")


def mini_suite():
    """Three tasks over the word tokenizer: singular / plural agreement (one group) and a reflexive."""
    from taskspace.suites import Pair, Suite

    pairs = []
    for i, (s, p) in enumerate(MINI_NOUNS):
        pairs += [Pair("sv_sing", "agr", f"a{i}", f"the {s} sleeps .", f"the {s} sleep ."),
                  Pair("sv_plur", "agr", f"b{i}", f"the {p} sleep .", f"the {p} sleeps ."),
                  Pair("refl", "ana", f"c{i}", f"the {s} saw itself .", f"the {s} saw themselves .")]
    return Suite(pairs, name="mini")


def mean_margin(model, tok, pairs) -> float:
    """Mean margin of ``pairs`` under ``model`` as it is now, scored independently of the probes."""
    import torch

    from taskspace.scoring import Scorer, batch_logprobs

    ids = Scorer(model, tok).encode([s for p in pairs for s in (p.good, p.bad)])
    with torch.no_grad():
        lp = batch_logprobs(model, ids, pad_id=0)
    return float((lp[0::2] - lp[1::2]).mean())
