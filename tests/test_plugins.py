"""Probes from other packages (entry-point group ``taskspace.probes``), and the rules that keep the registry
the only place a probe is described.

The third-party test builds a real package, installs it into a virtual environment made in the test (the
installed taskspace and its dependencies visible through ``--system-site-packages``), and drives the real
command line of that environment: ``taskspace probe --help`` lists the plug-in, ``taskspace probe NAME``
runs it, a plan runs it on the Ray executor (workers started from the venv's interpreter load the same
entry points), and compare and the report show its space.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_tiny_model, make_word_tokenizer, mini_suite
from taskspace.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "taskspace"

PLUGIN = '''
"""A probe shipped by another package: lexical surface overlap of the tasks' minimal pairs.

For task t, v_t = Σ_i [bag of words(good_i) − bag of words(bad_i)] over its training pairs; the space is
cos(v_a, v_b): how alike two tasks' edits are on the surface, a control no model is needed for."""
from collections import Counter

import numpy as np

from taskspace.probes import ProbeResult, ProbeSpec, SpaceSpec
from taskspace.probes.spec import Option
from taskspace.probes.common import cosine_matrix, probe_provenance, probe_tasks
from taskspace.spaces import TaskSpace


def run(loaded, suite, settings, ctx, kinds):
    splits, tasks, _ = probe_tasks(suite, settings, ["train"])
    by_task = splits["train"].by_task()
    counts = {t: Counter() for t in tasks}
    for t in tasks:
        for p in by_task[t]:
            counts[t].update(w.lower() for w in p.good.split())
            counts[t].subtract(w.lower() for w in p.bad.split())
    vocab = sorted({w for c in counts.values() for w in c})
    vec = np.array([[counts[t][w] * ctx.options["weight"] for w in vocab] for t in tasks], dtype=float)
    prov = probe_provenance(loaded, suite, settings, "bow-surface", {}, weight=ctx.options["weight"])
    space = TaskSpace(cosine_matrix(vec), tasks, [suite.group_of(t) for t in tasks], "bow_surface", prov)
    return ProbeResult(tuple(kinds), spaces={"bow_surface": space}, provenance=prov)


SPEC = ProbeSpec(
    name="bow-surface",
    help="Surface probe (a plug-in): cosine of the tasks' bag-of-words edits.",
    reads=("train_pairs", "dev_pairs", "eval_pairs", "seed"),
    spaces=(SpaceSpec("bow_surface", "bag-of-words edit cosine", main=True),),
    runner="tsplugin.probe:run",
    options=(Option("weight", float, 1.0, "Scale of the counts (a check that options reach workers).", min=0.0),),
)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tsplugin"
version = "0.0.1"

[project.entry-points."taskspace.probes"]
bow-surface = "tsplugin.probe:SPEC"

[tool.setuptools]
packages = ["tsplugin"]
'''


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kw)


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    """A venv (seeing this interpreter's packages) with the plug-in package installed for real."""
    root = tmp_path_factory.mktemp("plugin")
    pkg = root / "tsplugin-src"
    (pkg / "tsplugin").mkdir(parents=True)
    (pkg / "tsplugin" / "__init__.py").write_text("")
    (pkg / "tsplugin" / "probe.py").write_text(textwrap.dedent(PLUGIN))
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    venv = root / "venv"
    # --without-pip: the venv uses this interpreter's pip and setuptools (a bundled old setuptools cannot build wheels)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(pkg)])
    assert r.returncode == 0, r.stderr
    return root, py


def _taskspace(py: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return _run([str(py), "-c", "import sys; from taskspace.cli import main; sys.argv[0] = 'taskspace'; main()",
                 *args], cwd=cwd)


def test_a_probe_from_another_package_runs_everywhere(plugin_venv, tmp_path):
    root, py = plugin_venv
    # the plug-in is not in this process's registry (it is installed in the venv only)
    from taskspace.probes import registry
    assert "bow-surface" not in registry.names()

    r = _taskspace(py, "probe", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "bow-surface" in r.stdout, r.stdout + r.stderr
    r = _taskspace(py, "probe", "bow-surface", "--help", cwd=tmp_path)
    assert "--weight" in r.stdout and "--train-pairs" in r.stdout

    tok = make_word_tokenizer()
    model_dir = tmp_path / "lm"
    for step, seed in (("step0", 0), ("step10", 1)):
        make_tiny_model("gpt2", vocab_size=len(tok), seed=seed).save_pretrained(model_dir / step)
        tok.save_pretrained(model_dir / step)
    suite = tmp_path / "mini.jsonl"
    suite.write_text("".join(json.dumps({"UID": p.task, "linguistics_term": p.group, "pair_id": p.pair_id,
                                         "sentence_good": p.good, "sentence_bad": p.bad}) + "\n"
                             for p in mini_suite().pairs))

    # the command line
    r = _taskspace(py, "probe", "bow-surface", "--model", str(model_dir), "--revision", "step10", "--suite",
                   str(suite), "--train-pairs", "3", "--dev-pairs", "0", "--eval-pairs", "1", "--weight", "2",
                   "--out", str(tmp_path / "cli"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    side = json.loads((tmp_path / "cli" / "spaces" / "bow_surface.json").read_text())
    assert side["provenance"]["weight"] == 2.0
    r = _taskspace(py, "probe", "bow-surface", "--model", str(model_dir), "--suite", str(suite), "--weight", "-1",
                   "--out", str(tmp_path / "bad"), cwd=tmp_path)
    assert r.returncode != 0 and "weight" in (r.stdout + r.stderr) and not (tmp_path / "bad").exists()

    # a plan on the Ray executor: the workers start from the venv's interpreter and find the entry point
    if os.environ.get("TASKSPACE_REQUIRE_RAY") != "1":
        pytest.importorskip("ray")
    plan = tmp_path / "plan.toml"
    plan.write_text(textwrap.dedent(f'''
        probes = ["bow-surface"]
        [suite]
        spec = "{suite}"
        [[models]]
        name = "{model_dir}"
        revisions = "all"
        [settings]
        train_pairs = 3
        dev_pairs = 0
        eval_pairs = 1
        [probe_options.bow-surface]
        weight = 3.0
        [executor]
        kind = "ray"
        num_cpus = 1
    '''))
    r = _taskspace(py, "run", str(plan), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = [json.loads(line) for line in (tmp_path / "run" / ".jobs" / "log.jsonl").read_text().splitlines()]
    pids = {e["pid"] for e in jobs if e.get("event") == "done" and "bow-surface" in e.get("label", "")}
    assert pids, jobs
    for rev in ("step0", "step10"):
        side = json.loads((tmp_path / "run" / "lm" / rev / "spaces" / "bow_surface.json").read_text())
        assert side["provenance"]["weight"] == 3.0          # the plan's option reached the worker
    cmp = json.loads((tmp_path / "run" / "comparison.json").read_text())
    assert all("bow_surface" in c["spaces"] for c in cmp["cells"])
    assert "bow_surface" in cmp["headline"]["spaces"]
    assert "bag-of-words edit cosine" in (tmp_path / "run" / "report.html").read_text()


# -- the registry is the only place a probe is named ------------------------------------------------------

def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


#: string literals spelled like a probe or space name that name something else, with why: each may stand once
#: in its module (as a named constant). Every probe and space name a module uses comes from the registry.
HOMONYMS = {
    ("probes/kinds/transfer.py", "gradients"): "the timing key of a fine-tuning's gradient-mask stage in "
    "stats/<probe>_timings.json (MASK_TIMING; benchmarks/bench_scale.py and bench_probes.py read it), not the "
    "gradients probe: renaming it would change the file",
}


def test_no_probe_name_is_written_outside_the_probes():
    """Every module but the registry's data (probes/builtin.py) learns probe and space names from the
    registry: a literal probe or space name elsewhere is a special case the registry cannot see. The probes'
    own modules read theirs from their ``ProbeSpec`` (``ctx.spec`` / ``registry.runner_probes``) and find
    the probes they serve or call by what those do (``ProbeSpec.method``, ``ProbeSpec.provides``); the
    only literals left are :data:`HOMONYMS`."""
    from taskspace.probes import registry

    names = set(registry.names())
    for p in registry.probes():
        for s in p.spaces:
            names.add(s.name)
            if s.parts_folder:
                names.add(s.parts_folder)
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "probes/builtin.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if node.value in names or any(node.value.startswith(n + "/") for n in names):
                    found.setdefault((rel, node.value), []).append(f"{rel}:{node.lineno}: {node.value!r}")
    bad = [line for key, lines in found.items() if len(lines) > (key in HOMONYMS) for line in lines]
    assert not bad, "probe names written outside the registry:\n" + "\n".join(bad)
    assert set(HOMONYMS) <= set(found), f"homonyms no longer written: {sorted(set(HOMONYMS) - set(found))}"


def test_runners_learn_their_probes_from_the_registry():
    """A runner serving several probes tells them apart by their ``method`` (declared, unique in the
    registry), a runner called without kinds finds its own entry by its code address, and a probe another
    runner calls for an input is found by what it ``provides``."""
    from taskspace.probes import registry
    from taskspace.probes.common import DIFFERENCES
    from taskspace.probes.kinds import das, steering, transfer
    from taskspace.probes.spec import RunContext, SpaceSpec

    shared: dict[str, list] = {}
    for p in registry.probes():
        shared.setdefault(p.runner, []).append(p)
    for runner, specs in shared.items():
        if len(specs) > 1:
            methods = [p.method for p in specs]
            assert all(methods) and len(set(methods)) == len(methods), runner
            assert all(registry.by_method(p.method) is p for p in specs)
    assert registry.provider(DIFFERENCES) is registry.get("activations")
    assert registry.runner_probes(steering.run_erasure) == [registry.get("erasure")]
    assert registry.runner_probes(das.run) == [registry.get("das")]
    assert registry.runner_probes(das.run, ("mdas", "das")) == [registry.get("mdas"), registry.get("das")]
    assert registry.runner_probes(transfer.run, None, RunContext(spec=registry.get("baseline"))) == [
        registry.get("baseline")]
    assert transfer.fine_tuning_probe(baseline=True) is registry.get("baseline")
    assert transfer.fine_tuning_probe() is registry.get("transfer")
    # a variant of a built-in probe (same runner and method, another name) leaves the built-in found first
    twin = dataclasses.replace(registry.get("steering"), name="steering-twin",
                               spaces=(SpaceSpec("steering_twin", "a test space", main=True),))
    registry.register(twin)
    try:
        assert registry.by_method(twin.method) is registry.get("steering")
        assert registry.runner_probes(steering.run, ("steering-twin",)) == [twin]
    finally:
        registry.unregister(twin.name)


def test_the_scoring_job_is_declared_in_the_registry_only():
    """``score`` is no probe (it writes no space) but a job a plan names among its probes: the registry
    declares it (:data:`~taskspace.probes.registry.SCORE`), and the run system learns it from there."""
    from taskspace.probes import registry
    from taskspace.probes.settings import SCORING_SETTINGS

    score = registry.SCORE
    assert registry.plan_names() == (score, *registry.names()) and score not in registry.names()
    assert registry.job_kinds(score=True) == [score, *registry.job_kinds()]
    assert registry.job_of(score) == score and registry.job_of("overlap") == registry.get("overlap").job_kind
    assert registry.reads_of_job(score) == SCORING_SETTINGS
    bad = []
    for path in sorted((SRC / "runs").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skip = _docstrings(tree)
        bad += [f"{path.relative_to(SRC).as_posix()}:{node.lineno}" for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value == score and id(node) not in skip]
    assert not bad, "the scoring job spelled outside the registry:\n" + "\n".join(bad)


def _imports(path: Path) -> list[str]:
    """The modules ``path`` imports, as absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out += [mod] + ([f"{mod}.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_probe_modules_import_only_downward():
    """A probe kind imports the interface, the shared helpers and the gradient / fine-tuning machinery —
    never another probe kind; the machinery never imports a probe kind; nothing in probes/ imports the
    stages after it (runs, analysis, report, cli)."""
    probes = SRC / "probes"
    kinds = {p.stem for p in (probes / "kinds").glob("*.py") if p.stem != "__init__"}
    bad = []
    for path in sorted(probes.rglob("*.py")):
        rel = path.relative_to(probes)
        for mod in _imports(path):
            if any(mod.startswith(f"taskspace.{up}") for up in ("runs", "analysis", "report", "cli")):
                bad.append(f"{rel} imports {mod}")
            if mod.startswith("taskspace.probes.kinds."):
                target = mod.split(".")[3]
                if target in kinds and (rel.parts[0] != "kinds" or rel.stem != target):
                    bad.append(f"{rel} imports {mod}")
    assert not bad, "\n".join(bad)


def test_reading_the_registry_imports_no_torch_and_survives_a_broken_plugin(tmp_path):
    """The registry is data: listing the probes imports no torch; an entry point that fails to load is
    skipped with a warning naming it, and every other probe is still there."""
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[taskspace.probes]\nbroken = no_such_module:SPEC\n")
    code = ("import sys, warnings\nwarnings.simplefilter('always')\n"
            "from taskspace.probes import registry\nnames = registry.names()\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert {'gradients', 'transfer', 'ablation'} <= set(names), names\nprint('ok', len(names))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path)), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok") and "broken" in r.stderr and "skipped" in r.stderr


# -- a probe's own options in plans ------------------------------------------------------------------------

def test_plan_probe_options_are_checked_keyed_and_reach_the_probe(tmp_path, tiny_model_dir):
    """``[probe_options.NAME]``: a wrong name or value is one line naming the plan's line and field; an
    option changes that probe's job key (and no other); its value reaches the runner in a real run."""
    from taskspace.runs import load_plan, run_plan
    from taskspace.runs.expand import plan_suite_info, probe_jobs, resolve_model
    from test_runs import write_plan, write_suite

    suite = write_suite(tmp_path / "suite.jsonl")
    plan_path = tmp_path / "plan.toml"

    def plan_with(options: str, probes=("score", "gradients", "latent")):
        write_plan(plan_path, tiny_model_dir, suite, probes=probes, control="none", extra=options)
        return load_plan(plan_path)

    with pytest.raises(InputError) as e:
        plan_with("[probe_options.latent]\ncard_tokns = 3\n")
    msg = str(e.value)
    line = plan_path.read_text().splitlines().index("card_tokns = 3") + 1
    assert f"line {line}" in msg and "probe_options.latent.card_tokns" in msg and "did you mean 'card_tokens'" in msg
    with pytest.raises(InputError, match="card_tokens must be >= 1"):
        plan_with("[probe_options.latent]\ncard_tokens = 0\n")
    with pytest.raises(InputError, match="not in `probes`"):
        plan_with("[probe_options.ablation]\nreference = \"step0\"\n")
    with pytest.raises(InputError, match="file not found"):
        plan_with('[probe_options.transfer]\nheldout = "nope.txt"\n', probes=("transfer",))

    def keys(plan):
        models = [resolve_model(plan, m, tmp_path / "run") for m in plan.models]
        return {j.label: j.key for j in probe_jobs(plan, models, plan_suite_info(plan), tmp_path / "run")}

    base = keys(plan_with(""))
    three = keys(plan_with("[probe_options.latent]\ncard_tokens = 3\n"))
    assert {k for k in base if base[k] != three[k]} == {f"latent tiny-lm@{r}" for r in ("step0", "step10")}
    assert keys(plan_with("[probe_options.gradients]\ngradients_dir = \"g\"\n")) == base   # a folder: not keyed

    result = run_plan(plan_with("[probe_options.latent]\ncard_tokens = 3\n"), tmp_path / "run")
    assert not result.failed
    cards = pd.read_csv(tmp_path / "run" / "tiny-lm" / "step10" / "cards" / "latent.csv")
    assert cards.groupby(["task", "direction"]).size().eq(3).all()
    summary = json.loads((tmp_path / "run" / "tiny-lm" / "step10" / "stats" / "latent_summary.json").read_text())
    assert summary["options"] == {"card_tokens": 3}


def test_probes_sharing_a_job_share_their_options(tmp_path, tiny_model_dir):
    """``das`` and ``mdas`` run in one job and read their options by the same names: an option set for one
    reaches the job (another probe's default does not override it), and two values for one name are refused
    before anything runs."""
    from taskspace.probes.registry import get
    from taskspace.runs import load_plan
    from taskspace.runs.jobs import _job_options
    from test_runs import write_plan, write_suite

    assert get("das").job_kind == get("mdas").job_kind
    spec = {"model": {"name": str(tiny_model_dir), "revision": "step10", "device": "cpu", "dtype": "float32"},
            "options": {"das": {"layer": 1, "rank": 2}}}
    for kinds in (("das", "mdas"), ("mdas", "das")):
        opts = _job_options(spec, kinds)
        assert opts["layer"] == 1 and opts["rank"] == 2
    suite = write_suite(tmp_path / "suite.jsonl")
    plan_path = tmp_path / "plan.toml"
    write_plan(plan_path, tiny_model_dir, suite, probes=("das", "mdas"), control="none",
               extra="[probe_options.das]\nlayer = 1\n[probe_options.mdas]\nlayer = 0\n")
    with pytest.raises(InputError, match="share option 'layer'") as e:
        load_plan(plan_path)
    assert "probe_options.mdas.layer" in str(e.value)
