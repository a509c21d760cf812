"""Pretraining from scratch: tokenizers, data, loss, checkpoints, exact resume, CLI, and the quality bar
(the toy ``small`` model reaches >= 90% on the toy suite's test pairs, from chance at step0)."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import run_cli  # noqa: E402
from taskspace.models import pretrain as P  # noqa: E402
from taskspace.models.presets import PRESETS, get_preset, model_config, non_embedding_parameters, parameter_counts  # noqa: E402
from taskspace.models.tokenizer_training import EOT, train_bpe_tokenizer, unknown_words, word_level_tokenizer  # noqa: E402
from taskspace.suites import toy  # noqa: E402  (our own module: an import error must fail, not skip)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``taskspace ARGS`` in this process (conftest's :func:`run_cli`: no interpreter start)."""
    return run_cli(*args, env={"TASKSPACE_NO_PROGRESS": "1"})


def _cli_process(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m taskspace ARGS`` as a real process: for the kill-and-resume test, whose process dies."""
    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "taskspace", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------------------
# tokenizers
# ---------------------------------------------------------------------------------------------------
def test_word_tokenizer_round_trips_every_toy_sentence(tmp_path):
    from transformers import AutoTokenizer

    tok = word_level_tokenizer(toy.toy_vocabulary())
    suite = toy.toy_suite()
    sents = [s for p in suite.pairs for s in (p.good, p.bad)] + toy.toy_corpus(3000)
    assert unknown_words(tok, sents) == []
    enc = tok(sents, add_special_tokens=True)["input_ids"]  # even when asked, nothing is added
    assert all(tok.unk_token_id not in ids and tok.eos_token_id not in ids for ids in enc)
    assert all(tok.decode(ids) == s.lower() for ids, s in zip(enc, sents))
    # one special token, GPT-2 style: BOS = EOS = pad = <|endoftext|> = id 0
    assert tok.bos_token == tok.eos_token == tok.pad_token == EOT
    assert tok.convert_tokens_to_ids(EOT) == 0
    assert tok.convert_ids_to_tokens(tok("The cats sleep.")["input_ids"]) == ["the", "cats", "sleep", "."]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(sents[:200], add_special_tokens=True)["input_ids"] == enc[:200]
    assert again.bos_token_id == again.eos_token_id == again.pad_token_id == 0
    # an unknown word is visible as <unk>, never silently mapped to <|endoftext|>
    assert unknown_words(tok, ["The zebra sleeps."]) == ["zebra"]


def test_bpe_tokenizer_is_byte_level_and_adds_nothing(tmp_path):
    from transformers import AutoTokenizer

    texts = toy.toy_corpus(2000) + ["Naïve café — 東京, “quoted” text!"] * 3
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    assert len(tok) <= 400 and tok.convert_tokens_to_ids(EOT) == 0
    for s in ["The cats that the dog sees sleep.", "Naïve café — 東京", "unseen: zqxj 123 \t tabs"]:
        ids = tok(s)["input_ids"]
        assert 0 not in ids  # no BOS / EOS added by the tokenizer itself
        assert tok.decode(ids) == s  # byte-level: exact round trip, even for unseen characters
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("The cats sleep.")["input_ids"] == tok("The cats sleep.")["input_ids"]
    assert again.eos_token == again.bos_token == again.pad_token == EOT


# ---------------------------------------------------------------------------------------------------
# data, schedule, loss
# ---------------------------------------------------------------------------------------------------
def test_checkpoint_steps_are_log_spaced_with_init_and_final():
    s = P.checkpoint_steps(1000)
    assert s[0] == 0 and s[-1] == 1000 and s == sorted(set(s)) and len(s) == 7
    ratios = [b / a for a, b in zip(s[1:-1], s[2:])]
    assert all(1.8 < r < 2.6 for r in ratios)  # roughly geometric
    assert P.checkpoint_steps(1) == [0, 1]
    assert P.checkpoint_steps(3) == [0, 1, 2, 3]


def test_learning_rate_warms_up_then_decays_to_floor():
    p = get_preset("small")
    lrs = [P.learning_rate(s, 1000, p) for s in range(1000)]
    warm = int(round(p.warmup * 1000))
    assert lrs[0] == pytest.approx(p.lr / warm)
    assert lrs[warm - 1] == pytest.approx(p.lr) and max(lrs) == pytest.approx(p.lr)
    assert all(a <= b for a, b in zip(lrs[:warm], lrs[1:warm]))
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))
    assert lrs[-1] == pytest.approx(p.min_lr_ratio * p.lr, rel=1e-3)


def test_batches_are_a_pure_function_of_seed_and_step():
    lengths = np.random.default_rng(1).integers(3, 20, size=1000)
    epoch = P.epoch_batches(lengths, 64, seed=0, epoch=0)
    flat = np.concatenate(epoch)
    assert sorted(flat.tolist()) == list(range(1000))  # every example exactly once per epoch
    assert all(np.array_equal(a, b) for a, b in zip(epoch, P.epoch_batches(lengths, 64, 0, 0)))
    assert not np.array_equal(flat, np.concatenate(P.epoch_batches(lengths, 64, 1, 0)))
    assert not np.array_equal(flat, np.concatenate(P.epoch_batches(lengths, 64, 0, 1)))
    # length grouping keeps padding small
    pad = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in epoch) / lengths.sum()
    assert pad < 0.1
    examples = [np.arange(n) for n in lengths]
    s1, s2 = P.BatchStream(examples, 64, 0), P.BatchStream(examples, 64, 0)
    for step in (0, 5, 16, 17, 40):  # jump around: no hidden state between steps
        assert torch.equal(s1.batch(step), s2.batch(step))
    assert s1.position(17) == {"epoch": 1, "batch_in_epoch": 1, "batches_per_epoch": 16}


def test_make_data_rows_start_and_end_with_eot_and_hold_out_disjoint():
    tok = word_level_tokenizer(toy.toy_vocabulary())
    docs = toy.toy_corpus(500)
    d = P.make_data(docs, tok, n_positions=64)
    assert d.mode == "rows" and len(d.train) + len(d.heldout) == 500 and len(d.heldout) == 10
    assert all(r[0] == 0 and r[-1] == 0 and 0 not in r[1:-1] for r in d.train + d.heldout)
    rows = {tuple(r) for r in d.train}
    enc = {tuple([0, *tok(s)["input_ids"], 0]) for s in docs}
    assert rows <= enc
    # documents longer than the context switch to blocks of exactly n_positions tokens
    long_docs = [" ".join(docs[i:i + 20]) for i in range(0, 500, 20)]
    b = P.make_data(long_docs, tok, n_positions=32)
    assert b.mode == "blocks" and all(len(x) == 32 for x in b.train)
    assert b.train[0][0] == 0  # the stream starts with <|endoftext|>


def test_lm_loss_masks_padding_and_matches_scoring():
    from transformers import GPT2LMHeadModel

    from taskspace.scoring import Scorer

    tok = word_level_tokenizer(toy.toy_vocabulary())
    torch.manual_seed(0)
    model = GPT2LMHeadModel(model_config(get_preset("tiny"), vocab_size=len(tok), n_positions=64)).eval()
    sents = ["The cats that the dog sees sleep.", "Mary smiled.", "Who has the mouse known that Mary found?"]
    rows = [np.asarray([0, *tok(s)["input_ids"], 0]) for s in sents]
    with torch.no_grad():
        loss, n = P.lm_loss(model, P.pad_rows(rows), pad_id=0)
        singles = [P.lm_loss(model, P.pad_rows([r]), pad_id=0) for r in rows]
        assert n == sum(len(r) - 1 for r in rows)
        weighted = sum(float(loss_r) * k for loss_r, k in singles) / n
        assert float(loss) == pytest.approx(weighted, rel=1e-5)
        # the same number transformers computes (it shifts the labels itself)
        r = torch.as_tensor(rows[0]).unsqueeze(0)
        assert float(singles[0][0]) == pytest.approx(float(model(input_ids=r, labels=r).loss), rel=1e-5)
        # training context == scoring context: sum of log p(sentence | <|endoftext|>)
        no_end = [r[:-1] for r in rows]
        nll = [float(P.lm_loss(model, P.pad_rows([r]), 0)[0]) * (len(r) - 1) for r in no_end]
    lp = Scorer(model, tok).sentence_logprobs(sents)
    np.testing.assert_allclose(lp, -np.asarray(nll), rtol=1e-5)


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(3):
        opt.zero_grad()
        lin(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    tensors, meta = P.optimizer_to_disk(opt)
    save_file(tensors, str(tmp_path / "s.safetensors"))
    (tmp_path / "s.json").write_text(json.dumps(meta))
    opt2 = torch.optim.AdamW(lin.parameters(), lr=1.0)
    P.optimizer_from_disk(opt2, load_file(str(tmp_path / "s.safetensors")), json.loads((tmp_path / "s.json").read_text()))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == [dict(g, betas=tuple(g["betas"])) for g in b["param_groups"]]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])


def test_presets_keep_the_papers_size_ratio():
    ne = {k: non_embedding_parameters(p) for k, p in PRESETS.items()}
    assert 2.2 < ne["small"] / ne["tiny"] < 3.0  # paper: 70M / 27M = 2.6
    assert 6.9 < ne["base"] / ne["tiny"] < 8.1   # paper: 203M / 27M = 7.5
    from transformers import GPT2LMHeadModel

    for p in PRESETS.values():
        m = GPT2LMHeadModel(model_config(p, vocab_size=300, n_positions=64))
        assert parameter_counts(m)["non_embedding"] == non_embedding_parameters(p)
        assert m.config.resid_pdrop == m.config.embd_pdrop == m.config.attn_pdrop == 0.0


# ---------------------------------------------------------------------------------------------------
# training runs: checkpoints, exact resume, loading
# ---------------------------------------------------------------------------------------------------
TINY = dict(steps=40, sentences=2000, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "tiny"
    P.pretrain("toy", "tiny", out, **TINY)
    return out


def test_run_layout_and_provenance(tiny_run):
    meta = json.loads((tiny_run / "pretrain.json").read_text())
    assert meta["status"] == "complete" and meta["seed"] == 0
    steps = meta["checkpoints"]
    assert steps == P.checkpoint_steps(40) and meta["revisions"] == [f"step{s}" for s in steps]
    for s in steps:
        d = tiny_run / f"step{s}"
        assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
        assert (d / "tokenizer.json").is_file()
        assert not (d / P.STATE_DIR).exists()  # training state is gone once the run is complete
    assert not list(tiny_run.glob("*.bin")) and not list(tiny_run.glob("*/*.bin"))  # no pickle
    rows = _csv(tiny_run / "training.csv")
    assert [int(r["step"]) for r in rows] == steps
    assert rows[0]["train_loss"] == "" and all(r["train_loss"] for r in rows[1:])
    held = [float(r["heldout_loss"]) for r in rows]
    assert held[0] == pytest.approx(math.log(meta["tokenizer"]["vocab_size"]), rel=0.15)  # init ≈ uniform
    assert held[-1] < held[0] - 1.0
    tokens = [int(r["tokens_seen"]) for r in rows]
    assert tokens[0] == 0 and all(a < b for a, b in zip(tokens, tokens[1:]))
    assert meta["parameters"]["non_embedding"] == non_embedding_parameters(get_preset("tiny"))
    assert meta["corpus"]["hash"] and meta["versions"]["torch"] and meta["tokenizer"]["kind"] == "word"


def test_step0_is_the_untrained_init_and_revisions_load(tiny_run):
    from transformers import GPT2LMHeadModel

    from taskspace.models.loading import list_revisions, load_model

    lm = load_model(str(tiny_run), "step40")
    assert lm.revision == "step40" and lm.tokenizer.bos_token == EOT
    assert list_revisions(str(tiny_run)) == [f"step{s}" for s in P.checkpoint_steps(40)]
    torch.manual_seed(0)
    fresh = GPT2LMHeadModel(lm.model.config)
    init = load_model(str(tiny_run), "step0").model.state_dict()
    assert all(torch.equal(v, init[k]) for k, v in fresh.state_dict().items())
    assert not torch.equal(init["transformer.h.0.mlp.c_fc.weight"],
                           lm.model.state_dict()["transformer.h.0.mlp.c_fc.weight"])


def test_resume_after_stop_matches_straight_run(tiny_run, tmp_path):
    out = tmp_path / "resumed"
    P.pretrain("toy", "tiny", out, stop_at=5, **TINY)
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["status"] == "running"
    assert sorted(d.name for d in out.glob("step*")) == ["step0", "step1", "step2", "step4", "step9"]
    assert [d.parent.name for d in out.glob(f"step*/{P.STATE_DIR}")] == ["step9"]  # only the latest
    # what a kill -9 during the next checkpoint leaves behind: a half-written temp folder
    (out / ".step18.tmp-dead").mkdir()
    (out / ".step18.tmp-dead" / "config.json").write_text("{")
    P.pretrain("toy", "tiny", out, **TINY)
    assert not (out / ".step18.tmp-dead").exists()
    for s in P.checkpoint_steps(40):
        assert _same_weights(out / f"step{s}", tiny_run / f"step{s}"), f"step{s} differs"
    a, b = _csv(out / "training.csv"), _csv(tiny_run / "training.csv")
    assert [{k: r[k] for k in r if k != "elapsed_s"} for r in a] == [{k: r[k] for k in r if k != "elapsed_s"} for r in b]
    # a complete run is not redone; different settings are refused
    before = (out / "step40" / "model.safetensors").stat().st_mtime_ns
    P.pretrain("toy", "tiny", out, **TINY)
    assert (out / "step40" / "model.safetensors").stat().st_mtime_ns == before
    from taskspace.errors import TaskspaceError

    with pytest.raises(TaskspaceError, match="different pretraining run"):
        P.pretrain("toy", "tiny", out, **dict(TINY, steps=41))


def test_seed_changes_the_init(tiny_run, tmp_path):
    P.pretrain("toy", "tiny", tmp_path / "s1", seed=1, **dict(TINY, steps=1))
    assert not _same_weights(tmp_path / "s1" / "step0", tiny_run / "step0")


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_straight_run(tmp_path):
    """A real SIGKILL at a fixed training step (the process kills itself at the crash point, so the
    moment is the same on every machine), then a resume: every checkpoint equals the straight run's,
    weights and tokenizer files byte for byte (a resumed run's checkpoints keep their fingerprint)."""
    # 60 steps: checkpoints 0, 1, 3, 6, 13, 27, 60 — the kill at step 8 falls between two of them
    args = ["pretrain", "--corpus", "toy", "--size", "tiny", "--steps", "60", "--sentences", "3000",
            "--threads", "1"]
    # all three are processes: the straight run and the resume, as the killed run, start from a fresh one
    straight = _cli_process(*args, "--out", str(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "b"
    steps = P.checkpoint_steps(60)
    kill_at = steps[3] + 2  # after the 4th checkpoint, between two checkpoints: those 2 steps are lost
    assert kill_at < steps[4]
    killed = _cli_process(*args, "--out", str(out), env={"TASKSPACE_CRASH_AT": f"pretrain_step:{kill_at}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / f"step{steps[3]}").is_dir() and not (out / f"step{steps[4]}").exists()
    resumed = _cli_process(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    for s in steps:
        assert _same_weights(out / f"step{s}", tmp_path / "a" / f"step{s}"), f"step{s} differs"
        for f in sorted((tmp_path / "a" / f"step{s}").iterdir()):
            if f.is_file() and f.name != "model.safetensors":  # tokenizer files, config.json, ...
                assert (out / f"step{s}" / f.name).read_bytes() == f.read_bytes(), f"step{s}/{f.name} differs"


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def test_cli_pretrain_on_a_text_file_with_bpe(tmp_path):
    from taskspace.models.loading import load_model
    from taskspace.scoring import Scorer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy.toy_corpus(400) + ["Zebras, naturally, eat grass."] * 5) + "\n")
    out = tmp_path / "m"
    r = _cli("pretrain", "--corpus", str(corpus), "--size", "tiny", "--out", str(out), "--steps", "3",
             "--vocab-size", "300")
    assert r.returncode == 0, r.stderr
    assert "step3" in r.stdout
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["tokenizer"]["kind"] == "bpe" and meta["tokenizer"]["vocab_size"] <= 300
    assert meta["checkpoints"] == [0, 1, 2, 3]
    lm = load_model(str(out), "step3")
    lp = Scorer.from_loaded(lm).sentence_logprobs(["Zebras eat grass."])
    assert np.isfinite(lp).all() and Scorer.from_loaded(lm).convention.prefix_token == EOT


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "never"
    r = _cli("pretrain", "--corpus", str(tmp_path / "missing.txt"), "--size", "tiny", "--out", str(out))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("error:") and "missing.txt" in r.stderr and not out.exists()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"The cat sleeps.\nThe dog \xff runs.\n")
    r = _cli("pretrain", "--corpus", str(bad), "--size", "tiny", "--out", str(out))
    assert r.returncode == 2 and "line 2" in r.stderr and "Traceback" not in r.stderr and not out.exists()
    r = _cli("pretrain", "--corpus", "toy", "--size", "huge", "--out", str(out))
    assert r.returncode == 2 and "tiny, small, base" in r.stderr and not out.exists()


# ---------------------------------------------------------------------------------------------------
# quality bar
# ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_toy_small_learns_the_toy_suite(tmp_path):
    """Fixed seed: ``small`` on the toy corpus goes from chance (step0) to >= 90% mean accuracy on the
    toy suite's test pairs, and accuracy rises across checkpoints."""
    from taskspace.models.loading import load_model
    from taskspace.scoring import Scorer, summarize_tasks
    from taskspace.suites import split_suite

    out = tmp_path / "small"
    # one thread: the same numbers everywhere, and immune to other processes on a shared CI machine
    P.pretrain("toy", "small", out, steps=600, sentences=20_000, seed=0, progress=False, threads=1)
    test = split_suite(toy.toy_suite())["test"]
    acc = {}
    for s in P.checkpoint_steps(600):
        lm = load_model(str(out), f"step{s}")
        acc[s] = float(summarize_tasks(Scorer.from_loaded(lm).score_pairs(test.pairs))["accuracy"].mean())
    accs = list(acc.values())
    assert 0.35 < acc[0] < 0.65, acc            # the untrained init is near chance
    assert acc[600] >= 0.90, acc                # the quality bar (0.954 when measured)
    assert all(b >= a - 0.02 for a, b in zip(accs, accs[1:])), acc  # rises across checkpoints
    assert accs[-1] - accs[1] > 0.2, acc
    held = [float(r["heldout_loss"]) for r in _csv(out / "training.csv")]
    assert all(b < a for a, b in zip(held, held[1:]))
