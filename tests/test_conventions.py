"""The two scoring conventions, checked against computations written here without the scorer:

- ``taskspace`` (default): ``log p(sentence | <|endoftext|>)``, a tie is not correct;
- ``lm-eval``: ``log p(" " + sentence | <|endoftext|>)``, a tie is correct (np.argmax([good, bad]) == 0);

and ``taskspace score``'s lm-evaluation-harness output (results.json, samples_<task>.jsonl). A real
byte-level BPE tokenizer (GPT-2's kind, where a leading space changes the tokens) trained in the test,
a real tiny GPT-2, the real CLI; the measured BLiMP accuracies on ../shared's gutenberg-gpt2-5m.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import BLIMP, EOT, GUTENBERG_MODEL, make_bpe_tokenizer, make_tiny_model, shared_or_skip
from taskspace.errors import TaskspaceError
from taskspace.scoring import Scorer, score
from taskspace.suites.schema import Pair, Suite

PAIRS = [("sv", "agr", "The cat sleeps.", "The cat sleep."),
         ("sv", "agr", "The cats sleep.", "The cats sleeps."),
         ("sv", "agr", "These dogs went away.", "These dogs went away."),          # a tie
         ("refl", "bind", "The girl saw herself.", "The girl saw himself."),
         ("refl", "bind", "The boys saw themselves.", "The boys saw itself."),
         ("refl", "bind", "A teacher has seen the dogs.", "A teacher has saw the dogs.")]


@pytest.fixture(scope="module")
def bpe():
    return make_bpe_tokenizer()


@pytest.fixture(scope="module")
def gpt2(bpe):
    return make_tiny_model("gpt2", vocab_size=len(bpe), seed=3)


def hand_logprob(model, tok, text: str) -> float:
    """log p(text | <|endoftext|>): one plain forward pass, float64 log-softmax, summed by hand."""
    ids = [tok.convert_tokens_to_ids(EOT)] + tok.encode(text, add_special_tokens=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return float(sum(lp[t - 1, ids[t]] for t in range(1, len(ids))))


def suite_of(rows) -> Suite:
    return Suite([Pair(t, g, str(i), good, bad) for i, (t, g, good, bad) in enumerate(rows)], name="unit")


def test_a_leading_space_changes_the_tokens(bpe):
    # otherwise the tests below could not tell the conventions apart
    assert bpe.encode("The cat sleeps.", add_special_tokens=False) != \
        bpe.encode(" The cat sleeps.", add_special_tokens=False)


@pytest.mark.parametrize("share", [False, True])
def test_both_conventions_equal_a_hand_computation(gpt2, bpe, share):
    pairs = suite_of(PAIRS).pairs
    for conv, space in (("taskspace", ""), ("lm-eval", " ")):
        df = Scorer(gpt2, bpe, convention=conv, share_prefix=share).score_pairs(pairs)
        want_good = [hand_logprob(gpt2, bpe, space + p.good) for p in pairs]
        want_bad = [hand_logprob(gpt2, bpe, space + p.bad) for p in pairs]
        np.testing.assert_allclose(df["logp_good"], want_good, atol=1e-4, rtol=1e-6)
        np.testing.assert_allclose(df["logp_bad"], want_bad, atol=1e-4, rtol=1e-6)
    a = Scorer(gpt2, bpe).score_pairs(pairs)
    b = Scorer(gpt2, bpe, convention="lm-eval").score_pairs(pairs)
    assert (a["logp_good"] != b["logp_good"]).all()                 # the space is really there


def test_lm_eval_counts_a_tie_as_correct_as_argmax_does(gpt2, bpe):
    pairs = suite_of(PAIRS).pairs
    ours = Scorer(gpt2, bpe).score_pairs(pairs)
    theirs = Scorer(gpt2, bpe, convention="lm-eval").score_pairs(pairs)
    # lm-eval: acc = 1.0 if np.argmax([ll_good, ll_bad]) == 0 (gold: the good sentence)
    argmax = [float(np.argmax([g, b]) == 0) for g, b in zip(theirs["logp_good"], theirs["logp_bad"])]
    assert theirs["correct"].astype(float).tolist() == argmax
    assert ours["correct"].tolist() == (ours["logp_good"] > ours["logp_bad"]).tolist()
    tie = [p.good == p.bad for p in pairs]
    assert ours["tie"].tolist() == tie and theirs["tie"].tolist() == tie
    assert not ours["correct"][2] and theirs["correct"][2]           # the identical pair


def test_lm_eval_takes_only_its_own_reduction_and_prefix(gpt2, bpe):
    with pytest.raises(TaskspaceError, match="lm-eval convention"):
        Scorer(gpt2, bpe, convention="lm-eval", reduction="mean")
    with pytest.raises(TaskspaceError, match="lm-eval convention"):
        Scorer(gpt2, bpe, convention="lm-eval", prefix="none")
    with pytest.raises(TaskspaceError, match="unknown convention 'lm_eval'"):
        Scorer(gpt2, bpe, convention="lm_eval")


def write_blimp_folder(folder, rows):
    folder.mkdir()
    by_task: dict[str, list] = {}
    for t, g, good, bad in rows:
        by_task.setdefault(t, []).append((g, good, bad))
    for t, items in by_task.items():
        lines = [json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": t, "linguistics_term": g,
                             "pairID": str(i), "field": "syntax"}) for i, (g, good, bad) in enumerate(items)]
        (folder / f"{t}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_score_cli_writes_lm_eval_results_and_samples(tmp_path, gpt2, bpe):
    from taskspace.cli import app

    model_dir = tmp_path / "lm"
    gpt2.save_pretrained(model_dir)
    bpe.save_pretrained(model_dir)
    suite = write_blimp_folder(tmp_path / "blimp", PAIRS)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["score", "--model", str(model_dir), "--suite", str(suite), "--out", str(out),
                                 "--convention", "lm-eval"])
    assert r.exit_code == 0, r.output
    assert "ties counted as correct; convention lm-eval" in " ".join(r.output.split())

    pairs = pd.read_parquet(out / "pairs.parquet")
    assert pairs["good"].tolist() == [p[2] for p in sorted(PAIRS, key=lambda p: p[0])]   # files by name
    assert pairs["bad"].tolist() == [p[3] for p in sorted(PAIRS, key=lambda p: p[0])]
    np.testing.assert_allclose(pairs["logp_good"], [hand_logprob(gpt2, bpe, " " + s) for s in pairs["good"]],
                               atol=1e-4, rtol=1e-6)

    res = json.loads((out / "lm-eval" / "results.json").read_text())
    assert set(res["results"]) == {"blimp_refl", "blimp_sv"}
    run = json.loads((out / "run.json").read_text())
    assert res["config"]["convention"] == run["convention"]
    assert run["convention"]["name"] == "lm-eval" and run["convention"]["leading_space"] is True
    assert res["config"]["model"] == str(model_dir) and res["config"]["model_revision"] is None
    assert res["versions"] == {"blimp_refl": 1.0, "blimp_sv": 1.0}
    for task in ("refl", "sv"):
        entry = res["results"][f"blimp_{task}"]
        assert set(entry) == {"alias", "acc,none", "acc_stderr,none"} and entry["alias"] == f"blimp_{task}"
        accs = pairs[pairs["task"] == task]["correct"].astype(float)
        p, n = accs.mean(), len(accs)
        assert entry["acc,none"] == pytest.approx(p)
        # lm-eval's mean_stderr: sample stddev / sqrt(n), = sqrt(p (1 - p) / (n - 1)) for 0/1 values
        assert entry["acc_stderr,none"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
        samples = [json.loads(x) for x in (out / "lm-eval" / f"samples_blimp_{task}.jsonl").read_text().splitlines()]
        assert [s["doc_id"] for s in samples] == list(range(n))
        sub = pairs[pairs["task"] == task].reset_index(drop=True)
        for s, row in zip(samples, sub.itertuples()):
            assert s["doc"]["sentence_good"] == row.good and s["doc"]["sentence_bad"] == row.bad
            assert s["arguments"]["gen_args_0"] == {"arg_0": "", "arg_1": " " + row.good}
            lls = [float(x[0]) for x in s["filtered_resps"]]
            assert lls == [row.logp_good, row.logp_bad]
            assert s["acc"] == float(np.argmax(lls) == 0) and s["target"] == "0"
    tie = [json.loads(x) for x in (out / "lm-eval" / "samples_blimp_sv.jsonl").read_text().splitlines()][2]
    assert tie["doc"]["sentence_good"] == tie["doc"]["sentence_bad"] and tie["acc"] == 1.0

    # the default convention: the same files, ties not correct, no lm-eval task version claimed
    out2 = tmp_path / "out2"
    r = CliRunner().invoke(app, ["score", "--model", str(model_dir), "--suite", str(suite), "--out", str(out2)])
    assert r.exit_code == 0, r.output
    res2 = json.loads((out2 / "lm-eval" / "results.json").read_text())
    assert res2["versions"] == {"blimp_refl": None, "blimp_sv": None}
    assert res2["config"]["convention"]["name"] == "taskspace"
    tie2 = [json.loads(x) for x in (out2 / "lm-eval" / "samples_blimp_sv.jsonl").read_text().splitlines()][2]
    assert tie2["acc"] == 0.0 and tie2["arguments"]["gen_args_0"]["arg_1"] == tie2["doc"]["sentence_good"]


def test_score_cli_refuses_lm_eval_with_mean_in_one_line(tmp_path):
    from taskspace.cli import app

    r = CliRunner().invoke(app, ["score", "--model", "nowhere/none", "--suite", "toy", "--out", str(tmp_path / "o"),
                                 "--convention", "lm-eval", "--reduction", "mean"])
    assert r.exit_code != 0 and isinstance(r.exception, TaskspaceError)
    assert "lm-eval convention" in str(r.exception) and not (tmp_path / "o").exists()


def test_gutenberg_reproduces_lm_eval_blimp_accuracies():
    """lm-eval 0.4.x on gutenberg-gpt2-5m step2577, first 200 pairs (measured with real lm-eval)."""
    shared_or_skip(GUTENBERG_MODEL)
    shared_or_skip(BLIMP)
    import taskspace

    tasks = ["anaphor_gender_agreement", "determiner_noun_agreement_2", "irregular_past_participle_verbs"]
    suite = taskspace.load_suite(str(BLIMP)).select(tasks, 200)
    lm = taskspace.load_model(str(GUTENBERG_MODEL), revision="step2577")
    lm_eval = score(lm, suite, convention="lm-eval").tasks.set_index("task")["accuracy"]
    ours = score(lm, suite).tasks.set_index("task")["accuracy"]
    assert lm_eval[tasks].round(3).tolist() == [0.670, 0.785, 0.885]
    assert ours[tasks].round(3).tolist() == [0.59, 0.77, 0.85]
