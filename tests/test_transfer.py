"""Transfer probe, entangled baseline, evaluation and the `taskspace probe transfer|baseline` CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import BLIMP, GUTENBERG_MODEL, make_tiny_model, make_word_tokenizer, run_cli, shared_or_skip
from taskspace.models.loading import LoadedModel
from taskspace.probes.finetune.evaluation import transfer_matrices
from taskspace.probes.settings import ProbeSettings
from taskspace.spaces import TaskSpace
from taskspace.suites.schema import Suite
from test_ftgd import agreement_pairs, reflexive_pairs

SPACES = ["transfer", "transfer_normalized", "transfer_accuracy", "transfer_accuracy_normalized"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_suite() -> Suite:
    pairs = (agreement_pairs("sva_sg", "agreement", 40, 1) + agreement_pairs("sva_pl", "agreement", 40, 2, plural=True)
             + reflexive_pairs("reflexive", "anaphor", 40, 3))
    return Suite(pairs, name="tiny", source="test")


@pytest.fixture()
def lm():
    tok = make_word_tokenizer()
    return LoadedModel(make_tiny_model("gpt2", vocab_size=len(tok), seed=0), tok, "tiny-gpt2", None,
                       "memory", "cpu", "float32")


SETTINGS = ProbeSettings(train_pairs=20, dev_pairs=0, eval_pairs=15, steps=8, lr=2e-2, objective="difference",
                         bootstrap=300,
                         batch_pairs=10)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_transfer_probe_writes_results_and_resumes(lm, tmp_path, monkeypatch):
    from taskspace.probes.finetune import ftgd as ftgd_mod
    from taskspace.probes.finetune.deltas import applied, load_delta
    from taskspace.probes.kinds import transfer as transfer_mod
    from taskspace.probes.kinds.transfer import transfer_probe
    from taskspace.scoring import Scorer

    suite = tiny_suite()
    before = _params(lm.model)
    spaces = transfer_probe(lm, suite, SETTINGS, tmp_path, progress=False)
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, before[n])
    assert sorted(spaces) == sorted(SPACES)
    tasks = suite.tasks
    T = spaces["transfer"]
    assert T.tasks == tasks and T.kind == "transfer"
    assert (np.diag(T.matrix) > 0).all(), T.matrix                   # FTGD helps the task trained on
    # the two agreement tasks reward opposite verb forms: negative transfer between them
    assert T.matrix[0, 1] < 0 and T.matrix[1, 0] < 0
    Tn = spaces["transfer_normalized"]
    np.testing.assert_allclose(Tn.matrix, T.matrix / np.abs(np.diag(T.matrix))[:, None])
    for sp in spaces.values():
        ok = np.isfinite(sp.matrix)
        assert ok.any()
        assert (sp.ci_low[ok] <= sp.matrix[ok] + 1e-12).all() and (sp.matrix[ok] <= sp.ci_high[ok] + 1e-12).all()
        assert (sp.ci_low[ok] < sp.ci_high[ok]).sum() > 0
        assert sp.provenance["settings"]["steps"] == 8 and sp.provenance["seed"] == 0
        assert {"model", "convention", "versions", "suite", "bootstrap"} <= set(sp.provenance)
        on_disk = TaskSpace.load(tmp_path / "spaces" / f"{sp.kind}.csv")
        np.testing.assert_array_equal(on_disk.matrix, sp.matrix)

    # every metric can be recomputed from the per-sample logs
    base = pd.read_parquet(tmp_path / "scores" / "base.parquet")
    log = pd.read_parquet(tmp_path / "scores" / "transfer.parquet")
    assert set(log["finetuned_on"]) == set(tasks) and len(log) == len(tasks) * len(base)
    for i, a in enumerate(tasks):
        ft = log[log["finetuned_on"] == a].reset_index(drop=True)
        for j, b in enumerate(tasks):
            sel = base["task"] == b
            assert ft["margin"][sel].mean() - base["margin"][sel].mean() == pytest.approx(T.matrix[i, j])
            assert (ft["correct"][sel].mean() - base["correct"][sel].mean()
                    == pytest.approx(spaces["transfer_accuracy"].matrix[i, j]))

    rec = json.loads((tmp_path / "ftgd" / "sva_sg.json").read_text())
    assert rec["status"] == "ok" and rec["steps_run"] == 8
    assert rec["self_transfer"] == pytest.approx(T.matrix[0, 0])
    assert len(rec["history"]["train_loss"]) == 8
    assert rec["mask_fraction"] == pytest.approx(0.05, abs=1e-3)
    assert np.isfinite(rec["lm_damage"]) and rec["seconds"] > 0
    # the delta file rebuilds the fine-tuned model: same scores as logged
    delta = load_delta(tmp_path / "deltas" / "sva_sg.safetensors")
    scorer = Scorer(lm.model, lm.tokenizer)
    test_pairs = SETTINGS.splits(suite)["test"].pairs
    with applied(lm.model, delta):
        again = scorer.score_pairs(test_pairs)
    np.testing.assert_array_equal(again["margin"].to_numpy(),
                                  log[log["finetuned_on"] == "sva_sg"]["margin"].to_numpy())

    # resume: a run killed before 'reflexive' finished redoes only that task, with identical spaces
    (tmp_path / "ftgd" / "reflexive.json").unlink()
    calls = []
    real = ftgd_mod.ftgd

    def counting(*args, **kwargs):
        calls.append(args[2][0].task)
        return real(*args, **kwargs)

    monkeypatch.setattr(transfer_mod, "ftgd", counting)       # where the transfer probe looks it up
    again_spaces = transfer_probe(lm, suite, SETTINGS, tmp_path, progress=False)
    assert calls == ["reflexive"]
    for name in SPACES:
        np.testing.assert_array_equal(again_spaces[name].matrix, spaces[name].matrix)
        np.testing.assert_array_equal(again_spaces[name].ci_low, spaces[name].ci_low)
    # worker processes change how fast, not what: same spaces, per-task files and log, bit for bit
    par = tmp_path / "workers"
    par_spaces = transfer_probe(lm, suite, ProbeSettings(**{**SETTINGS.to_dict(), "workers": 2}), par,
                                progress=False)
    assert calls == ["reflexive"]  # the tasks ran in the workers, not here
    for name in SPACES:
        np.testing.assert_array_equal(par_spaces[name].matrix, spaces[name].matrix)
        np.testing.assert_array_equal(par_spaces[name].ci_high, spaces[name].ci_high)
    pd.testing.assert_frame_equal(pd.read_parquet(par / "scores" / "transfer.parquet"), log)
    assert json.loads((par / "stats" / "transfer_timings.json").read_text())["workers"] == 2
    for a in tasks:  # (safetensors writes its metadata in a per-process hash order: compare contents)
        d_par, d_seq = load_delta(par / "deltas" / f"{a}.safetensors"), load_delta(tmp_path / "deltas" / f"{a}.safetensors")
        assert d_par.meta == d_seq.meta and d_par.shapes == d_seq.shapes and d_par.entries.keys() == d_seq.entries.keys()
        for name, (idx, val) in d_seq.entries.items():
            assert torch.equal(d_par.entries[name][0], idx) and torch.equal(d_par.entries[name][1], val)
    # other settings are other results: nothing is skipped
    calls.clear()
    transfer_probe(lm, suite, ProbeSettings(**{**SETTINGS.to_dict(), "tasks": None, "steps": 3}),
                   tmp_path, progress=False)
    assert calls == tasks


def test_failing_task_is_reported_and_the_run_goes_on(lm, tmp_path):
    """NaN injected into every training forward pass over a reflexive sentence: that task fails, the
    others complete, its row is NaN, and the model is untouched."""
    from taskspace.probes.kinds.transfer import summary, transfer_probe

    tok = lm.tokenizer
    poison = torch.tensor([tok.convert_tokens_to_ids(w) for w in ("herself", "himself", "themselves", "itself")])
    state = {"fine_tuning": False}

    def hook(module, args, kwargs, output):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if torch.is_grad_enabled() and torch.isin(ids, poison).any() and state["fine_tuning"]:
            output.last_hidden_state.mul_(float("nan"))
        return output

    from taskspace.probes.finetune import ftgd as ftgd_mod

    real = ftgd_mod._finetune

    def flagged(*a, **k):
        state["fine_tuning"] = True
        try:
            return real(*a, **k)
        finally:
            state["fine_tuning"] = False

    before = _params(lm.model)
    h = lm.model.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        ftgd_mod._finetune, saved = flagged, ftgd_mod._finetune
        spaces = transfer_probe(lm, tiny_suite(), SETTINGS, tmp_path, progress=False)
    finally:
        ftgd_mod._finetune = saved
        h.remove()
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, before[n])
    T = spaces["transfer"]
    i = T.tasks.index("reflexive")
    assert np.isnan(T.matrix[i]).all() and np.isnan(T.ci_low[i]).all()
    assert np.isfinite(np.delete(T.matrix, i, axis=0)).all()
    rec = json.loads((tmp_path / "ftgd" / "reflexive.json").read_text())
    assert rec["status"] == "failed" and "non-finite" in rec["reason"]
    assert "reflexive" in T.provenance["failed_tasks"]
    assert not (tmp_path / "deltas" / "reflexive.safetensors").exists()
    info = summary(spaces, "transfer", tmp_path / "stats" / "transfer_tasks.csv")
    assert list(info["failed"]) == ["reflexive"] and np.isfinite(info["lm_damage_mean"])


def test_baseline_probe(lm, tmp_path):
    from taskspace.probes.kinds.transfer import transfer_probe

    spaces = transfer_probe(lm, tiny_suite(), SETTINGS, tmp_path, progress=False, baseline=True)
    assert sorted(spaces) == sorted(s.replace("transfer", "baseline") for s in SPACES)
    assert spaces["baseline"].kind == "baseline"
    rec = json.loads((tmp_path / "baseline" / "sva_sg.json").read_text())
    assert rec["objective"] == "lm" and rec["mask"]["kind"] == "all parameters"
    assert rec["mask_fraction"] == 1.0
    assert not (tmp_path / "deltas").exists()          # dense deltas are not written by default
    assert (tmp_path / "scores" / "baseline.parquet").exists()


# -- evaluation: bootstrap ----------------------------------------------------------------------------
def _table(tasks, n, rng, margin=None):
    rows = [(t, str(i)) for t in tasks for i in range(n)]
    m = rng.normal(size=len(rows)) if margin is None else margin
    return pd.DataFrame({"task": [r[0] for r in rows], "group": "g", "pair_id": [r[1] for r in rows],
                         "margin": m, "correct": m > 0})


def test_paired_bootstrap_intervals():
    rng = np.random.default_rng(0)
    tasks = ["a", "b", "c"]
    base = _table(tasks, 40, rng)
    shift = {"a": 2.0, "b": -0.5, "c": 0.25}
    # θ_a shifts every margin of task b by a constant: the paired interval has zero width
    const = _table(tasks, 40, rng, base["margin"].to_numpy() + base["task"].map(shift).to_numpy())
    noisy = _table(tasks, 40, rng, base["margin"].to_numpy() + rng.normal(1.0, 1.0, len(base)))
    est = transfer_matrices(base, {"a": const, "b": noisy}, tasks, bootstrap=500, seed=1)
    T = est[""]
    np.testing.assert_allclose(T.value[0], [2.0, -0.5, 0.25])
    np.testing.assert_allclose(T.low[0], T.value[0]) and np.testing.assert_allclose(T.high[0], T.value[0])
    np.testing.assert_allclose(est["_normalized"].value[0], [1.0, -0.25, 0.125])
    assert np.isnan(T.value[2]).all() and np.isnan(T.low[2]).all()      # 'c' not fine-tuned (failed)
    for key in ("", "_normalized", "_accuracy"):
        e = est[key]
        row = e.value[1]
        assert ((e.low[1] <= row) & (row <= e.high[1])).all()
    assert (T.high[1] - T.low[1] > 0.3).all() and (T.high[1] - T.low[1] < 1.5).all()
    # seeded: same numbers again; and a task's resamples do not depend on the other tasks
    again = transfer_matrices(base, {"a": const, "b": noisy}, tasks, bootstrap=500, seed=1)
    np.testing.assert_array_equal(again[""].low, T.low)
    sub = base["task"] != "c"
    fewer = transfer_matrices(base[sub].reset_index(drop=True), {"b": noisy[sub].reset_index(drop=True)},
                              ["a", "b"], bootstrap=500, seed=1)
    np.testing.assert_array_equal(fewer[""].low[1], T.low[1, :2])
    other_seed = transfer_matrices(base, {"b": noisy}, tasks, bootstrap=500, seed=2)
    assert not np.array_equal(other_seed[""].low[1], T.low[1])


# -- CLI ---------------------------------------------------------------------------------------------------
def _write_suite(path: Path) -> None:
    with open(path, "w") as f:
        for p in tiny_suite().pairs:
            f.write(json.dumps({"good": p.good, "bad": p.bad, "task": p.task, "group": p.group,
                                "pair_id": p.pair_id}) + "\n")


def _cli(*args, cwd=None):
    """``taskspace ARGS`` in this process (conftest's :func:`run_cli`: no interpreter start), with one torch
    thread as the processes it used to start (the module's ``one_thread``); worker processes get one too."""
    return run_cli(*args, cwd=cwd, env={"TASKSPACE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
                                        "HF_HUB_OFFLINE": "1"})


def test_cli_transfer_and_baseline(tiny_model_dir, tmp_path):
    suite = tmp_path / "pairs.jsonl"
    _write_suite(suite)
    out = tmp_path / "probe"
    common = ["--model", str(tiny_model_dir), "--revision", "step10", "--suite", str(suite), "--out", str(out),
              "--train-pairs", "10", "--dev-pairs", "4", "--eval-pairs", "10", "--steps", "4", "--lr", "0.02",
              "--bootstrap", "50", "--tasks", "sva_sg,reflexive"]
    r = _cli("probe", "transfer", *common, "--objective", "difference")
    assert r.returncode == 0, r.stderr
    assert "diagonal mean" in r.stdout and "failed tasks: none" in r.stdout and "within" in r.stdout
    for name in SPACES:
        sp = TaskSpace.load(out / "spaces" / f"{name}.csv")
        assert sp.tasks == ["sva_sg", "reflexive"] and sp.ci_low is not None
        assert sp.provenance["model"]["revision"] == "step10"
    for f in ("ftgd/sva_sg.json", "ftgd/reflexive.json", "deltas/sva_sg.safetensors", "scores/base.parquet",
              "scores/transfer.parquet", "stats/transfer_tasks.csv", "stats/transfer_summary.json"):
        assert (out / f).exists(), f
    # --workers 2 reaches the settings, and two worker processes give the same spaces
    out2 = tmp_path / "probe-workers"
    r = _cli("probe", "transfer", *[a if a != str(out) else str(out2) for a in common], "--workers", "2",
             "--objective", "difference")
    assert r.returncode == 0, r.stderr
    assert json.loads((out2 / "stats" / "transfer_summary.json").read_text())["settings"]["workers"] == 2
    for name in SPACES:
        np.testing.assert_array_equal(TaskSpace.load(out2 / "spaces" / f"{name}.csv").matrix,
                                      TaskSpace.load(out / "spaces" / f"{name}.csv").matrix)
    r = _cli("probe", "baseline", *common)
    assert r.returncode == 0, r.stderr
    assert (out / "spaces" / "baseline_normalized.csv").exists() and (out / "baseline" / "sva_sg.json").exists()

    # bad input: one line, exit 2, nothing written
    bad_out = tmp_path / "bad"
    for extra in (["--objective", "nonsense"], ["--tasks", "no_such_task"]):
        args = [a if a != str(out) else str(bad_out) for a in common]
        r = _cli("probe", "transfer", *args, *extra)
        assert r.returncode == 2, (extra, r.stderr)
        assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not bad_out.exists()


# -- real models (slow) ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.xdist_group("toy_tiny")
def test_toy_world_transfer_diagonal_is_positive(tmp_path, toy_tiny):
    """On a model pretrained on the toy world (conftest's ``toy_tiny``: tiny, 300 steps, seed 0), FTGD on
    a task helps that task: the diagonal of T is positive (a property of the method, not of a fixture)."""
    # our own modules: an import error must fail the test, never skip it
    from taskspace.models.loading import load_model
    from taskspace.probes.kinds.transfer import transfer_probe
    from taskspace.suites import toy

    folder = toy_tiny
    revs = sorted((p.name for p in Path(folder).iterdir() if p.name.startswith("step")),
                  key=lambda r: int(r[4:]))
    assert revs[0] == "step0" and int(revs[-1][4:]) > 0
    lm = load_model(str(folder), revs[-1])
    torch.manual_seed(0)
    suite = toy.toy_suite(seed=0)
    by_group: dict[str, list[str]] = {}
    for t in suite.tasks:
        by_group.setdefault(suite.group_of(t), []).append(t)
    tasks = [t for ts in list(by_group.values())[:3] for t in ts[:2]]
    settings = ProbeSettings(tasks=tuple(tasks), train_pairs=60, dev_pairs=20, eval_pairs=60, steps=30,
                             lr=1e-3, objective="difference", bootstrap=200)
    spaces = transfer_probe(lm, suite, settings, tmp_path / "probe", progress=False)
    diag = np.diag(spaces["transfer"].matrix)
    best = {t: json.loads((tmp_path / "probe" / "ftgd" / f"{t}.json").read_text())["best_step"] for t in tasks}
    # A task the model cannot learn from its training pairs never beats step 0 (measured once:
    # anaphor_gender_agreement, at chance for the tiny model): reported as no_improvement, its row
    # missing (NaN); every task that trained must gain on its own held-out pairs, and most tasks train.
    # (On toy_tiny, and on the preset's 1,200 steps, all six trained when measured: diagonal 0.5-8.2.)
    trained = [i for i, t in enumerate(tasks) if best[t] > 0]
    assert len(trained) >= len(tasks) - 1, best
    assert (diag[trained] > 0).all(), dict(zip(tasks, diag))
    untrained = [i for i in range(len(tasks)) if i not in trained]
    assert np.isnan(spaces["transfer"].matrix[untrained]).all()
    assert diag[trained].mean() > 1.0, dict(zip(tasks, diag))


def _blimp_suite(tasks):
    try:
        from taskspace.suites import load_suite

        return load_suite(str(BLIMP)).select(tasks)
    except Exception:  # noqa: BLE001 - the BLiMP loader is another module; fall back to reading jsonl
        from taskspace.suites.schema import Pair

        pairs = []
        for t in tasks:
            for line in open(BLIMP / f"{t}.jsonl"):
                d = json.loads(line)
                pairs.append(Pair(d["UID"], d["linguistics_term"], str(d["pairID"]), d["sentence_good"],
                                  d["sentence_bad"]))
        return Suite(pairs, name="blimp")


@pytest.mark.slow
def test_gutenberg_determiner_noun_agreement_transfers(tmp_path):
    """On the real-English model, FTGD on one determiner-noun agreement paradigm helps the
    other (positive transfer both ways)."""
    shared_or_skip(GUTENBERG_MODEL / "step2577")
    shared_or_skip(BLIMP)
    from taskspace.models.loading import load_model
    from taskspace.probes.kinds.transfer import transfer_probe

    tasks = ["determiner_noun_agreement_1", "determiner_noun_agreement_2"]
    lm = load_model(str(GUTENBERG_MODEL), "step2577")
    # the paper's FTGD setting (difference objective, lr 1e-3), as the README's figure
    settings = ProbeSettings(tasks=tuple(tasks), train_pairs=100, dev_pairs=50, eval_pairs=100, steps=50,
                             lr=1e-3, objective="difference", bootstrap=300)
    spaces = transfer_probe(lm, _blimp_suite(tasks), settings, tmp_path, progress=False)
    T = spaces["transfer"]
    assert (np.diag(T.matrix) > 0).all()
    assert T.matrix[0, 1] > 0 and T.matrix[1, 0] > 0, T.matrix
    assert T.ci_low[0, 1] > 0 and T.ci_low[1, 0] > 0, (T.ci_low, T.matrix)


def test_a_worker_that_dies_is_an_error_not_a_hang(tiny_model_dir, tmp_path):
    """A script without the ``__main__`` guard makes every spawned worker re-run it and die while
    starting: the run must stop with a one-line error naming the cause, not block forever."""
    suite = tmp_path / "pairs.jsonl"
    _write_suite(suite)
    script = tmp_path / "unguarded.py"
    script.write_text(f"""
from taskspace.models.loading import load_model
from taskspace.probes.settings import ProbeSettings
from taskspace.probes.kinds.transfer import transfer_probe
from taskspace.suites import load_suite

lm = load_model({str(tiny_model_dir)!r}, "step10")
settings = ProbeSettings(train_pairs=10, dev_pairs=0, eval_pairs=10, steps=2, bootstrap=0, workers=2)
transfer_probe(lm, load_suite({str(suite)!r}), settings, {str(tmp_path / "out")!r}, progress=False)
""")
    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "worker process died" in last and "__main__" in last, r.stderr[-2000:]
    assert not (tmp_path / "out" / "spaces").exists()
