"""Resumable runs: plans, job keys, the job store, the lock, executors, kill -9 and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from taskspace.errors import InputError, RunLockedError, TaskspaceError

# -- helpers -------------------------------------------------------------------------------------

SUITE_ROWS = {
    # task: (group, good template, bad template); {n} = a singular noun, {p} = its plural
    "sva_singular": ("subject_verb_agreement", "the {n} sleeps .", "the {n} sleep ."),
    "sva_plural": ("subject_verb_agreement", "the {p} sleep .", "the {p} sleeps ."),
    "anaphor_singular": ("anaphor_agreement", "the {n} sees itself .", "the {n} sees themselves ."),
    "anaphor_plural": ("anaphor_agreement", "the {p} see themselves .", "the {p} see itself ."),
    "npi_never": ("npi_licensing", "the {n} never ran .", "the {n} ever ran ."),
    "npi_not": ("npi_licensing", "the {p} ran not any .", "the {p} ran not some ."),
}
NOUNS = [("cat", "cats"), ("dog", "dogs"), ("girl", "girls"), ("boy", "boys"), ("teacher", "teachers")]


def write_suite(path: Path, per_task: int = 12) -> Path:
    """A BLiMP-style JSONL suite over the conftest word tokenizer's vocabulary (3 groups × 2 tasks)."""
    with open(path, "w") as f:
        for task, (group, good, bad) in SUITE_ROWS.items():
            for i in range(per_task):
                n, p = NOUNS[i % len(NOUNS)]
                extra = "" if i < len(NOUNS) else " " + ("ran" if i % 2 else "never")
                row = {"sentence_good": good.format(n=n, p=p) + extra, "sentence_bad": bad.format(n=n, p=p) + extra,
                       "UID": task, "linguistics_term": group, "pairID": str(i)}
                f.write(json.dumps(row) + "\n")
    return path


def write_plan(path: Path, model_dir: Path, suite: Path, *, probes=("score", "gradients", "overlap"),
               control: str = "init", train_pairs: int = 6, extra: str = "") -> Path:
    path.write_text(
        f'probes = [{", ".join(repr(p).replace(chr(39), chr(34)) for p in probes)}]\n'
        "report = false\n"
        "[suite]\n"
        f'spec = "{suite}"\n'
        "[[models]]\n"
        f'name = "{model_dir}"\n'
        'revisions = "all"\n'
        f'control = "{control}"\n'
        "[settings]\n"
        f"train_pairs = {train_pairs}\n"
        "dev_pairs = 2\n"
        "eval_pairs = 4\n"
        + extra)
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``taskspace ARGS`` in this process (conftest's :func:`run_cli`: no interpreter start)."""
    return run_cli(*args, env={"TASKSPACE_NO_PROGRESS": "1", **(env or {})})


def cli_process(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``taskspace ARGS`` as a real process of the installed console script: for the tests where the process
    itself is the point (it is killed, or it is the second process on a run)."""
    e = dict(os.environ, TASKSPACE_NO_PROGRESS="1", **(env or {}))
    return subprocess.run(["taskspace", *args], capture_output=True, text=True, env=e, timeout=timeout)


def results_of(run: Path) -> dict[str, bytes]:
    """Every result table of a run (CSV and Parquet), by relative path."""
    out = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run).as_posix()
        if p.is_file() and not rel.startswith(".") and p.suffix in (".csv", ".parquet"):
            out[rel] = p.read_bytes()
    return out


def trained_model(size: str, steps: int, *, corpus: str = "toy", sentences: int | None = 200,
                  control: str = "none") -> str:
    """One ``[[models]]`` table of a model trained in the run, probed at its last step (and ``control``)."""
    more = f", sentences = {sentences}" if sentences is not None else ""
    return (f'[[models]]\npretrain = {{corpus = "{corpus}", size = "{size}", steps = {steps}{more}}}\n'
            f'revisions = ["step{steps}"]\ncontrol = "{control}"\n')


def pretrain_plan(path: Path, suite: Path, *models: str, probes=("score",), report: bool = False,
                  extra: str = "") -> Path:
    """A plan over ``suite`` whose ``models`` (:func:`trained_model` tables) are trained in the run."""
    names = ", ".join(f'"{p}"' for p in probes)
    path.write_text(f'probes = [{names}]\nreport = {str(report).lower()}\n[suite]\nspec = "{suite}"\n'
                    + "".join(models) + extra)
    return path


def events(run: Path) -> list[dict]:
    from taskspace.runs import JobStore

    return JobStore(run).events()


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    suite = write_suite(tmp_path / "suite.jsonl")
    plan = write_plan(tmp_path / "plan.toml", tiny_model_dir, suite)
    return tmp_path, tiny_model_dir, suite, plan


# -- plans ---------------------------------------------------------------------------------------

def _parse(text: str, tmp_path: Path):
    from taskspace.runs import load_plan

    p = tmp_path / "p.toml"
    p.write_text(text)
    return load_plan(p)


BASE = '[suite]\nspec = "toy"\n[[models]]\nname = "gpt2"\n'


def test_plan_defaults_and_resolution(tmp_path, tiny_model_dir):
    plan = _parse(BASE + "[[models]]\npretrain = {size = \"small\", steps = 50}\n"
                  f'[[models]]\nname = "{tiny_model_dir}"\nrevisions = ["step10"]\ncontrol = "none"\n', tmp_path)
    hub, pre, local = plan.models
    assert (hub.slug, hub.revisions, hub.control) == ("gpt2", (None,), None)
    assert (pre.slug, pre.size, pre.revisions, pre.control) == ("toy-small", "small", ("all",), "first")
    assert pre.pretrain.steps == 50 and pre.pretrain.corpus == "toy"
    assert (local.slug, local.revisions, local.control) == ("tiny-lm", ("step10",), None)
    assert plan.probes == ("score", "gradients", "overlap", "transfer") and plan.report is True
    assert plan.settings.train_pairs == 100 and plan.executor.kind == "local"


def test_plan_relative_paths_resolve_beside_the_plan(tmp_path, tiny_model_dir):
    sub = tmp_path / "plans"
    sub.mkdir()
    write_suite(sub / "s.jsonl")
    from taskspace.runs import load_plan

    (sub / "p.toml").write_text('[suite]\nspec = "s.jsonl"\n[[models]]\nname = "gpt2"\n')
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # not the plan's folder
        assert load_plan(sub / "p.toml").suite.spec == str((sub / "s.jsonl").resolve())
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("text, field, line, words", [
    (BASE + 'revision = "step1"\n', "models[0].revision", 5, "did you mean 'revisions'"),
    (BASE + 'control = "init:x"\n', "models[0].control", 5, "seed"),
    ('probes = ["score", "gradient"]\n' + BASE, "probes[1]", 1, "did you mean 'gradients'"),
    (BASE + "[settings]\nmask_fraction = 1.5\n", "settings.mask_fraction", 6, "mask fraction"),
    (BASE + "[settings]\nsteps = 2.5\n", "settings.steps", 6, "must be a int"),
    (BASE + "[settings]\ntasks = [\"a\"]\n", "settings.tasks", 6, "[suite]"),
    (BASE + 'probes = ["score"]\n', "models[0].probes", 5, "top-level key"),
    ('probes = ["score"]\n' + BASE + 'probes = ["score", "gradients"]\n', "models[0].probes[1]", 6,
     "not in the plan's `probes`"),
    ('probes = ["score"]\n' + BASE + 'probes = []\n', "models[0].probes", 6, "non-empty list"),
    (BASE + "[[models]]\nname = \"gpt2\"\n", "models[1].slug", None, "slug 'gpt2'"),
    (BASE + '[[models]]\npretrain = {size = "huge"}\n', "models[1].pretrain.size", 6, "tiny, small, base"),
    (BASE + "[executor]\nkind = \"rey\"\n", "executor.kind", 6, "did you mean 'ray'"),
    ('[suite]\nspec = "toy"\n', "models", None, "missing [[models]]"),
    (BASE + "[probe_revisions]\nbaseline = [\"last\"]\n", "probe_revisions.baseline", 6, "not in `probes`"),
])
def test_plan_errors_name_file_line_field(tmp_path, text, field, line, words):
    with pytest.raises(InputError) as info:
        _parse(text, tmp_path)
    e = info.value
    assert e.file == str(tmp_path / "p.toml") and e.field == field and e.line == line, str(e)
    assert words in str(e)


def test_plan_toml_syntax_error_has_line(tmp_path):
    with pytest.raises(InputError) as info:
        _parse(BASE + "[settings]\nsteps = = 3\n", tmp_path)
    assert info.value.line == 6 and "invalid TOML" in str(info.value)


def test_cli_bad_plan_is_one_line_and_writes_nothing(tmp_path):
    plan = tmp_path / "p.toml"
    plan.write_text(BASE + 'revisons = "all"\n')
    r = cli("run", str(plan), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "did you mean 'revisions'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_unknown_revision_is_an_input_error(tmp_path, setup):
    tmp, model_dir, suite, _ = setup
    plan = tmp / "bad.toml"
    write_plan(plan, model_dir, suite)
    plan.write_text(plan.read_text().replace('revisions = "all"', 'revisions = ["step10", "step99"]'))
    r = cli("run", str(plan), "--out", str(tmp / "run"))
    assert r.returncode == 2 and "step99" in r.stderr and "step0, step10" in r.stderr and "models[0].revisions" in r.stderr
    assert not (tmp / "run").exists()                                     # nothing written


# -- keys ----------------------------------------------------------------------------------------

def test_fingerprint_follows_the_weights_not_the_path(tmp_path, tiny_model_dir):
    import shutil

    from conftest import make_tiny_model
    from taskspace.runs import model_fingerprint

    a = model_fingerprint(str(tiny_model_dir), "step0")
    assert a == model_fingerprint(str(tiny_model_dir), "step0")
    assert a != model_fingerprint(str(tiny_model_dir), "step10")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(str(copy), "step0") == a                  # same weights elsewhere: same key
    (copy / "step0" / "training_state").mkdir()                          # resume state is not the model
    (copy / "step0" / "training_state" / "optimizer.safetensors").write_bytes(b"x")
    assert model_fingerprint(str(copy), "step0") == a
    make_tiny_model("gpt2", vocab_size=64, seed=5).save_pretrained(copy / "step0")   # retrained in place
    assert model_fingerprint(str(copy), "step0") != a
    init = model_fingerprint(str(tiny_model_dir), "init")
    assert init["init_from"] == a and init["init_seed"] == 0
    assert model_fingerprint(str(tiny_model_dir), "init:1") != init
    assert model_fingerprint("EleutherAI/pythia-70m", "step1000") == {"hub": "EleutherAI/pythia-70m",
                                                                      "revision": "step1000"}


def test_keys_change_only_with_what_a_job_reads(setup):
    from taskspace.runs import load_plan
    from taskspace.runs.expand import plan_suite_info, probe_jobs, resolve_model

    tmp, model_dir, suite, plan_path = setup

    def keys(**kw):
        write_plan(plan_path, model_dir, suite, **kw)
        plan = load_plan(plan_path)
        models = [resolve_model(plan, m, tmp / "run") for m in plan.models]
        return {j.label: j.key for j in probe_jobs(plan, models, plan_suite_info(plan), tmp / "run")}

    base = keys()
    assert set(base) == {f"{k} tiny-lm@{r}" for k in ("score", "gradients+overlap")
                         for r in ("step0", "step10", "init")}
    assert len(set(base.values())) == len(base)
    more = keys(train_pairs=7)
    changed = {k for k in base if base[k] != more[k]}
    assert changed == {f"gradients+overlap tiny-lm@{r}" for r in ("step0", "step10", "init")}
    assert keys(extra="steps = 3\n") == base          # FTGD steps: no transfer job in this plan
    assert keys() == base                              # deterministic
    # with a transfer job: FTGD settings are in its key, the number of worker processes is not
    ft = keys(probes=("score", "transfer"))
    assert keys(probes=("score", "transfer"), extra="workers = 2\n") == ft
    ft_steps = keys(probes=("score", "transfer"), extra="steps = 3\n")
    # transfer is one job per source task (+ the base scores and the assembly): FTGD's steps change the
    # rows and the assembly, never the base model's scores
    revs = ("step0", "step10", "init")
    tasks = list(SUITE_ROWS)
    assert {f"transfer base tiny-lm@{r}" for r in revs} <= set(ft)
    assert {f"transfer {t} tiny-lm@{r}" for t in tasks for r in revs} <= set(ft)
    assert {k for k in ft if ft[k] != ft_steps[k]} == (
        {f"transfer tiny-lm@{r}" for r in revs} | {f"transfer {t} tiny-lm@{r}" for t in tasks for r in revs})


# -- store, lock, executors ----------------------------------------------------------------------

def test_publish_replaces_a_slot_and_removes_stale_files(tmp_path):
    from taskspace.runs import JobStore

    store = JobStore(tmp_path)
    s1 = store.staging_dir("k1")
    for name in ("spaces/a.csv", "ftgd/t1.json", "ftgd/t2.json"):
        (s1 / name).parent.mkdir(parents=True, exist_ok=True)
        (s1 / name).write_text(name + " v1")
    rec = {"slot": "m/step1:transfer", "kind": "transfer", "label": "x"}
    files = store.publish("k1", s1, "m/step1", rec)
    assert files == ["m/step1/ftgd/t1.json", "m/step1/ftgd/t2.json", "m/step1/spaces/a.csv"]
    assert store.is_done("k1") and not s1.exists()
    # another slot shares a file name: it must survive the first slot's replacement
    s3 = store.staging_dir("k3")
    (s3 / "ftgd").mkdir()
    (s3 / "ftgd" / "t2.json").write_text("other slot")
    store.publish("k3", s3, "m/step1", {"slot": "m/step1:baseline", "kind": "baseline", "label": "y"})
    s2 = store.staging_dir("k2")
    (s2 / "spaces").mkdir()
    (s2 / "spaces" / "a.csv").write_text("v2")
    (s2 / "ftgd").mkdir()
    (s2 / "ftgd" / "t1.json").write_text("t1 v2")
    store.publish("k2", s2, "m/step1", rec)
    assert not store.record_path("k1").exists() and not store.is_done("k1")
    assert (tmp_path / "m/step1/spaces/a.csv").read_text() == "v2"
    assert (tmp_path / "m/step1/ftgd/t1.json").read_text() == "t1 v2"
    assert (tmp_path / "m/step1/ftgd/t2.json").read_text() == "other slot"   # kept: k3 owns it now
    assert store.is_done("k2") and store.is_done("k3")
    (tmp_path / "m/step1/spaces/a.csv").unlink()                               # a user deleted a result
    assert not store.is_done("k2")


def test_lock_refuses_a_second_holder_and_names_it(tmp_path):
    from taskspace.runs import RunLock

    with RunLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path).acquire()
        assert f"process {os.getpid()}" in str(info.value)
    with RunLock(tmp_path):  # released: free again
        pass


def test_lock_is_released_by_kill_9(tmp_path):
    from taskspace.runs import RunLock

    code = f"from taskspace.runs import RunLock; import time; RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError) as info:
        RunLock(tmp_path).acquire()
    assert f"process {p.pid}" in str(info.value)
    p.send_signal(signal.SIGKILL)
    p.wait()
    with RunLock(tmp_path):  # no stale lock
        pass


def test_second_process_on_a_run_is_refused_by_the_cli(setup):
    from taskspace.runs import RunLock

    tmp, _, _, plan = setup
    with RunLock(tmp / "run"):
        r = cli_process("run", str(plan), "--out", str(tmp / "run"))
    assert r.returncode == 2 and r.stderr.startswith("error: run directory") and f"process {os.getpid()}" in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert not (tmp / "run" / "run.json").exists()


def test_local_executor_respects_dependencies_and_isolates_failures(tmp_path, monkeypatch):
    from taskspace.runs import Job, LocalExecutor
    from taskspace.runs import jobs as jobs_mod

    order = []

    def ok(spec, out, run_dir):
        order.append(spec["name"])
        (out / f"{spec['name']}.txt").write_text(spec["name"])
        return {"name": spec["name"]}

    def boom(spec, out, run_dir):
        order.append(spec["name"])
        raise RuntimeError("exploded")

    monkeypatch.setitem(jobs_mod._RUNNERS, "score", ok)
    monkeypatch.setitem(jobs_mod._RUNNERS, "transfer", boom)
    a = Job("score", "a" * 64, "a", "x:a", {"name": "a"}, dest="x")
    b = Job("transfer", "b" * 64, "b", "x:b", {"name": "b"}, dest="x")
    c = Job("score", "c" * 64, "c", "x:c", {"name": "c"}, dest="x", deps=(b.key,))   # blocked by b
    d = Job("score", "d" * 64, "d", "x:d", {"name": "d"}, dest="x", deps=(a.key,))
    ex = LocalExecutor(tmp_path)
    with pytest.raises(TaskspaceError):
        ex.submit(c)                    # b not submitted yet
    for j in (a, b, c, d):
        ex.submit(j)
    outcomes = {o.job.label: o for o in ex.gather()}
    assert order == ["a", "b", "d"]
    assert {k: o.status for k, o in outcomes.items()} == {"a": "done", "b": "failed", "c": "blocked", "d": "done"}
    assert "exploded" in outcomes["b"].error
    assert (tmp_path / "x" / "d.txt").read_text() == "d"


def test_local_workers_give_the_same_results_in_other_processes(setup):
    """``[executor] workers = 2``: the jobs run in two spawned worker processes, dependencies first, and
    write what the sequential executor writes, to the bit (same torch threads per job); run.json says
    how many threads a job had."""
    import torch

    tmp, _, _, plan_path = setup
    from taskspace.runs import load_plan, run_plan

    run_plan(load_plan(plan_path), tmp / "one")
    n = torch.get_num_threads()
    text = plan_path.read_text() + f"\n[executor]\nkind = \"local\"\nworkers = 2\ncpus_per_job = {n}\n"
    (tmp / "workers.toml").write_text(text)
    plan = load_plan(tmp / "workers.toml")
    assert plan.executor.workers == 2 and plan.executor.threads() == n
    result = run_plan(plan, tmp / "two")
    assert len(result.outcomes) == 6 and not result.failed
    assert results_of(tmp / "one") == results_of(tmp / "two")
    done = [e for e in events(tmp / "two") if e["event"] == "done"]
    assert os.getpid() not in {e["pid"] for e in done}      # the jobs really ran in the workers
    assert json.loads((tmp / "two" / "run.json").read_text())["torch_threads"] == n


def test_a_failed_training_adds_no_jobs_and_the_run_ends_failed_with_one_line(tmp_path, one_thread):
    """One model's training fails (a file stands where its checkpoints go): the other model's probe jobs
    still run (kept for a rerun), the failed model gets none, no compare is made, run.json says "failed",
    and the error is one line naming the job and the log."""
    from taskspace.runs import load_plan, run_plan

    suite = write_suite(tmp_path / "suite.jsonl", per_task=4)
    plan_path = pretrain_plan(tmp_path / "plan.toml", suite, trained_model("tiny", 3), trained_model("small", 3),
                              report=True)
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "models" / "toy-small").write_text("not a folder\n")
    with pytest.raises(TaskspaceError) as err:
        run_plan(load_plan(plan_path), run)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("job pretrain toy-small failed: "), msg
    assert "(see " in msg and "( " not in msg and "log.jsonl" in msg
    done = [e["label"] for e in events(run) if e["event"] == "done"]
    assert sorted(done) == ["pretrain toy-tiny", "score toy-tiny@step3"]
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "failed" and meta["jobs"]["failed"] == 1
    assert not (run / "comparison.json").exists()


def test_a_corpus_its_training_would_refuse_is_refused_before_the_run_writes_anything(tmp_path):
    """A corpus file of one line passes the plan's check (it exists) but not pretraining's: the run refuses
    it up front, with the file, and writes nothing."""
    from taskspace.errors import InputError
    from taskspace.runs import load_plan, run_plan

    suite = write_suite(tmp_path / "suite.jsonl", per_task=4)
    corpus = tmp_path / "one_line.txt"
    corpus.write_text("the cat sleeps .\n")
    plan_path = pretrain_plan(tmp_path / "plan.toml", suite, trained_model("tiny", 3, corpus=str(corpus),
                                                                           sentences=None))
    with pytest.raises(InputError, match="at least 2 non-empty lines") as err:
        run_plan(load_plan(plan_path), tmp_path / "run")
    assert err.value.file is not None and Path(err.value.file).name == "one_line.txt"
    assert not (tmp_path / "run").exists()


def test_the_jobs_bar_grows_with_the_jobs_a_run_adds(monkeypatch, capsys):
    """A run adds a model's probe jobs when its training ends: ``advance(total=N)`` moves the bar's total
    (and is not shown as a field), so the bar ends at N of N."""
    from taskspace import progress

    monkeypatch.setattr(progress, "enabled", lambda: True)      # as on a terminal
    with progress.progress_bar("jobs", total=2, fields=True) as advance:
        advance(1, job="pretrain toy-tiny")
        advance(1, total=5)
        advance(3)
    err = capsys.readouterr().err
    assert "5/5" in err and "total" not in err


def test_local_workers_isolate_a_failure_and_block_what_depends_on_it(tmp_path):
    from taskspace.runs import Job, LocalExecutor

    bad = Job("score", "a" * 64, "bad", "x:a", {"model": None}, dest="x")     # fails in its worker
    after = Job("score", "b" * 64, "after", "x:b", {}, dest="x", deps=(bad.key,))
    ex = LocalExecutor(tmp_path, workers=2)
    for j in (bad, after):
        ex.submit(j)
    outcomes = {o.job.label: o for o in ex.gather()}
    assert outcomes["bad"].status == "failed" and outcomes["bad"].error
    assert outcomes["after"].status == "blocked"
    ex.close()
    with pytest.raises(TaskspaceError, match="at least one worker"):
        LocalExecutor(tmp_path, workers=0)


@pytest.mark.parametrize("value", ["0", "1.5", '"2"'])
def test_executor_workers_must_be_a_positive_integer(tmp_path, value):
    plan = f"""
probes = ["score"]
[suite]
spec = "toy"
[[models]]
name = "x"
[executor]
workers = {value}
"""
    with pytest.raises(InputError, match=r"line 8, field 'executor.workers'"):
        _parse(plan, tmp_path)


def require_ray() -> None:
    """Ray, else a skip; a failure where CI installs Ray (``TASKSPACE_REQUIRE_RAY=1``, set by
    ``.ci/run``), so that the distributed path cannot go untested without anyone noticing."""
    if os.environ.get("TASKSPACE_REQUIRE_RAY") == "1":
        import ray  # noqa: F401 - an ImportError here fails the test instead of skipping it
    else:
        pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for this module's Ray tests (starting one takes seconds, and its workers keep
    torch imported from one test to the next); a RayExecutor joins it and leaves it running."""
    require_ray()
    import ray
    import torch

    ray.init(num_cpus=max(2, torch.get_num_threads()), include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_same_results(setup, ray_cluster):
    import torch

    tmp, model_dir, suite, plan_path = setup
    from taskspace.runs import RayExecutor, load_plan, run_plan

    plan = load_plan(plan_path)
    run_plan(plan, tmp / "local")
    n = torch.get_num_threads()          # bit-identical needs the same torch threads per job
    ex = RayExecutor(tmp / "ray", num_cpus=n, cpus_per_job=n)
    try:
        result = run_plan(plan, tmp / "ray", executor=ex)
    finally:
        ex.close()
    assert len(result.outcomes) == 6 and not result.failed
    assert results_of(tmp / "local") == results_of(tmp / "ray")
    pids = {e["pid"] for e in events(tmp / "ray") if e["event"] == "done"}
    assert os.getpid() not in pids       # the jobs really ran in Ray workers


def test_ray_missing_is_one_clear_line(setup, monkeypatch):
    import builtins

    tmp, _, _, plan_path = setup
    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from taskspace.runs import RayExecutor

    with pytest.raises(TaskspaceError, match=r"pip install 'taskspace\[ray\]'"):
        RayExecutor(tmp)


# -- running, resuming ---------------------------------------------------------------------------

def test_run_skips_done_jobs_and_recomputes_changed_ones(setup):
    tmp, model_dir, suite, plan = setup
    run = tmp / "run"
    r = cli("run", str(plan), "--out", str(run))
    assert r.returncode == 0, r.stderr
    assert "6 job(s) run, 0 already done" in r.stdout
    for rev in ("step0", "step10", "init"):
        assert (run / "tiny-lm" / rev / "scores" / "tasks.csv").exists()
        assert (run / "tiny-lm" / rev / "spaces" / "gradients.csv").exists()
        assert (run / "tiny-lm" / rev / "spaces" / "overlap.csv").exists()
        assert (run / "tiny-lm" / rev / "stats" / "distributedness.csv").exists()
    meta = json.loads((run / "run.json").read_text())
    assert meta["models"][0]["revisions"] == ["step0", "step10"] and meta["models"][0]["control"] == "init"
    assert meta["models"][0]["slug"] == "tiny-lm" and meta["status"] == "complete"
    assert meta["probes"] == ["score", "gradients", "overlap"] and meta["versions"]["taskspace"]
    for package in ("python", "taskspace", "torch", "transformers", "tokenizers", "numpy", "pandas"):
        assert meta["versions"][package] not in ("", "not installed"), package
    assert isinstance(meta["torch_threads"], int) and meta["torch_threads"] >= 1
    assert meta["suite"]["n_tasks"] == 6 and len(meta["suite"]["data_hash"]) == 64
    prov = json.loads((run / "tiny-lm" / "step10" / "scores" / "run.json").read_text())
    assert prov["model"]["revision"] == "step10" and prov["suite"]["data_hash"] == meta["suite"]["data_hash"]
    assert not list((run / ".jobs" / "staging").iterdir())
    before = results_of(run)
    mtimes = {p: p.stat().st_mtime_ns for p in (run / ".jobs").glob("*.json")}

    r = cli("run", str(plan), "--out", str(run))
    assert r.returncode == 0 and "0 job(s) run, 6 already done" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in (run / ".jobs").glob("*.json")} == mtimes
    assert results_of(run) == before

    write_plan(plan, model_dir, suite, train_pairs=8)      # gradients read train_pairs, scores do not
    r = cli("run", str(plan), "--out", str(run))
    assert r.returncode == 0 and "3 job(s) run, 3 already done" in r.stdout
    after = results_of(run)
    assert all(after[k] == before[k] for k in before if "/scores/" in k)
    assert after["tiny-lm/step10/spaces/gradients.csv"] != before["tiny-lm/step10/spaces/gradients.csv"]
    assert len(list((run / ".jobs").glob("*.json"))) == 6   # the old gradient records were retired


def _wait_for(pred, proc, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_kill_9_at_any_point_resumes_to_identical_results(setup):
    tmp, model_dir, suite, plan = setup
    import torch

    from taskspace.runs import load_plan, run_plan

    clean, run = tmp / "clean", tmp / "run"
    run_plan(load_plan(plan), clean)          # uninterrupted, in this process: another process history
    expected = results_of(clean)
    assert len(expected) > 20
    # the processes below sum floats with as many threads as this one did (under pytest-xdist a worker
    # has fewer than a fresh process would take), so their results can be compared byte for byte
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}

    # 1. a real external kill -9 as soon as the first done-record appears
    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1", **threads)
    proc = subprocess.Popen(["taskspace", "run", str(plan), "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: any((run / ".jobs").glob("*.json")), proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    first_done = {p.name: p.stat().st_mtime_ns for p in (run / ".jobs").glob("*.json")}
    assert first_done

    # 2. kills inside a job's life: computed but not published, half the files linked, all linked but
    #    no done-record, done-record written but staging not cleaned; the last one in the 2nd job it runs
    for point in ("before_publish", "publish_half", "publish_linked", "after_record:2"):
        r = cli_process("run", str(plan), "--out", str(run), env={"TASKSPACE_CRASH_AT": point, **threads})
        assert r.returncode == -signal.SIGKILL, (point, r.stdout, r.stderr)

    r = cli_process("run", str(plan), "--out", str(run), env=threads)   # resumed by a fresh process
    assert r.returncode == 0, r.stderr
    assert results_of(run) == expected                         # byte-identical to the uninterrupted run

    log = events(run)
    finished_at: dict[str, int] = {}
    for i, e in enumerate(log):
        if e["event"] in ("done", "skip"):
            finished_at.setdefault(e["key"], i)
        if e["event"] == "start" and e["key"] in finished_at:
            pytest.fail(f"{e['label']} was started again after it had finished")
    assert len(finished_at) == 6
    for name, mtime in first_done.items():                       # and its record was not rewritten
        assert (run / ".jobs" / name).stat().st_mtime_ns == mtime
    assert len({e["pid"] for e in log}) >= 6                     # it really took that many processes
    assert not list((run / ".jobs" / "staging").iterdir())
    assert not [p for p in run.rglob("*.tmp")] and not [p for p in run.rglob("*.publish")]


# -- per-task jobs -------------------------------------------------------------------------------

def _per_task_plan(setup, executor: str = "local"):
    tmp, model_dir, suite, plan_path = setup
    write_plan(plan_path, model_dir, suite, probes=("transfer",), control="none", train_pairs=4,
               extra="steps = 3\nbootstrap = 20\n[probe_revisions]\ntransfer = [\"last\"]\n"
                     f"[executor]\nkind = \"{executor}\"\n")
    return plan_path


def test_transfer_splits_into_one_job_per_source_task_with_the_same_spaces(setup):
    """A run's transfer = a base job, one job per source task and the assembly; the assembled spaces
    equal one transfer_probe call's, bit for bit (same threads); a second run redoes nothing."""
    import numpy as np

    from taskspace import load_model, load_suite
    from taskspace.probes.kinds.transfer import transfer_probe
    from taskspace.runs import load_plan, run_plan
    from taskspace.spaces import TaskSpace

    tmp, model_dir, suite_path, _ = setup
    plan = load_plan(_per_task_plan(setup))
    result = run_plan(plan, tmp / "run")
    kinds = [o.job.kind for o in result.outcomes]
    assert kinds == ["transfer:base"] + ["transfer:row"] * len(SUITE_ROWS) + ["transfer"], kinds
    rows = [o.job for o in result.outcomes if o.job.kind == "transfer:row"]
    assert sorted(j.spec["row"] for j in rows) == sorted(SUITE_ROWS)
    direct = transfer_probe(load_model(str(model_dir), "step10"), load_suite(str(suite_path)), plan.settings,
                            tmp / "direct", progress=False)
    cell = tmp / "run" / "tiny-lm" / "step10"
    for name, sp in direct.items():
        got = TaskSpace.load(cell / "spaces" / f"{name}.csv")
        np.testing.assert_array_equal(got.matrix, sp.matrix)
        np.testing.assert_array_equal(got.ci_low, sp.ci_low)
        assert got.tasks == sp.tasks
        assert got.provenance["model"]["revision"] == "step10"
    for a in SUITE_ROWS:
        assert (cell / "ftgd" / f"{a}.json").exists() and (cell / "deltas" / f"{a}.safetensors").exists()
    again = run_plan(plan, tmp / "run")
    assert not again.outcomes and len(again.skipped) == len(result.outcomes)


def test_a_model_trained_on_ray_gets_its_probe_jobs_when_its_training_ends(tmp_path, ray_cluster):
    """On Ray too, a run grows while it runs: the probe jobs of a model trained in the run become Ray tasks
    once its training has ended, and their results equal the local executor's."""
    import torch

    from taskspace.runs import RayExecutor, load_plan, run_plan

    suite = write_suite(tmp_path / "suite.jsonl", per_task=6)
    plan_path = pretrain_plan(tmp_path / "plan.toml", suite, trained_model("tiny", 4, control="step0"),
                              probes=("score", "gradients"),
                              extra="[settings]\ntrain_pairs = 3\ndev_pairs = 1\neval_pairs = 2\n")
    run_plan(load_plan(plan_path), tmp_path / "local")
    n = torch.get_num_threads()
    ex = RayExecutor(tmp_path / "ray", cpus_per_job=n)
    try:
        result = run_plan(load_plan(plan_path), tmp_path / "ray", executor=ex)
    finally:
        ex.close()
    assert not result.failed
    assert sorted(o.job.label for o in result.outcomes) == sorted(
        ["pretrain toy-tiny"] + [f"{k} toy-tiny@{r}" for k in ("score", "gradients") for r in ("step4", "step0")])
    local, ray = results_of(tmp_path / "local"), results_of(tmp_path / "ray")
    assert local.keys() == ray.keys() and len(local) > 10
    assert {k: v for k, v in local.items() if "/models/" not in f"/{k}"} == \
        {k: v for k, v in ray.items() if "/models/" not in f"/{k}"}
    pids = {e["pid"] for e in events(tmp_path / "ray") if e["event"] == "done"}
    assert os.getpid() not in pids


def test_per_task_jobs_on_a_real_local_ray_cluster_match_the_local_executor(setup, ray_cluster):
    import torch

    from taskspace.runs import RayExecutor, load_plan, run_plan

    tmp = setup[0]
    plan = load_plan(_per_task_plan(setup))
    run_plan(plan, tmp / "local")
    n = torch.get_num_threads()
    ex = RayExecutor(tmp / "ray", num_cpus=max(2, n), cpus_per_job=n)
    try:
        result = run_plan(plan, tmp / "ray", executor=ex)
    finally:
        ex.close()
    assert not result.failed and len(result.outcomes) == len(SUITE_ROWS) + 2
    local, ray = results_of(tmp / "local"), results_of(tmp / "ray")
    table = "tiny-lm/step10/stats/transfer_tasks.csv"       # its seconds columns are wall times
    assert {k: v for k, v in local.items() if k != table} == {k: v for k, v in ray.items() if k != table}
    import pandas as pd

    timing = [c for c in pd.read_csv(tmp / "local" / table).columns if c.endswith("seconds")]
    pd.testing.assert_frame_equal(pd.read_csv(tmp / "local" / table).drop(columns=timing),
                                  pd.read_csv(tmp / "ray" / table).drop(columns=timing))
    pids = {e["pid"] for e in events(tmp / "ray") if e["event"] == "done"}
    assert os.getpid() not in pids


# -- a plan a run would refuse is refused before anything is written (issue 11, item 5) ----------

def _cli_refuses(capsys, *args: str) -> str:
    """Run the CLI in-process; it must exit 2 with one line on stderr and no traceback."""
    from taskspace.cli import main

    with pytest.raises(SystemExit) as ei:
        main(list(args))
    err = capsys.readouterr().err
    assert ei.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("extra, field", [
    ("batch_tokens = 0\n", "settings.batch_tokens"),
    ('reduction = "median"\n', "settings.reduction"),
    ('prefix = "eos"\n', "settings.prefix"),
    ("lr = -0.001\n", "settings.lr"),
    ("lr = nan\n", "settings.lr"),
    ("bootstrap = -1\n", "settings.bootstrap"),
])
def test_settings_a_job_would_refuse_are_refused_by_the_plan(setup, capsys, extra, field):
    tmp, model_dir, suite, _ = setup
    plan = write_plan(tmp / "bad.toml", model_dir, suite, extra=extra)
    for dry in (["--dry-run"], []):
        err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp / "run"), *dry)
        assert f"bad.toml, line 13, field '{field}'" in err, err
        assert not (tmp / "run").exists()


@pytest.mark.parametrize("device, ok", [("gpu", False), ("cuda:x", False), ("cpu", True), ("cuda:1", True),
                                        ("mps", True), ("auto", True)])
def test_plan_device_is_checked(tmp_path, device, ok):
    text = BASE + f'device = "{device}"\n'
    if ok:
        assert _parse(text, tmp_path).models[0].device == device
    else:
        with pytest.raises(InputError, match="unknown device") as ei:
            _parse(text, tmp_path)
        assert ei.value.field == "models[0].device" and ei.value.line == 5


def test_a_plan_that_is_not_utf8_is_one_line(tmp_path, capsys):
    plan = tmp_path / "p.toml"
    plan.write_bytes(BASE.encode() + b'# caf\xe9\n')
    err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp_path / "run"), "--dry-run")
    assert f"{plan}, line 5: not UTF-8 text (byte 0xe9)" in err
    assert not (tmp_path / "run").exists()


def _break_missing(f: Path) -> None:
    f.unlink()


def _break_truncate(f: Path) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("what, breaker, words", [
    ("config.json", _break_missing, "has no revision 'step10'"),
    ("config.json", lambda f: f.write_text("{not json"), "config.json is not readable JSON"),
    ("config.json", lambda f: f.write_text("[]"), "names no model_type"),
    ("tokenizer.json", _break_missing, "holds no tokenizer files"),
    ("model.safetensors", _break_missing, "holds no weights"),
    ("model.safetensors", _break_truncate, "model.safetensors is damaged (truncated"),
    ("model.safetensors", lambda f: f.write_bytes(b"\xff" * 64), "model.safetensors is damaged"),
])
def test_broken_model_folders_are_refused_before_anything_is_written(setup, capsys, what, breaker, words):
    tmp, model_dir, suite, plan = setup
    plan.write_text(plan.read_text().replace('revisions = "all"', 'revisions = ["step0", "step10"]'))
    breaker(model_dir / "step10" / what)
    for dry in (["--dry-run"], []):
        err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp / "run"), *dry)
        assert "field 'models[0]." in err and "step10" in err and words in err, err
        assert not (tmp / "run").exists()


def test_broken_reference_checkpoint_of_an_init_control_is_refused(setup, capsys):
    tmp, model_dir, suite, _ = setup
    plan = write_plan(tmp / "p.toml", model_dir, suite, control="init")
    plan.write_text(plan.read_text().replace('revisions = "all"', 'revisions = ["step10"]'))
    (model_dir / "step0" / "tokenizer.json").unlink()
    err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp / "run"), "--dry-run")
    assert "step0 holds no tokenizer files" in err
    assert not (tmp / "run").exists()


def test_unknown_probe_revision_and_executor_fail_before_the_lock(setup, capsys):
    tmp, model_dir, suite, _ = setup
    plan = write_plan(tmp / "p.toml", model_dir, suite)
    plan.write_text(plan.read_text().replace("report = false\n", "report = false\n[probe_revisions]\n"
                                             'score = ["last", "step77"]\n'))
    for dry in (["--dry-run"], []):
        err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp / "run"), *dry)
        assert "'step77' is not a revision" in err and "probe_revisions.score" in err
        assert not (tmp / "run").exists()                       # no .lock, no run.json
    _, _, _, good = setup
    for dry in (["--dry-run"], []):
        err = _cli_refuses(capsys, "run", str(good), "--out", str(tmp / "run"), "--executor", "slurm", *dry)
        assert "unknown executor 'slurm'" in err
        assert not (tmp / "run").exists()


def test_a_sentence_longer_than_the_context_is_refused_before_the_run(setup, capsys):
    tmp, model_dir, suite, _ = setup
    long_suite = tmp / "long.jsonl"
    rows = suite.read_text().splitlines()
    row = json.loads(rows[-1])
    row.update(pairID="long", sentence_bad=" ".join(["the"] * 64))  # + BOS = 65 > the tiny GPT-2's 64
    long_suite.write_text("\n".join(rows + [json.dumps(row)]) + "\n")
    plan = write_plan(tmp / "p.toml", model_dir, long_suite)
    for dry in (["--dry-run"], []):
        err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp / "run"), *dry)
        assert "field 'suite.spec'" in err and "pair 'long': the bad sentence is 65 tokens" in err, err
        assert "64 positions" in err
        assert not (tmp / "run").exists()


@pytest.mark.parametrize("tail, words", [("x = " + "9" * 5000, "Exceeds the limit"), ("x = " + "[" * 100_000, "nested too deeply"),
                                         ("x = " + "{a = " * 50_000, "nested too deeply")])
def test_plan_huge_integers_and_deep_nesting_are_one_line(tmp_path, tail, words):
    with pytest.raises(InputError, match=words) as ei:
        _parse(BASE + tail + "\n", tmp_path)
    assert ei.value.file == str(tmp_path / "p.toml") and "\n" not in str(ei.value)


# -- dry runs tell the truth, offline, writing nothing (issue 17, item 2) -------------------------

def _dry(capsys, *args: str) -> str:
    """``taskspace run … --dry-run`` in-process (a wide terminal: one line a job); it must exit 0.
    Returns stdout."""
    from taskspace.cli import main

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    try:
        with pytest.raises(SystemExit) as ei:
            main(["run", *args, "--dry-run"])
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    out = capsys.readouterr()
    assert ei.value.code in (0, None), out.err
    return out.out


@pytest.mark.slow
def test_dry_run_lists_the_jobs_a_run_executes_including_a_model_trained_in_it(tmp_path, capsys, one_thread):
    """The dry run's jobs are the jobs the run then executes — those of the model trained in the run too,
    whose checkpoints come from the preset's rule before it is trained — with per-kind totals and a cost;
    it creates nothing; after the run, a dry run finds every job done under the keys the run used."""
    from taskspace.models.presets import planned_checkpoints
    from taskspace.runs import load_plan, run_plan

    suite = write_suite(tmp_path / "suite.jsonl", per_task=8)
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text('probes = ["score", "gradients"]\nreport = false\n[suite]\n'
                         f'spec = "{suite}"\n[[models]]\n'
                         'pretrain = {corpus = "toy", size = "tiny", steps = 6, sentences = 300}\n'
                         "[settings]\ntrain_pairs = 4\ndev_pairs = 1\neval_pairs = 2\n")
    run = tmp_path / "run"
    steps = planned_checkpoints("tiny", 6)
    assert steps == [0, 1, 2, 3, 4, 6]

    out = _dry(capsys, str(plan_path), "--out", str(run))
    assert not run.exists()                                   # no run directory, no .lock, no .jobs
    for s in steps:
        assert f"score toy-tiny@step{s}" in out and f"gradients+overlap toy-tiny@step{s}" not in out
        assert f"gradients toy-tiny@step{s}" in out
    assert "pretrain toy-tiny" in out and "totals per job kind" in out and "pending*" in out
    dry = run_plan(load_plan(plan_path), run, dry_run=True).dry
    totals = {r["kind"]: r["jobs"] for r in dry.totals()}
    assert totals == {"pretrain": 1, "score": len(steps), "gradients": len(steps)}
    assert all(pj.cost.seconds is not None and pj.cost.seconds > 0 for pj in dry.jobs)
    assert dry.models[0]["parameters"] == 252_672 and dry.models[0]["from"] == "the tiny preset"
    planned = sorted(pj.job.label for pj in dry.jobs)

    run.mkdir()                                               # an existing (empty) run directory stays empty
    _dry(capsys, str(plan_path), "--out", str(run))
    assert list(run.iterdir()) == []

    result = run_plan(load_plan(plan_path), run)
    executed = sorted(o.job.label for o in result.outcomes)
    assert executed == planned and not result.failed
    # the parameter count the dry run used is the trained model's
    meta = json.loads((run / "models" / "toy-tiny" / "pretrain.json").read_text())
    assert meta["parameters"]["total"] == 252_672

    again = run_plan(load_plan(plan_path), run, dry_run=True)
    assert {pj.state for pj in again.dry.jobs} == {"done"}
    assert sorted(j.key for j in again.skipped) == sorted(o.job.key for o in result.outcomes)


def test_a_models_probes_start_when_its_own_training_ends_and_the_longest_ready_job_first(tmp_path, one_thread):
    """With two workers, a model trained in the run gets its probe jobs as soon as its own training ends, not
    after every model's: toy-tiny's probes run while toy-small still trains. Among ready jobs the one the cost
    model expects to take longest starts first. The run has the same trainings (and keys) as a dry run
    lists, and its run.json names both models."""
    from taskspace.runs import load_plan, run_plan

    suite = write_suite(tmp_path / "suite.jsonl", per_task=8)
    plan_path = pretrain_plan(tmp_path / "plan.toml", suite,
                              trained_model("tiny", 4, sentences=300, control="step0"),
                              trained_model("small", 40, sentences=300, control="step0"),
                              probes=("score", "gradients"),
                              extra="[settings]\ntrain_pairs = 4\ndev_pairs = 1\neval_pairs = 2\n"
                                    "[executor]\nworkers = 2\n")
    run = tmp_path / "run"
    planned = sorted((pj.job.label, pj.job.key) for pj in run_plan(load_plan(plan_path), run, dry_run=True).dry.jobs
                     if pj.job.kind == "pretrain")
    result = run_plan(load_plan(plan_path), run)
    assert not result.failed
    log = events(run)
    order = [(e["event"], e["label"]) for e in log]
    # toy-tiny's probes started while toy-small was still training
    tiny_starts = [i for i, (ev, lb) in enumerate(order) if ev == "start" and "toy-tiny@" in lb]
    assert tiny_starts[0] < order.index(("done", "pretrain toy-small"))
    # on the one free worker the longest ready job went first: a gradient pass (3 × 4 train pairs a task
    # forward and backward) before a scoring (8 pairs a task forward); in submission order the scorings
    # come first
    assert order[tiny_starts[0]][1].startswith("gradients ")
    labels = sorted(o.job.label for o in result.outcomes)
    assert labels == sorted([f"{k} {m}@{r}" for k in ("score", "gradients") for m, revs in
                             (("toy-tiny", ("step4", "step0")), ("toy-small", ("step40", "step0"))) for r in revs]
                            + ["pretrain toy-small", "pretrain toy-tiny"])
    assert sorted((o.job.label, o.job.key) for o in result.outcomes if o.job.kind == "pretrain") == planned
    meta = json.loads((run / "run.json").read_text())
    assert [m["slug"] for m in meta["models"]] == ["toy-tiny", "toy-small"] and meta["status"] == "complete"


def test_a_models_probes_narrow_the_plans_probes_for_that_model_only(setup):
    """`probes` in a [[models]] table: that model runs only those probes, the others all of the plan's."""
    from taskspace.runs import load_plan, run_plan

    tmp, model_dir, suite, plan = setup
    text = plan.read_text()
    assert text.count("[[models]]") == 1
    first = text.index("[[models]]")
    block = text[first:].split("\n[", 1)[0].rstrip("\n")
    text = text.replace(block, block + "\n" + block.replace("[[models]]", "[[models]]\nslug = \"narrow\"")
                        + '\nprobes = ["score"]')
    plan.write_text(text)
    p = load_plan(plan)
    assert p.models[0].probes is None and p.models[1].probes == ("score",)
    dry = run_plan(p, tmp / "run", dry_run=True).dry
    kinds = {}
    for pj in dry.jobs:
        kinds.setdefault(pj.job.dest.split("/")[0] if pj.job.dest else "", set()).add(pj.job.kind)
    assert kinds["narrow"] == {"score"}
    assert {"score", "gradients"} <= kinds[p.models[0].slug]
    assert not (tmp / "run").exists()


def test_dry_run_reads_a_local_models_size_from_its_header_and_estimates_each_kind(setup, capsys):
    from taskspace.runs import load_plan, run_plan
    from taskspace.runs.estimate import C_FORWARD

    tmp, model_dir, suite, plan = setup
    dry = run_plan(load_plan(plan), tmp / "run", dry_run=True).dry
    assert not (tmp / "run").exists()
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir / "step0").parameters())
    assert dry.models[0]["parameters"] == real and dry.models[0]["from"] == "safetensors header"
    score = next(pj for pj in dry.jobs if pj.job.kind == "score")
    assert score.cost.seconds == pytest.approx(C_FORWARD * real * 6 * 12)      # 6 tasks × 12 pairs, forward
    grad = next(pj for pj in dry.jobs if pj.job.kind == "gradients")
    assert grad.cost.seconds == pytest.approx(C_FORWARD * real * 3 * 6 * 6)    # forward + backward, 6 train pairs
    assert {r["kind"]: r["jobs"] for r in dry.totals()} == {"score": 3, "gradients": 3}
    out = _dry(capsys, str(plan), "--out", str(tmp / "run"))
    assert f"{real:,}" in out and "est. peak memory" in out and "nothing was run or written" in out


@pytest.mark.parametrize("breaker, words", [
    (lambda d: (d / "tokenizer.json").write_bytes((d / "tokenizer.json").read_bytes()[:200]),
     "the tokenizer does not load"),
    (lambda d: _edit_config(d, model_type="no_such_arch"), "config.json does not load"),
    (lambda d: _edit_config(d, n_embd=48), "config.json disagrees with the weights"),
    (lambda d: _edit_config(d, vocab_size=20), "transformer.wte.weight is"),
    (lambda d: _edit_config(d, n_layer=3), "weight(s) the safetensors file does not hold"),
])
def test_a_checkpoint_that_would_not_load_is_refused_by_dry_and_real_runs(setup, capsys, breaker, words):
    """Checked without loading weights: the tokenizer and config load, and the weights' shapes in the
    safetensors header are the config's; refused in one line naming the plan file and field, and a real
    run that refuses leaves nothing (no run directory: no .jobs, .lock, plan.toml or run.json)."""
    tmp, model_dir, suite, plan = setup
    breaker(model_dir / "step10")
    for dry in (["--dry-run"], []):
        err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp / "run"), *dry)
        assert f"error: {plan}, field 'models[0].name'" in err and "step10" in err and words in err, err
        assert not (tmp / "run").exists()


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_a_real_run_that_refuses_leaves_an_existing_run_directory_as_it_was(setup, capsys):
    tmp, model_dir, suite, plan = setup
    run = tmp / "run"
    run.mkdir()
    _edit_config(model_dir / "step0", n_embd=48)
    _cli_refuses(capsys, "run", str(plan), "--out", str(run))
    assert list(run.iterdir()) == []


@pytest.mark.parametrize("revision", ["../other-model/step0", "step0/../../x", ".hidden", "a\\b"])
def test_a_revision_is_a_checkpoint_name_never_a_path(setup, capsys, revision):
    tmp, model_dir, suite, _ = setup
    other = tmp / "other-model"
    other.mkdir()
    (other / "step0").symlink_to(model_dir / "step0", target_is_directory=True)
    out = tmp / "scores"
    err = _cli_refuses(capsys, "score", "--model", str(model_dir), "--revision", revision, "--suite", str(suite),
                       "--out", str(out), "--device", "cpu")
    assert "is not a checkpoint name" in err and not out.exists()
    err = _cli_refuses(capsys, "probe", "gradients", "--model", str(model_dir), "--revision", revision,
                       "--suite", str(suite), "--out", str(out), "--device", "cpu")
    assert "is not a checkpoint name" in err and not out.exists()
    plan = write_plan(tmp / "p.toml", model_dir, suite)
    plan.write_text(plan.read_text().replace('revisions = "all"', f"revisions = [{json.dumps(revision)}]"))
    err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp / "run"), "--dry-run")
    assert "field 'models[0].revisions'" in err and "is not a checkpoint name" in err
    assert not (tmp / "run").exists()


def test_a_pretrain_plan_names_only_checkpoints_its_training_saves(tmp_path, capsys):
    """Revisions and controls of a model trained in the run are checked against the checkpoints the preset's
    rule gives, before anything is trained or written; checkpoints past the last step are refused."""
    plan = tmp_path / "p.toml"
    plan.write_text('[suite]\nspec = "toy"\n[[models]]\n'
                    'pretrain = {size = "tiny", steps = 20}\nrevisions = ["step20", "step7"]\n')
    err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp_path / "run"), "--dry-run")
    assert "field 'models[0].revisions'" in err and "'step7'" in err and "step0, step1, step2, step3, step6" in err
    plan.write_text('[suite]\nspec = "toy"\n[[models]]\npretrain = {size = "tiny", steps = 20, '
                    'checkpoints = [5, 30]}\n')
    err = _cli_refuses(capsys, "run", str(plan), "--out", str(tmp_path / "run"))
    assert "line 4, field 'models[0].pretrain.checkpoints'" in err and "0..20" in err
    assert not (tmp_path / "run").exists()
