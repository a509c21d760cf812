"""Bad input through the CLI: one line on stderr, exit code 2, no traceback, no files.

And one good `taskspace score` run whose tasks.csv, pairs.parquet and run.json are checked. The commands
run in this process through the console script's function (conftest's :func:`run_cli`, no interpreter
start per command); one refusal runs the installed console script itself (:func:`run_script`), so the
exit code and the one line are checked as a shell sees them too.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BLIMP, run_cli

EXE = [shutil.which("taskspace")] if shutil.which("taskspace") else [sys.executable, "-m", "taskspace"]

GOOD_ROWS = [
    {"good": "the cat sleeps .", "bad": "the cat sleep .", "task": "sv_agr", "group": "agreement"},
    {"good": "the cats sleep .", "bad": "the cats sleeps .", "task": "sv_agr", "group": "agreement"},
    {"good": "the girl saw herself .", "bad": "the girl saw himself .", "task": "refl", "group": "binding"},
    {"good": "the boys saw themselves .", "bad": "the boys saw themselves .", "task": "refl", "group": "binding"},
    {"good": "the dog never ran .", "bad": "the dog ever ran .", "task": "npi", "group": "npi"},
]


def run_script(*args: str | Path) -> subprocess.CompletedProcess:
    """The installed ``taskspace`` executable (or ``python -m taskspace`` without one), a real process."""
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *must: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for m in must:
        assert m in line, (m, line)
    return line


def assert_no_files(out: Path) -> None:
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD_LINE = json.dumps(GOOD_ROWS[0])

# (name, file name, content, extra args, strings the error line must contain)
BAD_SUITES = [
    ("malformed JSON", "s.jsonl", jsonl([GOOD_LINE, '{"good": "the cat sleeps ."']), [],
     ["s.jsonl, line 2: malformed JSON at column"]),
    ("missing field", "s.jsonl", jsonl([GOOD_LINE, '{"good": "a", "task": "t"}']), [],
     ["s.jsonl, line 2, field 'bad': missing field"]),
    ("empty sentence", "s.csv", "good,bad,task\nthe cat sleeps .,the cat sleep .,t\nthe dog ran .,  ,t\n", [],
     ["s.csv, line 3, field 'bad': empty sentence"]),
    ("wrong type", "s.jsonl", jsonl([GOOD_LINE, '{"good": ["the"], "bad": "the cat", "task": "t", "group": "g"}']), [],
     ["s.jsonl, line 2, field 'good': expected a string sentence, got a list"]),
    ("ragged CSV", "s.csv", "good,bad,task,group\nthe cat sleeps .,the cat sleep .,t,g\nthe cat, sleeps .,x,t,g\n",
     [], ["s.csv, line 3, field 'column 5': the row has 5 cells, the header 4 columns"]),
    ("ragged TSV", "s.tsv", "good\tbad\ttask\nthe cat sleeps .\tthe cat sleep .\n", [],
     ["s.tsv, line 2, field 'task': the row has 2 cells"]),
    ("mapping to a missing column", "s.csv", "s1,s2,paradigm\na,b,t\n",
     ["--columns", "good=s1,bad=sentence_bad,task=paradigm"],
     ["s.csv, line 1, field 'sentence_bad': column 'sentence_bad' (mapped to bad) not found"]),
    ("unknown field in the mapping", "s.csv", "s1,s2,paradigm\na,b,t\n", ["--columns", "good=s1,sentence=s2"],
     ["field 'columns': unknown field 'sentence'"]),
    ("malformed mapping", "s.csv", "s1,s2,paradigm\na,b,t\n", ["--columns", "good:s1"],
     ["field 'columns': malformed column mapping 'good:s1'"]),
    ("no task column", "s.csv", "s1,s2\na,b\n", ["--columns", "good=s1,bad=s2"],
     ["s.csv, line 1, field 'task': no column for task"]),
    ("task in two groups", "s.jsonl", jsonl([GOOD_ROWS[0], dict(GOOD_ROWS[1], group="other")]), [],
     ["s.jsonl, line 2, field 'group': task 'sv_agr' is in group 'agreement' on line 1"]),
    ("unsupported suffix", "s.txt", "good,bad,task\n", [], ["s.txt: unsupported file type '.txt'"]),
]


@pytest.mark.parametrize("name, fname, content, extra, must", BAD_SUITES, ids=[c[0] for c in BAD_SUITES])
def test_score_refuses_bad_suite(tmp_path, tiny_model_dir, name, fname, content, extra, must):
    suite = write(tmp_path / fname, content)
    out = tmp_path / "out"
    proc = run_cli("score", "--model", tiny_model_dir, "--revision", "step0", "--suite", suite,
                   "--out", out, *extra)
    line = assert_one_line_error(proc, *must)
    assert str(suite) in line  # --columns errors too name the file they are for
    assert_no_files(out)


def test_score_refuses_missing_suite_path(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere" / "pairs.jsonl"
    proc = run_script("score", "--model", tiny_model_dir, "--revision", "step0", "--suite", missing, "--out", out)
    assert_one_line_error(proc, f"{missing}: no such suite")
    assert_no_files(out)


def test_score_refuses_bad_blimp_folder(tmp_path, tiny_model_dir):
    folder = tmp_path / "blimp"
    folder.mkdir()
    row = {"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep .", "UID": "sv",
           "linguistics_term": "agreement", "pairID": "0"}
    write(folder / "sv.jsonl", jsonl([row, dict(row, pairID="1"), dict(row, pairID="0")]))
    out = tmp_path / "out"
    proc = run_cli("score", "--model", tiny_model_dir, "--suite", folder, "--out", out, "--revision", "step0")
    assert_one_line_error(proc, f"{folder / 'sv.jsonl'}, line 3, field 'pairID': duplicate pairID '0'")
    assert_no_files(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("suite", "info", empty)
    assert_one_line_error(proc, f"{empty}: the folder holds no .jsonl files")


@pytest.mark.parametrize("model_args, must", [
    (["--model", "{root}/missing-model"], ["model folder {root}/missing-model does not exist"]),
    (["--model", "{model}", "--revision", "step99"],
     ["model folder {model} has no revision 'step99' (it has: step0, step10)"]),
])
def test_score_refuses_bad_model(tmp_path, tiny_model_dir, model_args, must):
    suite = write(tmp_path / "s.jsonl", jsonl(GOOD_ROWS))
    fill = {"root": tmp_path, "model": tiny_model_dir}
    out = tmp_path / "out"
    proc = run_cli("score", *[a.format(**fill) for a in model_args], "--suite", suite, "--out", out)
    assert_one_line_error(proc, *[m.format(**fill) for m in must])
    assert_no_files(out)


@pytest.mark.parametrize("fname, content, extra, must", [
    ("s.csv", "good,bad,task\na,b,t\nc,d\n", [], ["s.csv, line 3, field 'task'"]),
    ("s.jsonl", jsonl([GOOD_LINE, "{oops}"]), [], ["s.jsonl, line 2: malformed JSON"]),
    ("s.csv", "a,b,c\nx,y,z\n", ["--columns", "good=a,bad=b,task=c,grp=d"], ["unknown field 'grp'"]),
])
def test_suite_info_refuses_bad_input(tmp_path, fname, content, extra, must):
    suite = write(tmp_path / fname, content)
    assert_one_line_error(run_cli("suite", "info", suite, *extra), *must)


def test_score_good_run_writes_checked_tables(tmp_path, tiny_model_dir):
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taskspace.suites.files import load_pairs_file

    # our own column names, mapped with --columns (the option is wired into `score`)
    rows = [{"s_ok": r["good"], "s_no": r["bad"], "paradigm": r["task"], "phenomenon": r["group"],
             "n": 10 + i} for i, r in enumerate(GOOD_ROWS)]
    suite = write(tmp_path / "pairs.jsonl", jsonl(rows))
    mapping = "good=s_ok,bad=s_no,task=paradigm,group=phenomenon,pair_id=n"
    out = tmp_path / "out"
    proc = run_cli("score", "--model", tiny_model_dir, "--revision", "step10", "--suite", suite, "--out", out,
                   "--columns", mapping, "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["lm-eval", "pairs.parquet", "run.json", "tasks.csv"]

    tasks = pd.read_csv(out / "tasks.csv")
    assert list(tasks.columns) == ["task", "group", "n_pairs", "accuracy", "accuracy_ci_low",
                                   "accuracy_ci_high", "mean_margin", "n_ties"]
    assert tasks["task"].tolist() == ["sv_agr", "refl", "npi"]
    assert tasks["group"].tolist() == ["agreement", "binding", "npi"]
    assert tasks["n_pairs"].tolist() == [2, 2, 1]
    assert tasks["n_ties"].tolist() == [0, 1, 0]
    assert ((tasks["accuracy_ci_low"] <= tasks["accuracy"]) & (tasks["accuracy"] <= tasks["accuracy_ci_high"])).all()

    pairs = pd.read_parquet(out / "pairs.parquet")
    for col in ("task", "pair_id", "logp_good", "logp_bad", "n_tokens_good", "n_tokens_bad", "margin"):
        assert col in pairs.columns
    assert pairs["pair_id"].tolist() == ["10", "11", "12", "13", "14"]
    assert (pairs["margin"] == pairs["logp_good"] - pairs["logp_bad"]).all()
    refl = pairs[pairs["task"] == "refl"]
    assert refl["margin"].iloc[1] == 0 and not bool(refl["correct"].iloc[1])   # the identical pair: a tie
    # accuracy / margin in tasks.csv follow from pairs.parquet
    for _, t in tasks.iterrows():
        sub = pairs[pairs["task"] == t["task"]]
        assert t["accuracy"] == pytest.approx((sub["margin"] > 0).mean(), abs=1e-6)
        assert t["mean_margin"] == pytest.approx(sub["margin"].mean(), rel=1e-5, abs=1e-6)
    # one log-prob recomputed directly: sum of log p(token | <s>, previous tokens), revision step10
    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "step10")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir / "step10").eval()
    ids = [tok.bos_token_id] + tok(GOOD_ROWS[0]["good"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
    direct = lp.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).sum().item()
    assert pairs["logp_good"].iloc[0] == pytest.approx(direct, abs=1e-4)
    assert pairs["n_tokens_good"].iloc[0] == len(ids) - 1

    run = json.loads((out / "run.json").read_text())
    assert run["model"]["revision"] == "step10" and run["model"]["path"].endswith("step10")
    assert run["convention"]["reduction"] == "sum" and run["convention"]["prefix_token"] == "<s>"
    assert run["seed"] == 5
    expected = load_pairs_file(suite, columns=dict(kv.split("=") for kv in mapping.split(",")))
    assert run["suite"]["data_hash"] == expected.data_hash
    assert run["suite"]["n_pairs"] == 5 and run["suite"]["n_identical"] == 1
    assert "torch" in run["versions"]


def test_suite_info_prints_groups_tasks_counts(tmp_path):
    rows = [dict(r, pair_id=str(i)) for i, r in enumerate(GOOD_ROWS)]
    suite = write(tmp_path / "pairs.jsonl", jsonl(rows))
    proc = run_cli("suite", "info", suite)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "binding (1 task)" in text and "agreement (1 task)" in text
    assert "3 tasks in 3 groups, 5 pairs" in text
    assert "1 identical pairs" in text and "refl/3" in text
    from taskspace.suites.files import load_pairs_file

    assert load_pairs_file(suite).data_hash in text
    summary = json.loads(run_cli("suite", "info", suite, "--json").stdout)
    assert summary["n_pairs"] == 5 and summary["identical"] == [{"task": "refl", "pair_id": "3"}]
    assert [t["n_pairs"] for t in summary["tasks"]] == [2, 2, 1]


def test_suite_info_on_blimp(tmp_path):
    if not BLIMP.exists():
        pytest.skip(f"{BLIMP} is absent")
    summary = json.loads(run_cli("suite", "info", BLIMP, "--json").stdout)
    assert (summary["n_tasks"], summary["n_groups"], summary["n_pairs"], summary["n_identical"]) == (67, 13, 67000, 7)


def test_suite_toy_writes_a_readable_suite(tmp_path):
    from taskspace.suites.blimp import load_blimp_folder
    from taskspace.suites.files import load_pairs_file
    from taskspace.suites.toy import toy_suite

    out = tmp_path / "toy.jsonl"
    proc = run_cli("suite", "toy", "--out", out, "--seed", "3", "--pairs-per-task", "20")
    assert proc.returncode == 0, proc.stderr
    expected = toy_suite(seed=3, pairs_per_task=20)
    assert load_pairs_file(out).pairs == expected.pairs
    folder = tmp_path / "toy_folder"
    assert run_cli("suite", "toy", "--out", folder, "--seed", "3", "--pairs-per-task", "20").returncode == 0
    assert load_blimp_folder(folder).by_task() == {t: expected.pairs_of(t) for t in sorted(expected.tasks)}


def test_score_share_prefix_choice_is_recorded_and_changes_no_margin(tmp_path, tiny_model_dir):
    import pandas as pd

    suite = write(tmp_path / "pairs.jsonl", jsonl(GOOD_ROWS))
    runs = {}
    for name, flag in (("default", []), ("whole", ["--no-share-prefix"]), ("shared", ["--share-prefix"])):
        out = tmp_path / name
        proc = run_cli("score", "--model", tiny_model_dir, "--revision", "step10", "--suite", suite,
                       "--out", out, *flag)
        assert proc.returncode == 0, proc.stderr
        runs[name] = (json.loads((out / "run.json").read_text())["scorer"]["share_prefix"],
                      pd.read_parquet(out / "pairs.parquet"))
    # the tiny GPT-2 scores a prefix cache exactly, so the default (auto) turns prefix sharing on
    assert runs["default"][0] is True and runs["shared"][0] is True and runs["whole"][0] is False
    whole = runs["whole"][1]
    for name in ("default", "shared"):
        pairs = runs[name][1]
        assert pairs["pair_id"].tolist() == whole["pair_id"].tolist()
        assert pairs["margin"].to_numpy() == pytest.approx(whole["margin"].to_numpy(), abs=1e-4)
        assert pairs["logp_good"].to_numpy() == pytest.approx(whole["logp_good"].to_numpy(), abs=1e-4)


# -- the fuzzer's findings (issue 11, item 5), in-process: exit 2, one line, nothing written ------

def run_main(capsys, *args) -> tuple[int, str]:
    """``taskspace.cli.main`` in this process (no interpreter start per case): exit code and stderr."""
    from taskspace.cli import main

    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in args])
    return ei.value.code, capsys.readouterr().err


def one_line(code: int, err: str, *must: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for m in must:
        assert m in err, (m, err)
    return err


FUZZ_SUITES = [
    # (id, file name, content, strings the error must contain)
    ("5000-digit id", "s.jsonl", jsonl([GOOD_LINE, '{"good": "a", "bad": "b", "task": "t", "pair_id": '
                                        + "7" * 5000 + "}"]), ["s.jsonl, line 2: malformed JSON"]),
    ("100,000 [", "s.jsonl", jsonl([GOOD_LINE, "[" * 100_000]), ["s.jsonl, line 2: malformed JSON"]),
    ("lone surrogate", "s.jsonl", jsonl([GOOD_LINE, '{"good": "x\\ud800y", "bad": "b", "task": "t", "group": "g"}']),
     ["s.jsonl, line 2, field 'good'", "lone surrogate"]),
    ("zero-width space", "s.jsonl", jsonl([GOOD_LINE, dict(GOOD_ROWS[1], bad="\u200b")]),
     ["s.jsonl, line 2, field 'bad'", "no visible character"]),
    ("byte-order mark", "s.jsonl", jsonl([GOOD_LINE, dict(GOOD_ROWS[1], good="\ufeff")]),
     ["s.jsonl, line 2, field 'good'", "no visible character"]),
    ("control characters", "s.csv", "good,bad,task\nthe cat .,\x01\x02,t\n", ["s.csv, line 2, field 'bad'",
                                                                              "control character"]),
    ("NUL", "s.jsonl", jsonl([GOOD_LINE, dict(GOOD_ROWS[1], bad="\x00")]), ["s.jsonl, line 2, field 'bad'",
                                                                          "control character (U+0000)"]),
    ("1 MB of delimiters", "s.tsv", "good\tbad\ttask\nthe cat .\tcat the .\tt\n" + "\t" * (1 << 20) + "\n",
     ["s.tsv, line 3", "the row has 1048577 cells"]),
    ("unclosed quote", "s.csv", 'good,bad,task\n"the cat .,x,t\na,b,t\nc,d,t\ne,f,t\ng,h,t\ni,j,t\n',
     ["s.csv, line 2: malformed CSV: a quoted cell is never closed"]),
]


@pytest.mark.parametrize("name, fname, content, must", FUZZ_SUITES, ids=[c[0] for c in FUZZ_SUITES])
def test_score_refuses_fuzzed_suites(tmp_path, tiny_model_dir, capsys, name, fname, content, must):
    suite = write(tmp_path / fname, content)
    out = tmp_path / "out"
    one_line(*run_main(capsys, "score", "--model", tiny_model_dir, "--revision", "step0", "--suite", suite,
                       "--out", out), str(suite), *must)
    assert_no_files(out)
    one_line(*run_main(capsys, "suite", "info", suite), str(suite), *must)


@pytest.mark.parametrize("spec, must", [
    ("toy:abc", "toy:abc: the toy suite's seed must be a non-negative integer"), ("toy:", "got ''"),
    ("toy:1.5", "got '1.5'"), ("~nosuchuser_taskspace/x.jsonl", "~nosuchuser_taskspace/x.jsonl: no such suite"),
])
def test_bad_suite_names_are_one_line(tmp_path, capsys, spec, must):
    one_line(*run_main(capsys, "suite", "info", spec), must)


def test_score_refuses_a_sentence_longer_than_the_context(tmp_path, tiny_model_dir, capsys):
    # the tiny GPT-2 has 64 positions: 63 words + the BOS prefix fit, 64 words do not
    rows = [dict(GOOD_ROWS[0], pair_id="p1"), dict(GOOD_ROWS[1], good=" ".join(["the"] * 63), pair_id="p2"),
            dict(GOOD_ROWS[2], bad=" ".join(["the"] * 64), pair_id="p7")]
    suite = write(tmp_path / "s.jsonl", jsonl(rows))
    out = tmp_path / "out"
    one_line(*run_main(capsys, "score", "--model", tiny_model_dir, "--revision", "step0", "--suite", suite,
                       "--out", out),
             "field 'bad': task 'refl', pair 'p7': the bad sentence is 65 tokens (with the prefix token), "
             "longer than the model's 64 positions")
    assert_no_files(out)
    # without the prefix token the same sentence is 64 tokens: it fits, and is scored
    code, err = run_main(capsys, "score", "--model", tiny_model_dir, "--revision", "step0", "--suite", suite,
                         "--out", out, "--prefix", "none")
    assert code == 0, err


def test_score_refuses_a_model_folder_without_tokenizer_files(tmp_path, tiny_model_dir, capsys):
    for f in (tiny_model_dir / "step0").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            f.unlink()
    suite = write(tmp_path / "s.jsonl", jsonl(GOOD_ROWS))
    out = tmp_path / "out"
    one_line(*run_main(capsys, "score", "--model", tiny_model_dir, "--revision", "step0", "--suite", suite,
                       "--out", out), "step0")
    assert_no_files(out)
