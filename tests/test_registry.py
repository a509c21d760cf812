"""The probe registry: every registered probe runs from the Python API and the CLI with provenance, and a
probe registered in a test module flows through `run`, `compare` and `report` with no other edit."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import taskspace
from taskspace.probes import registry
from taskspace.probes.registry import ProbeSpec, SpaceSpec
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace
from test_runs import SUITE_ROWS, write_plan, write_suite


def run(loaded, suite, settings, ctx, kinds=("sentence-length",)):
    """A throwaway probe: S[a, b] = −|mean good-sentence length of a − that of b| (in tokens)."""
    from taskspace.probes.result import ProbeResult
    from taskspace.provenance import versions

    train = settings.splits(suite)["train"]
    tasks = train.tasks
    lens = np.array([np.mean([len(loaded.tokenizer(p.good)["input_ids"]) for p in train.pairs_of(t)])
                     for t in tasks])
    prov = {"probe": "sentence-length", "model": loaded.describe(), "revision": loaded.revision,
            "settings": settings.to_dict(), "seed": settings.seed, "versions": versions()}
    space = TaskSpace(-np.abs(lens[:, None] - lens[None, :]), tasks, [suite.group_of(t) for t in tasks],
                      "sentence_length", prov)
    return ProbeResult(tuple(kinds), spaces={"sentence_length": space}, provenance=prov)


@pytest.fixture
def length_probe():
    spec = registry.register(ProbeSpec(
        name="sentence-length", help="Sentence-length similarity (a test probe).",
        reads=("train_pairs", "dev_pairs", "eval_pairs", "seed"),
        spaces=(SpaceSpec("sentence_length", "sentence-length similarity", main=True),),
        runner="test_registry:run", cost="no model pass"))
    yield spec
    registry.unregister("sentence-length")


def test_builtin_entries_are_consistent():
    fields = {f.name for f in dataclasses.fields(ProbeSettings)}
    names = registry.names()
    assert names[:4] == ["gradients", "overlap", "transfer", "baseline"]
    for spec in registry.probes():
        assert set(spec.reads) <= fields, spec.name
        assert spec.spaces and spec.help and spec.cost
        assert callable(spec.load_runner())
    spaces = [s.name for _, s in registry.all_spaces()]
    assert len(spaces) == len(set(spaces))          # one probe per space file
    assert registry.space_spec("gradients_by_module/block0.attn").name == "gradients"
    assert registry.space_spec("overlap").signed is False
    assert registry.generalization_spaces()[0] == "transfer_normalized"
    assert registry.reads_of_job("gradients") == registry.get("gradients").reads
    assert registry.get("transfer").summary_name("transfer_normalized") == "transfer"
    assert registry.get("transfer").summary_name("transfer_accuracy") == "transfer_accuracy"
    with pytest.raises(taskspace.InputError, match="did you mean 'overlap'"):
        registry.get("overlapp")
    with pytest.raises(ValueError, match="unknown settings"):
        registry.register(dataclasses.replace(registry.get("overlap"), name="x", reads=("nope",)))
    with pytest.raises(ValueError, match="already written"):
        registry.register(dataclasses.replace(registry.get("overlap"), name="x"))


def test_public_probe_call_returns_one_result_type(tiny_model_dir, tmp_path):
    lm = taskspace.load_model(str(tiny_model_dir), "step10")
    suite = taskspace.load_suite(str(write_suite(tmp_path / "s.jsonl")))
    settings = ProbeSettings(train_pairs=4, dev_pairs=2, eval_pairs=4)
    res = taskspace.probe(lm, suite, "gradients", settings, progress=False)
    assert isinstance(res, taskspace.ProbeResult) and "gradients" in res.spaces
    assert "gradients_by_module/embed" in res.spaces and "overlap" not in res.spaces
    assert set(res.summary()) == {"gradients"} and np.isfinite(res.summary()["gradients"]["difference"])
    paths = res.save(tmp_path / "out")
    assert (tmp_path / "out" / "spaces" / "gradients.csv") in paths
    assert (tmp_path / "out" / "stats" / "distributedness.csv").exists()
    back = TaskSpace.load(tmp_path / "out" / "spaces" / "gradients.csv")
    np.testing.assert_allclose(back.matrix, res.spaces["gradients"].matrix)
    assert back.provenance["revision"] == "step10" and back.provenance["settings"]["train_pairs"] == 4
    with pytest.raises(TypeError, match="unknown option"):
        taskspace.probe(lm, suite, "gradients", settings, heldout=["x"])


def test_a_probe_registered_in_a_test_flows_through_cli_run_compare_report(length_probe, tiny_model_dir,
                                                                            tmp_path):
    from typer.testing import CliRunner

    from taskspace.cli import app
    from taskspace.cli.probe import register_commands
    from taskspace.runs import load_plan, run_plan

    suite = write_suite(tmp_path / "s.jsonl")
    # the CLI: `taskspace probe sentence-length` exists once the commands are regenerated
    register_commands()
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["probe", "sentence-length", "--model", str(tiny_model_dir), "--revision",
                                 "step10", "--suite", str(suite), "--out", str(out), "--train-pairs", "3"])
    assert r.exit_code == 0, r.output
    sp = TaskSpace.load(out / "spaces" / "sentence_length.csv")
    assert sp.tasks == list(SUITE_ROWS) and sp.provenance["settings"]["train_pairs"] == 3
    assert json.loads((out / "stats" / "sentence-length_summary.json").read_text())["space"] == "sentence_length"

    # a run: plan validation, job keys, compare and report know it from its registry entry alone
    plan_path = write_plan(tmp_path / "plan.toml", tiny_model_dir, suite, probes=("sentence-length",),
                           control="none", extra="")
    plan_path.write_text(plan_path.read_text().replace("report = false", "report = true"))
    result = run_plan(load_plan(plan_path), tmp_path / "run")
    assert not result.failed
    cell = tmp_path / "run" / "tiny-lm" / "step10"
    assert (cell / "spaces" / "sentence_length.csv").exists()
    cmp = json.loads((tmp_path / "run" / "comparison.json").read_text())
    assert "sentence_length" in cmp["probes"]
    entry = next(c for c in cmp["cells"] if c["revision"] == "step10")
    assert "rho" in entry["spaces"]["sentence_length"]["signed"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "sentence-length similarity" in html


SMALL = {"train_pairs": "3", "dev_pairs": "2", "eval_pairs": "3", "steps": "2", "eval_every": "1", "bootstrap": "10"}


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_probe_runs_from_the_cli_with_provenance(name, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from taskspace.cli import app

    spec = registry.get(name)
    suite = write_suite(tmp_path / "s.jsonl", per_task=8)
    out = tmp_path / "out"
    args = ["probe", name, "--model", str(tiny_model_dir), "--revision", "step10", "--suite", str(suite),
            "--out", str(out), "--tasks", "sva_singular,sva_plural,anaphor_singular"]
    for field, value in SMALL.items():                # small settings, for the options this probe has
        if field in spec.reads:
            args += ["--" + field.replace("_", "-"), value]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    for s in spec.spaces:
        sp = TaskSpace.load(out / "spaces" / f"{s.name}.csv")
        assert sp.tasks == ["sva_singular", "sva_plural", "anaphor_singular"]
        prov = sp.provenance
        assert prov["model"]["revision"] == "step10" and prov["versions"]["torch"]
        assert prov["settings"]["seed"] == 0
        # the thread count moves a float's last bits (1 vs 2 threads: ~1e-6), so every space says it
        assert isinstance(prov["torch_threads"], int) and prov["torch_threads"] >= 1


def test_every_registered_probe_flows_through_a_run_compare_and_report(tiny_model_dir, tmp_path):
    from taskspace.runs import load_plan, run_plan

    suite = write_suite(tmp_path / "s.jsonl", per_task=8)
    plan_path = write_plan(tmp_path / "plan.toml", tiny_model_dir, suite, probes=tuple(registry.names()),
                           control="none", train_pairs=3,
                           extra="steps = 2\neval_every = 1\nbootstrap = 10\n[probe_revisions]\n"
                                 + "".join(f'"{n}" = ["last"]\n' for n in registry.names()))
    plan_path.write_text(plan_path.read_text().replace("report = false", "report = true")
                         .replace('spec = "', 'tasks = ["sva_singular", "anaphor_singular", "npi_never"]\nspec = "'))
    result = run_plan(load_plan(plan_path), tmp_path / "run")
    assert not result.failed, [o.error for o in result.failed]
    # transfer-estimate ran after transfer on the same checkpoint and reused its deltas
    import pandas as pd

    est = pd.read_csv(tmp_path / "run" / "tiny-lm" / "step10" / "stats" / "transfer_estimate_tasks.csv")
    assert set(est["source"]) == {"transfer run"}
    cmp = json.loads((tmp_path / "run" / "comparison.json").read_text())
    html = (tmp_path / "run" / "report.html").read_text()
    for spec in registry.probes():
        for s in spec.spaces:
            assert s.name in cmp["probes"], s.name
            if s.main:
                assert s.label in html, s.label
    # the latent probe's task cards are in the report, one per task, searchable
    assert 'id="cards"' in html and html.count('class="card" data-search=') == 3
    assert 'data-search="sva_singular' in html


def test_readme_and_docs_describe_every_registered_probe():
    from conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Probes: which one to use"):readme.index("## The demo")]
    docs = (REPO / "docs" / "probes.md").read_text(encoding="utf-8")
    for name in registry.names():
        assert f"| `{name}` |" in table, name
    for name in registry.names()[4:]:             # the newer probes each have a section in docs/probes.md
        assert f"## {name}" in docs, name


@pytest.mark.parametrize("name", [p.name for p in registry.probes() if p.per_task])
def test_probes_that_take_rows_compute_only_those_rows(name, tiny_model_dir, tmp_path):
    lm = taskspace.load_model(str(tiny_model_dir), "step10")
    suite = taskspace.load_suite(str(write_suite(tmp_path / "s.jsonl", per_task=8)))
    settings = ProbeSettings(tasks=("sva_singular", "anaphor_singular", "npi_never"), train_pairs=3, dev_pairs=2,
                             eval_pairs=3, steps=2, eval_every=1, bootstrap=10)
    res = taskspace.probe(lm, suite, name, settings, out=tmp_path / "out", rows=["anaphor_singular"],
                          progress=False)
    if registry.get(name).stages is not None:        # FTGD: the row's resumable files, no spaces yet
        status = tmp_path / "out" / ("baseline" if name == "baseline" else "ftgd")
        assert sorted(p.name for p in status.glob("*.json")) == ["anaphor_singular.json"]
        assert not res.spaces
    else:
        assert res.main_spaces()
        for space in res.main_spaces().values():
            rows = [t for t, r in zip(space.tasks, space.matrix) if np.isfinite(r).any()]
            assert rows == ["anaphor_singular"], (space.kind, rows)
    with pytest.raises((taskspace.TaskspaceError, ValueError)):
        taskspace.probe(lm, suite, name, settings, out=tmp_path / "out2", rows=["nope"], progress=False)


def test_registering_first_does_not_hide_the_builtin_probes():
    """In a fresh interpreter, a user's register() before any lookup still leaves the nine built-ins."""
    import subprocess
    import sys

    code = ("from taskspace.probes import registry as r\n"
            "from taskspace.probes.registry import ProbeSpec, SpaceSpec\n"
            "r.register(ProbeSpec(name='mine', help='h', reads=('seed',), spaces=(SpaceSpec('mine', 'm'),),"
            " runner='x:y'))\n"
            "print(','.join(r.names()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = out.stdout.strip().split(",")
    assert names[:4] == ["gradients", "overlap", "transfer", "baseline"] and names[-1] == "mine", names
