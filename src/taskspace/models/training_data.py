"""Training data for :mod:`taskspace.models.pretrain`: corpus, tokenizer, examples, seeded batches.

A corpus of short documents (sentences) becomes one example per document, ``<|endoftext|> document
<|endoftext|>`` (the context ``P(sentence | <|endoftext|>)`` is scored in); long documents are joined
with ``<|endoftext|>`` and cut into context-length blocks. Step ``k``'s batch is a pure function of
(seed, k), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import InputError
from ..provenance import hash_records
from ..suites.toy import toy_corpus
from .tokenizer_training import split_words, train_bpe_tokenizer, word_level_tokenizer

# torch, transformers and the toy grammar are imported where they are used: a corpus is described without them

if TYPE_CHECKING:  # pragma: no cover
    import torch

TOY_SENTENCES = 60_000
HELDOUT_SEED = 0  # fixed, so runs with different training seeds are evaluated on the same slice


# ---------------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """Documents (sentences or paragraphs) and where they came from."""

    documents: list[str]
    spec: str
    toy_seed: int | None = None

    @property
    def is_toy(self) -> bool:
        return self.toy_seed is not None

    def describe(self) -> dict:
        return {"spec": self.spec, "n_documents": len(self.documents),
                "n_characters": sum(len(d) for d in self.documents),
                "hash": hash_records(self.documents)}


def load_corpus(corpus: "str | Path | Sequence[str]", *, sentences: int | None = None) -> Corpus:
    """``"toy"`` / ``"toy:SEED"`` (the toy grammar's corpus, ``sentences`` of them), a text file with
    one document per line (blank lines skipped), or a list of sentences."""
    if isinstance(corpus, (str, Path)):
        spec = str(corpus)
        if spec == "toy" or spec.startswith("toy:"):
            try:
                toy_seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
            except ValueError:
                raise InputError(f"bad toy corpus spec {spec!r}; use toy or toy:SEED", field="corpus") from None
            n = TOY_SENTENCES if sentences is None else int(sentences)
            if n < 2:
                raise InputError(f"need at least 2 sentences, got {n}", field="sentences")
            return Corpus(list(toy_corpus(n, seed=toy_seed)), spec, toy_seed)
        return Corpus(_read_text(Path(spec)), spec)
    docs = [str(s).strip() for s in corpus]
    docs = [d for d in docs if d]
    if len(docs) < 2:
        raise InputError("the corpus needs at least 2 non-empty sentences", field="corpus")
    return Corpus(docs, f"<list of {len(docs)} sentences>")


def check_corpus_file(path: str | Path) -> None:
    """Refuse a corpus file pretraining would refuse (missing, not UTF-8 — with its line —, fewer than two
    non-empty lines), before a run writes anything; ``toy`` corpora pass."""
    spec = str(path)
    if not (spec == "toy" or spec.startswith("toy:")):
        _read_text(Path(spec))


def _read_text(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("no such corpus file (expected a text file or 'toy')", file=path)
    docs: list[str] = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=path, line=i) from None
            if line:
                docs.append(line)
    if len(docs) < 2:
        raise InputError("the corpus needs at least 2 non-empty lines", file=path)
    return docs


# ---------------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------------
def build_tokenizer(corpus: Corpus, kind: str = "auto", *, vocab_size: int = 8192, n_positions: int = 128,
                    bpe_sample_chars: int = 50_000_000) -> tuple[Any, str]:
    """The tokenizer for ``corpus`` and its kind (``word`` or ``bpe``).

    ``auto``: word-level over the toy vocabulary when every word of the corpus is in it (the toy corpus,
    or a file written by ``taskspace corpus toy``), else byte-level BPE trained on the corpus. ``kind``
    may also be a folder holding a saved tokenizer.
    """
    if kind not in ("auto", "word", "bpe"):
        from transformers import AutoTokenizer

        if not Path(kind).is_dir():
            raise InputError("tokenizer must be auto, word, bpe or a folder with a saved tokenizer",
                             field="tokenizer")
        try:
            return AutoTokenizer.from_pretrained(kind), f"folder:{kind}"
        except (OSError, ValueError) as e:
            raise InputError(f"could not load the tokenizer: {str(e).splitlines()[0]}", file=kind) from None
    if kind in ("auto", "word"):
        vocab = _toy_vocabulary()
        if vocab is not None and (corpus.is_toy or _all_words_in(corpus.documents, set(vocab))):
            return word_level_tokenizer(vocab, model_max_length=n_positions), "word"
        if kind == "word":
            # a word-level tokenizer over the corpus' own words, in order of frequency

            counts = Counter(w for d in corpus.documents for w in split_words(d))
            return word_level_tokenizer([w for w, _ in counts.most_common()], model_max_length=n_positions), "word"

    def sample():
        n = 0
        for d in corpus.documents:
            yield d
            n += len(d)
            if n >= bpe_sample_chars:
                return

    return train_bpe_tokenizer(sample(), vocab_size=vocab_size, model_max_length=n_positions), "bpe"


def _all_words_in(documents: Sequence[str], vocab: set[str]) -> bool:
    return all(w in vocab for d in documents for w in split_words(d))


def _toy_vocabulary() -> list[str] | None:
    try:
        from ..suites.toy import toy_vocabulary
    except ImportError:
        return None
    return list(toy_vocabulary())


# ---------------------------------------------------------------------------------------------------
# data: examples, held-out slice, seeded batch order
# ---------------------------------------------------------------------------------------------------
@dataclass
class Data:
    """Training and held-out examples (token id arrays starting with ``<|endoftext|>``)."""

    train: list[np.ndarray]
    heldout: list[np.ndarray]
    mode: str  # "rows" (one document per row) or "blocks" (a stream cut into context-length blocks)
    n_positions: int

    def describe(self) -> dict:
        return {"mode": self.mode, "n_positions": self.n_positions,
                "n_train_examples": len(self.train), "n_heldout_examples": len(self.heldout),
                "n_train_tokens": int(sum(len(x) for x in self.train)),
                "n_heldout_tokens": int(sum(len(x) for x in self.heldout))}


def make_data(documents: Sequence[str], tokenizer: Any, *, n_positions: int, mode: str = "auto",
              heldout_fraction: float = 0.02, max_heldout_tokens: int = 32_768) -> Data:
    """Tokenize ``documents`` and split off a held-out slice.

    ``rows``: each document is one example ``[EOT] doc [EOT]`` (truncated to ``n_positions``); the
    held-out slice is a seeded random sample of documents. ``blocks``: documents joined as
    ``EOT d1 EOT d2 ...`` and cut into blocks of ``n_positions`` tokens; the held-out slice is the
    last documents, so no held-out block shares a document with training. ``auto`` picks rows when
    every document fits the context.
    """
    eot = int(tokenizer.eos_token_id)
    enc = encode_documents(tokenizer, documents)
    lengths = np.fromiter((len(x) + 2 for x in enc), dtype=np.int64, count=len(enc))
    if mode == "auto":
        mode = "rows" if int(lengths.max()) <= n_positions else "blocks"
    if mode not in ("rows", "blocks"):
        raise InputError(f"unknown data mode {mode!r}; choose auto, rows or blocks", field="mode")
    n = len(enc)
    if mode == "rows":
        rng = np.random.default_rng(HELDOUT_SEED)
        n_held = int(min(max(1, round(heldout_fraction * n)), max(1, max_heldout_tokens // max(1, int(lengths.mean())))))
        held_idx = set(rng.permutation(n)[:n_held].tolist())

        def row(ids):
            return np.asarray([eot, *ids, eot][:n_positions], dtype=np.int64)

        train = [row(x) for i, x in enumerate(enc) if i not in held_idx]
        held = [row(enc[i]) for i in sorted(held_idx)]
    else:
        total = int(lengths.sum())
        want = min(max(n_positions, int(heldout_fraction * total)), max_heldout_tokens)
        cut, acc = n, 0
        while cut > 1 and acc < want:
            cut -= 1
            acc += int(lengths[cut]) - 1
        train = _blocks(enc[:cut], eot, n_positions)
        held = _blocks(enc[cut:], eot, n_positions)
        if not held:  # a held-out slice shorter than a block: keep it as one shorter example
            held = [np.asarray([eot, *[t for x in enc[cut:] for t in (*x, eot)]][:n_positions], dtype=np.int64)]
    if not train:
        raise InputError("the corpus is too small: no training example left after the held-out slice",
                         field="corpus")
    return Data(train=train, heldout=held, mode=mode, n_positions=n_positions)


def encode_documents(tokenizer: Any, documents: Sequence[str]) -> list[list[int]]:
    """Token ids of each document, no special tokens added (the Rust backend directly when there is
    one: several times faster than the ``transformers`` wrapper on many short sentences)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [e.ids for e in backend.encode_batch(list(documents), add_special_tokens=False)]
    return tokenizer(list(documents), add_special_tokens=False)["input_ids"]


def _blocks(enc: Sequence[Sequence[int]], eot: int, size: int) -> list[np.ndarray]:
    stream = np.fromiter((t for x in enc for t in (eot, *x)), dtype=np.int64)
    stream = np.append(stream, eot)
    n = len(stream) // size
    return [stream[i * size:(i + 1) * size] for i in range(n)]


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                  group: int = 50) -> list[np.ndarray]:
    """The batches of one epoch: a pure function of (seed, epoch), so resuming needs only the step.

    Examples are shuffled, sorted by length inside windows of ``group`` batches (so a batch pads
    little), cut into batches, and the batches shuffled again.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    win = batch_size * group
    chunks = []
    for s in range(0, len(perm), win):
        w = perm[s:s + win]
        w = w[np.argsort(-lengths[w], kind="stable")]
        chunks.extend(w[i:i + batch_size] for i in range(0, len(w), batch_size))
    order = rng.permutation(len(chunks))
    return [chunks[i] for i in order]


class BatchStream:
    """Step ``k``'s batch, computed from (seed, k) alone."""

    def __init__(self, examples: list[np.ndarray], batch_size: int, seed: int) -> None:
        self.examples = examples
        self.lengths = np.fromiter((len(x) for x in examples), dtype=np.int64, count=len(examples))
        self.batch_size = min(batch_size, len(examples))
        self.seed = seed
        self.per_epoch = math.ceil(len(examples) / self.batch_size)
        self._epoch: int | None = None
        self._batches: list[np.ndarray] = []

    def position(self, step: int) -> dict:
        """The data position of the batch trained at ``step`` (0-based count of batches done)."""
        return {"epoch": step // self.per_epoch, "batch_in_epoch": step % self.per_epoch,
                "batches_per_epoch": self.per_epoch}

    def batch(self, step: int) -> "torch.Tensor":
        """``[batch, width]`` ids, right-padded with -1 (a value no real token has)."""
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._batches = epoch_batches(self.lengths, self.batch_size, self.seed, epoch)
            self._epoch = epoch
        return pad_rows([self.examples[j] for j in self._batches[i]])


def pad_rows(rows: Sequence[np.ndarray]) -> "torch.Tensor":
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for k, r in enumerate(rows):
        out[k, :len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int64))
    return out
