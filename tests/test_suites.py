"""Suite loaders (BLiMP folder and hub, JSONL / CSV / TSV), validation, write_suite, splits."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import BLIMP, shared_or_skip
from taskspace.errors import InputError, TaskspaceError
from taskspace.suites import Pair, SplitSizes, Suite, load_suite, split_suite
from taskspace.suites.blimp import BLIMP_UIDS, load_blimp_folder, load_blimp_hub, pairs_from_rows
from taskspace.suites.files import load_pairs_file, parse_columns
from taskspace.suites.write import write_suite

# From ../shared/data/blimp/README.md: the 7 pairs whose good and bad sentences are identical.
IDENTICAL = {("passive_1", "324"), ("passive_1", "810"), ("principle_A_case_2", "105"),
             ("principle_A_case_2", "287"), ("principle_A_case_2", "372"), ("principle_A_case_2", "816"),
             ("principle_A_case_2", "967")}


def blimp_row(uid="anaphor_gender_agreement", term="anaphor_agreement", pid="0", good="Amy saw herself.",
              bad="Amy saw himself.", **extra) -> dict:
    row = {"sentence_good": good, "sentence_bad": bad, "field": "morphology", "linguistics_term": term,
           "UID": uid, "pairID": pid}
    row.update(extra)
    return row


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def raises_at(exc_info, file: Path | str, line: int | None, field: str | None) -> None:
    e = exc_info.value
    assert e.file == str(file)
    assert e.line == line, str(e)
    assert e.field == field, str(e)
    assert "\n" not in str(e)


# -- BLiMP release folder ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blimp() -> Suite:
    return load_blimp_folder(shared_or_skip(BLIMP))


def test_blimp_folder_counts_and_quirks(blimp):
    assert blimp.tasks == list(BLIMP_UIDS) == sorted(p.stem for p in BLIMP.glob("*.jsonl"))
    assert len(BLIMP_UIDS) == 67
    assert blimp.counts() == {t: 1000 for t in BLIMP_UIDS}
    assert len(blimp) == 67_000
    assert len(blimp.groups) == 13
    assert {(p.task, p.pair_id) for p in blimp if p.identical} == IDENTICAL
    assert blimp.n_identical() == 7
    # the `field` quirk: principle_A_case_2 spells it "syntax/semantics"; normalised in meta
    fields = blimp.meta["blimp_fields"]
    assert fields["principle_A_case_2"] == "syntax_semantics"
    assert set(fields.values()) == {"syntax", "morphology", "semantics", "syntax_semantics"}
    assert Counter(fields.values())["syntax_semantics"] == 14
    assert blimp.group_of("anaphor_gender_agreement") == "anaphor_agreement"
    first = blimp.pairs[0]
    assert first == Pair("adjunct_island", "island_effects", "0", first.good, first.bad)
    # sentences as written, no stripping or re-spacing
    line0 = json.loads((BLIMP / "adjunct_island.jsonl").read_text().split("\n", 1)[0])
    assert (first.good, first.bad) == (line0["sentence_good"], line0["sentence_bad"])


def test_load_suite_dispatches_to_folder(blimp):
    assert load_suite(BLIMP).data_hash == blimp.data_hash


def _folder(tmp_path, files: dict[str, list]) -> Path:
    root = tmp_path / "blimp"
    for name, rows in files.items():
        write_jsonl(root / name, rows)
    return root


@pytest.mark.parametrize("rows, line, field", [
    ([blimp_row(), '{"sentence_good": "x", '], 2, None),                                    # malformed JSON
    ([blimp_row(), blimp_row(pid="1", UID=None)], 2, "UID"),                 # wrong type
    ([blimp_row(), {k: v for k, v in blimp_row(pid="1").items() if k != "sentence_bad"}], 2, "sentence_bad"),
    ([blimp_row(), blimp_row(pid="1", good="   ")], 2, "sentence_good"),                   # whitespace only
    ([blimp_row(), blimp_row(pid="1", bad="")], 2, "sentence_bad"),                         # empty
    ([blimp_row(), blimp_row(pid="1", good=["a"])], 2, "sentence_good"),                    # a list
    ([blimp_row(), blimp_row(pid=True)], 2, "pairID"),                                      # bool id
    ([blimp_row(), blimp_row(pid="0")], 2, "pairID"),                                       # duplicate id
    ([blimp_row(), blimp_row(pid="1", uid="other")], 2, "UID"),                             # two paradigms
    ([blimp_row(), blimp_row(pid="1", term="binding")], 2, "linguistics_term"),            # two groups
    ([blimp_row(), "[1, 2]"], 2, None),                                                     # not an object
    ([blimp_row(), "", blimp_row(pid="1", good=None)], 3, "sentence_good"),                 # blank line counted
])
def test_blimp_folder_bad_lines(tmp_path, rows, line, field):
    root = _folder(tmp_path, {"anaphor_gender_agreement.jsonl": rows})
    with pytest.raises(InputError) as ei:
        load_blimp_folder(root)
    raises_at(ei, root / "anaphor_gender_agreement.jsonl", line, field)


def test_blimp_folder_messages_are_specific(tmp_path):
    root = _folder(tmp_path, {"a.jsonl": [blimp_row(), blimp_row(pid="0")]})
    with pytest.raises(InputError, match=r"line 2, field 'pairID': duplicate pairID '0' \(first on line 1\)"):
        load_blimp_folder(root)
    root = _folder(tmp_path / "x", {"a.jsonl": [blimp_row(), '{"UID": 1,}']})
    with pytest.raises(InputError, match=r"line 2: malformed JSON at column \d+"):
        load_blimp_folder(root)


def test_blimp_folder_uid_not_file_name_and_other_cases(tmp_path):
    # a renamed file loads under its UID; integer pairIDs become strings; blank lines and BOM are fine
    root = tmp_path / "b"
    write_jsonl(root / "renamed.jsonl", [blimp_row(pid=0), blimp_row(pid=1, good="Amy saw him.", bad="Amy saw him.")])
    p = root / "z.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (json.dumps(blimp_row(uid="passive_1", term="s-selection")) + "\n\n").encode())
    s = load_blimp_folder(root)
    assert s.tasks == ["anaphor_gender_agreement", "passive_1"]
    assert [p.pair_id for p in s.pairs_of("anaphor_gender_agreement")] == ["0", "1"]
    assert s.n_identical() == 1
    assert s.meta["blimp_fields"] == {"anaphor_gender_agreement": "morphology", "passive_1": "morphology"}
    # the same UID in two files: refused, naming the second file
    write_jsonl(root / "zz.jsonl", [blimp_row(pid="5")])
    with pytest.raises(InputError, match="also the paradigm of renamed.jsonl") as ei:
        load_blimp_folder(root)
    raises_at(ei, root / "zz.jsonl", 1, "UID")


def test_blimp_folder_empty_and_bad_bytes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .jsonl files"):
        load_blimp_folder(tmp_path / "empty")
    root = tmp_path / "blank"
    write_jsonl(root / "a.jsonl", ["", "  "])
    with pytest.raises(InputError, match="no pairs"):
        load_blimp_folder(root)
    root = tmp_path / "bytes"
    root.mkdir()
    (root / "a.jsonl").write_bytes((json.dumps(blimp_row()) + "\n").encode() + b'{"x": "\xff"}\n')
    with pytest.raises(InputError, match="not UTF-8") as ei:
        load_blimp_folder(root)
    raises_at(ei, root / "a.jsonl", 2, None)


# -- BLiMP from the hub (offline here) -----------------------------------------------------------
def test_blimp_hub_offline_error_is_one_clear_line(tmp_path):
    pytest.importorskip("datasets")
    with pytest.raises(TaskspaceError) as ei:
        load_blimp_hub(tasks=["anaphor_gender_agreement"], cache_dir=tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "nyu-mll/blimp" in msg and "anaphor_gender_agreement" in msg
    assert "local folder" in msg


def test_blimp_hub_without_datasets(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)   # `import datasets` now raises ImportError
    with pytest.raises(TaskspaceError, match=r"needs the `datasets` package.*local folder"):
        load_blimp_hub(tasks=["passive_1"])


def test_blimp_hub_unknown_task():
    with pytest.raises(InputError, match="not BLiMP paradigm"):
        load_blimp_hub(tasks=["passive_3"])


def test_blimp_hub_conversion_equals_folder(tmp_path, monkeypatch, blimp):
    """The hub path end to end, with `load_dataset` served from the local release files: same pairs,
    same order, same hash as the folder loader."""
    datasets = pytest.importorskip("datasets")
    real = datasets.load_dataset
    calls = []

    def fake(name, config, split, cache_dir=None):
        assert (name, split) == ("nyu-mll/blimp", "train")
        calls.append(config)
        return real("json", data_files=str(BLIMP / f"{config}.jsonl"), split="train", cache_dir=str(tmp_path))

    monkeypatch.setattr(datasets, "load_dataset", fake)
    tasks = ["passive_1", "principle_A_case_2", "anaphor_gender_agreement"]
    hub = load_blimp_hub(tasks=tasks)
    assert calls == tasks
    assert hub.tasks == tasks
    assert hub.pairs == blimp.select(tasks).pairs
    assert hub.n_identical() == 7
    assert hub.meta["blimp_fields"]["principle_A_case_2"] == "syntax_semantics"
    assert hub.source == "hf://datasets/nyu-mll/blimp"


def test_pairs_from_rows_on_a_dataset_validates(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([blimp_row(pid="0"), blimp_row(pid="1", bad=" ")])
    with pytest.raises(InputError) as ei:
        pairs_from_rows(enumerate(ds, start=1), file="hf://datasets/nyu-mll/blimp/x")
    raises_at(ei, "hf://datasets/nyu-mll/blimp/x", 2, "sentence_bad")
    ps, fld = pairs_from_rows(enumerate(ds.select([0]), start=1), file="x")
    assert ps == [Pair("anaphor_gender_agreement", "anaphor_agreement", "0", "Amy saw herself.",
                       "Amy saw himself.")]
    assert fld == "morphology"


# -- JSONL / CSV / TSV ---------------------------------------------------------------------------
CSV_OK = (
    "good,bad,task,group\n"
    "The cat sleeps.,The cat sleep.,sv_agr,agreement\n"
    '"He said ""hi"", then left.","He said ""hi"", then leave.",tense,verbs\n'
    '"A line\nbreak, inside.",A line break inside,tense,verbs\n'
    "\n"
    "The dogs sleep.,The dogs sleeps.,sv_agr,agreement\n"
)


def test_csv_defaults_line_ids_and_quoting(tmp_path):
    p = tmp_path / "pairs.csv"
    p.write_text(CSV_OK, encoding="utf-8")
    s = load_pairs_file(p)
    assert s.tasks == ["sv_agr", "tense"]
    assert s.task_groups() == {"sv_agr": "agreement", "tense": "verbs"}
    # pair ids default to the line where the pair starts (header = line 1; a quoted record spans 2 lines)
    assert [(q.task, q.pair_id) for q in s] == [("sv_agr", "2"), ("tense", "3"), ("tense", "4"), ("sv_agr", "7")]
    assert s.pairs[1].good == 'He said "hi", then left.'
    assert s.pairs[2].good == "A line\nbreak, inside."
    assert s.meta["pair_ids_from"] == "line" and s.meta["groups_from"] == "group"
    assert load_suite(p).data_hash == s.data_hash


def test_tsv_aliases_and_no_group(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("sentence_good\tsentence_bad\tUID\tpairID\n"
                 "The cat sleeps.\tThe cat sleep.\tsv\t7\n"
                 "Cats, dogs sleep.\tCats, dogs sleeps.\tsv\t8\n"
                 "She saw herself.\tShe saw himself.\tanaphor\t7\n", encoding="utf-8")
    s = load_pairs_file(p)
    # no group column: every task is its own group
    assert s.task_groups() == {"sv": "sv", "anaphor": "anaphor"}
    assert [q.pair_id for q in s] == ["7", "8", "7"]
    assert s.pairs[1].good == "Cats, dogs sleep."
    assert s.meta["columns"] == {"good": "sentence_good", "bad": "sentence_bad", "task": "UID",
                                 "pair_id": "pairID"}


def test_column_mapping_overrides_defaults(tmp_path):
    p = tmp_path / "pairs.jsonl"
    write_jsonl(p, [{"s1": "A b.", "s2": "B a.", "good": "IGNORED", "bad": "IGNORED", "kind": "order",
                     "family": "syntax", "id": 11},
                    {"s1": "C d.", "s2": "D c.", "good": "x", "bad": "y", "kind": "order", "family": "syntax",
                     "id": 12}])
    cols = parse_columns(" good = s1 , bad=s2,task=kind,group=family,pair_id=id")
    s = load_pairs_file(p, columns=cols)
    assert s.pairs == [Pair("order", "syntax", "11", "A b.", "B a."), Pair("order", "syntax", "12", "C d.", "D c.")]
    # without the mapping the same file fails on its missing task column, at the first record
    with pytest.raises(InputError, match="no column for task") as ei:
        load_pairs_file(p)
    raises_at(ei, p, 1, "task")


def test_parse_columns_errors():
    assert parse_columns(None) == {} and parse_columns("") == {}
    assert parse_columns("good=a,bad=b") == {"good": "a", "bad": "b"}
    for spec, msg in [("good", "malformed column mapping 'good'"), ("sentence=a", "unknown field 'sentence'"),
                      ("good=", "no column name given for field 'good'"), ("good=a,good=b", "mapped twice"),
                      ("good=a,bad=a", "both mapped to column 'a'")]:
        with pytest.raises(InputError, match=msg) as ei:
            parse_columns(spec)
        assert ei.value.field == "columns"


JSONL_BAD = [
    # (lines, error line, field, message)
    (['{"good": "a b", "bad": "b a", "task": "t"}', '{"good": "a b", "bad": "b a", "task": "t"'], 2, None,
     "malformed JSON"),
    (['{"good": "a b", "bad": "b a", "task": "t"}', '{"good": "a b", "task": "t"}'], 2, "bad", "missing field"),
    (['{"good": "a b", "bad": "b a", "task": "t"}', '', '{"good": "", "bad": "b a", "task": "t"}'], 3, "good",
     "empty sentence"),
    (['{"good": 3, "bad": "b a", "task": "t"}'], 1, "good", "expected a string sentence, got a number"),
    (['{"good": "a", "bad": "b", "task": 1.5}'], 1, "task", "expected a string or an integer"),
    (['{"good": "a", "bad": "b", "task": "t", "group": null}'], 1, "group", "got null"),
    (['{"good": "a", "bad": "b", "task": "t", "group": "g"}', '{"good": "c", "bad": "d", "task": "t", "group": "h"}'],
     2, "group", "task 't' is in group 'g' on line 1"),
    (['{"good": "a", "bad": "b", "task": "t", "pair_id": 1}', '{"good": "c", "bad": "d", "task": "t", "pair_id": "1"}'],
     2, "pair_id", "duplicate pair id '1'"),
    (['"just a string"'], 1, None, "expected a JSON object"),
]


@pytest.mark.parametrize("lines, line, field, message", JSONL_BAD)
def test_jsonl_bad_input(tmp_path, lines, line, field, message):
    p = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(InputError, match=message) as ei:
        load_pairs_file(p)
    raises_at(ei, p, line, field)


CSV_BAD = [
    ("good,bad,task\na,b,t\nc,d\n", 3, "task", "the row has 2 cells, the header 3"),
    ("good,bad,task\na,b,t\nc,d,t,extra\n", 3, "column 4", "the row has 4 cells"),
    ('good,bad,task\na,b,t\n"He said "hi".",d,t\n', 3, None, "malformed CSV"),
    ("good,bad,task\na,b,t\n\n\n c , ,t\n", 5, "bad", "empty sentence"),
    ("good,bad\na,b\n", 1, "task", "no column for task"),
    ("good,bad,task,good\na,b,t,c\n", 1, "good", "duplicate column name"),
    ("good,bad,task,group\na,b,t,g\nc,d,u,g\ne,f,t,h\n", 4, "group", "task 't' is in group 'g' on line 2"),
    ("good,bad,task\n", None, None, "only a header"),
    ("", None, None, "empty file"),
]


@pytest.mark.parametrize("text, line, field, message", CSV_BAD)
def test_csv_bad_input(tmp_path, text, line, field, message):
    p = tmp_path / "bad.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as ei:
        load_pairs_file(p)
    raises_at(ei, p, line, field)


def test_line_numbers_stay_exact_after_a_multiline_record(tmp_path):
    p = tmp_path / "ml.csv"
    p.write_text('good,bad,task\n"one\ntwo\nthree",b,t\nc,,t\n', encoding="utf-8")
    with pytest.raises(InputError) as ei:
        load_pairs_file(p)
    raises_at(ei, p, 5, "bad")


def test_mapping_to_a_missing_column(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text("s1\ts2\tparadigm\na\tb\tt\n", encoding="utf-8")
    msg = r"column 'sent_good' \(mapped to good\) not found; the file has: s1, s2, paradigm"
    with pytest.raises(InputError, match=msg) as ei:
        load_pairs_file(p, columns={"good": "sent_good", "bad": "s2", "task": "paradigm"})
    raises_at(ei, p, 1, "sent_good")
    s = load_pairs_file(p, columns={"good": "s1", "bad": "s2", "task": "paradigm"})
    assert s.pairs == [Pair("t", "t", "2", "a", "b")]


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported file type '.txt'"):
        load_pairs_file(tmp_path / "a.txt")
    with pytest.raises(InputError, match="no such file"):
        load_pairs_file(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="no such suite") as ei:
        load_suite(tmp_path / "nope.csv")
    assert ei.value.file == str(tmp_path / "nope.csv")


# -- write_suite round trips ---------------------------------------------------------------------
def _tricky_suite() -> Suite:
    pairs = [
        Pair("agr", "agreement", "1", "The cat sleeps.", "The cat sleep."),
        Pair("agr", "agreement", "2", 'She said, "fine".', 'She say, "fine".'),
        Pair("refl", "binding", "a-1", "Zoë saw herself\tonce.", "Zoë saw himself\tonce."),
        Pair("refl", "binding", "a-2", "Same.", "Same."),                         # identical: kept
        Pair("agr", "agreement", "3", " leading space kept", " leading spaces kept"),
        Pair("neg", "npi", "0", "Nobody ever\u2028left.", "Somebody ever\u2028left."),
    ]
    return Suite(pairs, name="tricky", source="mem")


def test_write_suite_file_round_trip(tmp_path):
    s = _tricky_suite()
    p = write_suite(s, tmp_path / "out" / "suite.jsonl")
    back = load_pairs_file(p)
    assert back.pairs == s.pairs and back.data_hash == s.data_hash
    assert back.n_identical() == 1
    first = json.loads(p.read_text(encoding="utf-8").split("\n")[0])
    assert first == {"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleep.", "UID": "agr",
                     "linguistics_term": "agreement", "pairID": "1"}
    assert [f.name for f in p.parent.iterdir()] == ["suite.jsonl"]    # no temporary file left


def test_write_suite_folder_round_trip(tmp_path):
    s = _tricky_suite()
    out = write_suite(s, tmp_path / "folder")
    assert sorted(f.name for f in out.iterdir()) == ["agr.jsonl", "neg.jsonl", "refl.jsonl"]
    back = load_blimp_folder(out)
    # the folder layout orders tasks by file name; each task's pairs stay in order
    assert back.tasks == sorted(s.tasks)
    assert back.by_task() == {t: s.pairs_of(t) for t in sorted(s.tasks)}
    with pytest.raises(InputError, match="not an empty folder"):
        write_suite(s, out)


def test_write_suite_blimp_round_trip_keeps_fields(tmp_path, blimp):
    sub = blimp.select(["principle_A_case_2", "passive_1"], limit_per_task=400)
    out = write_suite(sub, tmp_path / "blimp2")
    back = load_blimp_folder(out)
    assert back.pairs == blimp.select(["passive_1", "principle_A_case_2"], limit_per_task=400).pairs
    assert back.meta["blimp_fields"] == {"passive_1": "syntax", "principle_A_case_2": "syntax_semantics"}
    assert back.n_identical() == 4      # passive_1/324 and the three of principle_A_case_2 below 400


def test_write_suite_refuses_bad_targets(tmp_path):
    s = _tricky_suite()
    with pytest.raises(InputError, match="writes JSONL"):
        write_suite(s, tmp_path / "x.csv")
    bad = Suite([Pair("a/b", "g", "1", "x", "y")])
    with pytest.raises(InputError, match="cannot be a file name"):
        write_suite(bad, tmp_path / "f")
    assert not (tmp_path / "f").exists()
    case = Suite([Pair("Ab", "g", "1", "x", "y"), Pair("aB", "g", "1", "x", "y")])
    with pytest.raises(InputError, match="differ only in case"):
        write_suite(case, tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


# -- splits --------------------------------------------------------------------------------------
def _synthetic(tasks: dict[str, int]) -> Suite:
    return Suite([Pair(t, "g" + t[0], str(i), f"{t} good {i}", f"{t} bad {i}")
                  for t, n in tasks.items() for i in range(n)], name="synthetic")


def _ids(suite: Suite, task: str) -> list[str]:
    return [p.pair_id for p in suite.pairs_of(task)]


def test_splits_disjoint_complete_and_sized():
    s = _synthetic({"a1": 100, "a2": 37, "b1": 5})
    parts = split_suite(s, SplitSizes(train=0.5, dev=0.1, test=0.4), seed=3)
    for t, n in s.counts().items():
        tr, dv, te = (set(_ids(parts[k], t)) for k in ("train", "dev", "test"))
        assert not (tr & dv) and not (tr & te) and not (dv & te)
        assert len(tr) == round(0.5 * n) and len(dv) == round(0.1 * n)
        assert tr | dv | te <= set(_ids(s, t))
        assert len(te) == min(round(0.4 * n), n - len(tr) - len(dv))
    assert [len(_ids(parts[k], "a1")) for k in ("train", "dev", "test")] == [50, 10, 40]
    assert [len(_ids(parts[k], "a2")) for k in ("train", "dev", "test")] == [18, 4, 15]
    assert set().union(*(_ids(parts[k], "a2") for k in ("train", "dev", "test"))) == set(_ids(s, "a2"))
    # counts: a task too small gets what is left, test comes out short
    parts = split_suite(s, SplitSizes(train=3, dev=1, test=10), seed=0)
    assert [len(_ids(parts[k], "b1")) for k in ("train", "dev", "test")] == [3, 1, 1]
    assert [len(_ids(parts[k], "a1")) for k in ("train", "dev", "test")] == [3, 1, 10]
    assert parts["train"].tasks == s.tasks
    assert parts["train"].meta["split_seed"] == 0


def test_splits_seeded():
    s = _synthetic({"a1": 60, "b1": 60})
    one = split_suite(s, seed=7)
    again = split_suite(s, seed=7)
    other = split_suite(s, seed=8)
    assert one["train"].pairs == again["train"].pairs and one["test"].pairs == again["test"].pairs
    assert set(_ids(one["train"], "a1")) != set(_ids(other["train"], "a1"))
    # a real shuffle: the train part is not simply the first pairs of the task
    assert set(_ids(one["train"], "a1")) != {str(i) for i in range(30)}


def test_a_tasks_split_ignores_the_other_tasks():
    full = _synthetic({"a1": 80, "a2": 50, "b1": 30})
    fewer = full.select(["a2"])
    more = Suite(full.pairs + _synthetic({"c9": 40}).pairs, name="more")
    reordered = full.select(["b1", "a2", "a1"])
    ref = split_suite(full, seed=1)
    for other in (fewer, more, reordered):
        parts = split_suite(other, seed=1)
        for k in ("train", "dev", "test"):
            assert parts[k].pairs_of("a2") == ref[k].pairs_of("a2")


# -- bad input found by fuzzing (issue 11, item 5): every class gets one clean line --------------
GOOD = '{"good": "a b.", "bad": "b a.", "task": "t"}'


@pytest.mark.parametrize("raw, message", [
    ('{"good": "a", "bad": "b", "task": "t", "pair_id": ' + "9" * 5000 + "}", "malformed JSON: Exceeds the limit"),
    ("[" * 100_000, "malformed JSON"),
    ('{"good": "a", "bad": "b", "task": ' + "[" * 100_000 + "}", "malformed JSON"),
])
def test_jsonl_huge_integer_and_deep_nesting_are_input_errors(tmp_path, raw, message):
    p = write_jsonl(tmp_path / "x.jsonl", [GOOD, raw])
    with pytest.raises(InputError, match=message) as ei:
        load_pairs_file(p)
    raises_at(ei, p, 2, None)
    # the BLiMP loader reads lines with the same reader
    (tmp_path / "blimp").mkdir()
    q = write_jsonl(tmp_path / "blimp" / "x.jsonl", [raw])
    with pytest.raises(InputError, match=message) as ei:
        load_blimp_folder(tmp_path / "blimp")
    raises_at(ei, q, 1, None)


INVISIBLE = [("x\ud800y", "lone surrogate"), ("\u200b", "no visible character"), ("\ufeff", "no visible character"),
             ("\x01\x02\x1b", "control character"), ("\t\n\r", "empty sentence"), ("\x00", "control character"),
             ("the cat\x00 sleeps.", "control character"), ("\u200b \u00a0\u2028", "no visible character")]


@pytest.mark.parametrize("sentence, message", INVISIBLE)
def test_sentences_without_visible_text_are_refused_at_load(tmp_path, sentence, message):
    # json.dumps writes "\ud800" as an escape, so the file itself is valid UTF-8, as in the fuzzer
    p = write_jsonl(tmp_path / "x.jsonl", [GOOD, {"good": "a b.", "bad": sentence, "task": "t"}])
    with pytest.raises(InputError, match=message) as ei:
        load_pairs_file(p)
    raises_at(ei, p, 2, "bad")
    blimp_row = {"sentence_good": sentence, "sentence_bad": "b a.", "UID": "u", "linguistics_term": "g",
                 "pairID": 0}
    q = write_jsonl(tmp_path / "blimp" / "u.jsonl", [blimp_row])
    with pytest.raises(InputError, match=message) as ei:
        load_blimp_folder(tmp_path / "blimp")
    raises_at(ei, q, 1, "sentence_good")
    if "\x00" not in sentence and "\ud800" not in sentence and "\n" not in sentence:  # writable as CSV
        c = tmp_path / "x.csv"
        c.write_text(f"good,bad,task\na b.,{sentence},t\n", encoding="utf-8")
        with pytest.raises(InputError, match=message) as ei:
            load_pairs_file(c)
        raises_at(ei, c, 2, "bad")


BAD_IDS = [("\ud800", "lone surrogate"), ("t\udfffx", "lone surrogate"), ("a\x07b", "control character"),
           ("\x1b[31mred", "control character"), ("x\x7f", "control character"), ("\u200b", "no visible character")]


@pytest.mark.parametrize("value, message", BAD_IDS)
@pytest.mark.parametrize("field", ["task", "group", "pair_id"])
def test_names_and_ids_are_checked_like_sentences_jsonl(tmp_path, field, value, message):
    """A task name, group or pair id with a lone surrogate, a control character or nothing visible is
    refused at load, one line naming the file, the line and the field (JSONL, and the BLiMP loader)."""
    first = {"good": "c d.", "bad": "d c.", "task": "t", "group": "g", "pair_id": "1"}
    p = write_jsonl(tmp_path / "x.jsonl", [first, {**first, "pair_id": "7", field: value}])
    with pytest.raises(InputError, match=message) as ei:
        load_pairs_file(p)
    raises_at(ei, p, 2, field)
    blimp_key = {"task": "UID", "group": "linguistics_term", "pair_id": "pairID"}[field]
    blimp_row = {"sentence_good": "a b.", "sentence_bad": "b a.", "UID": "u", "linguistics_term": "g",
                 "pairID": "0", blimp_key: value}
    q = write_jsonl(tmp_path / "blimp" / "u.jsonl", [blimp_row])
    with pytest.raises(InputError, match=message) as ei:
        load_blimp_folder(tmp_path / "blimp")
    raises_at(ei, q, 1, blimp_key)


@pytest.mark.parametrize("value, message", [v for v in BAD_IDS if "surrogate" not in v[1]])
@pytest.mark.parametrize("field", ["task", "group", "pair_id"])
@pytest.mark.parametrize("suffix, delim", [(".csv", ","), (".tsv", "\t")])
def test_names_and_ids_are_checked_like_sentences_csv(tmp_path, field, value, message, suffix, delim):
    # a lone surrogate cannot be written as UTF-8, so a CSV/TSV file cannot hold one (a CESU-8 byte
    # sequence is refused as "not UTF-8 text"); control characters and invisible names can
    cols = {"good": "a b.", "bad": "b a.", "task": "t", "group": "g", "pair_id": "7", field: value}
    p = tmp_path / f"x{suffix}"
    p.write_text(delim.join(cols) + "\n" + delim.join(["c d.", "d c.", "t", "g", "1"]) + "\n"
                 + delim.join(cols.values()) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as ei:
        load_pairs_file(p)
    raises_at(ei, p, 3, field)
    # through the command line: the same single line
    from typer.testing import CliRunner

    from taskspace.cli import app

    r = CliRunner().invoke(app, ["suite", "info", str(p)])
    assert isinstance(r.exception, InputError) and str(r.exception) == str(ei.value)


def test_a_lone_surrogate_in_a_csv_is_refused_as_not_utf8(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"good,bad,task\na b.,b a.,t\xed\xa0\x80\n")       # U+D800 written as CESU-8 bytes
    with pytest.raises(InputError, match="not UTF-8 text") as ei:
        load_pairs_file(p)
    raises_at(ei, p, 2, None)


def test_names_in_any_script_load(tmp_path):
    rows = [{"good": "a b.", "bad": "b a.", "task": t, "group": "Grüppe ✓", "pair_id": f"{i}\u00a0é"}
            for i, t in enumerate(["日本語", "naïve task", "a\u200bb", "😀"])]
    suite = load_pairs_file(write_jsonl(tmp_path / "x.jsonl", rows))
    assert suite.tasks == ["日本語", "naïve task", "a\u200bb", "😀"]


def test_visible_text_in_any_script_loads(tmp_path):
    rows = [{"good": s, "bad": "b a.", "task": "t", "pair_id": i}
            for i, s in enumerate(["Ö", "日本語です。", "a\u200bb", "\ufeffThe cat.", "x\u00a0y", "😀"])]
    assert [q.good for q in load_pairs_file(write_jsonl(tmp_path / "x.jsonl", rows))] == [r["good"] for r in rows]


@pytest.mark.parametrize("suffix, delim", [(".csv", ","), (".tsv", "\t")])
def test_a_row_of_a_million_delimiters_is_an_error_not_skipped(tmp_path, suffix, delim):
    p = tmp_path / f"x{suffix}"
    p.write_text(f"good{delim}bad{delim}task\na b.{delim}b a.{delim}t\n" + delim * (1 << 20) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="the row has 1048577 cells, the header 3 columns") as ei:
        load_pairs_file(p)
    raises_at(ei, p, 3, "column 4")
    # a spreadsheet's empty row (as many empty cells as columns) and a blank line are still skipped
    p.write_text(f"good{delim}bad{delim}task\n{delim}{delim}\n\na b.{delim}b a.{delim}t\n", encoding="utf-8")
    assert [q.pair_id for q in load_pairs_file(p)] == ["4"]


def test_unclosed_csv_quote_is_reported_where_it_opens(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text('good,bad,task\n"a b.,b a.,t\nc d.,d c.,t\ne,f,t\ng,h,t\ni,j,t\nk,l,t\n', encoding="utf-8")
    with pytest.raises(InputError, match="a quoted cell is never closed") as ei:
        load_pairs_file(p)
    raises_at(ei, p, 2, None)


def test_tsv_sentence_may_start_with_a_quote(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text('good\tbad\ttask\n"Hi," she said.\t"Hi," she say.\tt\nHe said "no".\tHe say "no".\tt\n',
                 encoding="utf-8")
    s = load_pairs_file(p)
    assert [(q.good, q.bad) for q in s] == [('"Hi," she said.', '"Hi," she say.'), ('He said "no".', 'He say "no".')]


@pytest.mark.parametrize("suffix, delim", [(".csv", ","), (".tsv", "\t")])
def test_a_200_kb_cell_loads_and_a_cell_over_the_cap_is_an_error(tmp_path, suffix, delim):
    from taskspace.suites.files import MAX_CELL_CHARS

    long = "word " * 40_000 + "end."
    p = tmp_path / f"x{suffix}"
    p.write_text(f"good{delim}bad{delim}task\n{long}{delim}b a.{delim}t\n", encoding="utf-8")
    assert load_pairs_file(p).pairs[0].good == long
    p.write_text(f"good{delim}bad{delim}task\n{'w' * (MAX_CELL_CHARS + 1)}{delim}b a.{delim}t\n", encoding="utf-8")
    with pytest.raises(InputError, match="field larger than field limit") as ei:
        load_pairs_file(p)
    assert ei.value.line == 2


def test_column_mapping_errors_name_the_file(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("s1,s2,paradigm\na,b,t\n", encoding="utf-8")
    for spec, msg in [("good:s1", "malformed column mapping"), ("good=s1,sentence=s2", "unknown field 'sentence'")]:
        with pytest.raises(InputError, match=msg) as ei:
            load_pairs_file(p, columns=parse_columns(spec, file=p))
        raises_at(ei, p, None, "columns")
    with pytest.raises(InputError, match="both mapped") as ei:
        load_pairs_file(p, columns={"good": "s1", "bad": "s1"})
    raises_at(ei, p, None, "columns")


@pytest.mark.parametrize("spec", ["toy:abc", "toy:", "toy:1.5", "toy:-1", "toy: 3"])
def test_bad_toy_seeds_are_input_errors(spec):
    with pytest.raises(InputError, match="seed must be a non-negative integer") as ei:
        load_suite(spec)
    assert ei.value.file == spec
    assert load_suite("toy:3").data_hash == load_suite("toy:3").data_hash


def test_a_home_folder_that_does_not_exist_is_a_missing_file():
    with pytest.raises(InputError, match="no such suite") as ei:
        load_suite("~nosuchuser_taskspace/x.jsonl")
    assert ei.value.file == "~nosuchuser_taskspace/x.jsonl"


def test_a_fifo_in_a_blimp_folder_is_refused_not_read(tmp_path):
    import os
    import threading

    folder = tmp_path / "blimp"
    write_jsonl(folder / "a.jsonl", [{"sentence_good": "a b.", "sentence_bad": "b a.", "UID": "a",
                                      "linguistics_term": "g", "pairID": 0}])
    os.mkfifo(folder / "b.jsonl")
    out: list = []
    # in a thread, so a regression shows as a failed assertion, not a test run that never ends
    t = threading.Thread(target=lambda: out.append(_catch(load_blimp_folder, folder)), daemon=True)
    t.start()
    t.join(timeout=30)
    assert out, "load_blimp_folder blocked on a FIFO"
    e = out[0]
    assert isinstance(e, InputError) and "not a regular file" in str(e) and e.file == str(folder / "b.jsonl")


def _catch(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        return e
    return None
