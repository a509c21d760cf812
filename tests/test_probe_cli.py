"""`taskspace probe gradients|overlap` through the console script's function (in this process), controls,
and the gradient space on real models (gutenberg-gpt2-5m over BLiMP; a model pretrained on the toy world)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import BLIMP, GUTENBERG_MODEL, run_cli, shared_or_skip
from taskspace.errors import InputError, TaskspaceError
from taskspace.probes import control_revision, summarize_with_control
from taskspace.probes.output import read_distributedness, read_spaces
from taskspace.spaces import TaskSpace

NOUNS = [("cat", "cats"), ("dog", "dogs"), ("girl", "girls"), ("boy", "boys"), ("teacher", "teachers")]


def write_suite(path: Path) -> Path:
    rows = []
    for s, p in NOUNS:
        rows += [dict(task="sv_sing", group="agreement", good=f"the {s} sleeps .", bad=f"the {s} sleep ."),
                 dict(task="sv_plur", group="agreement", good=f"the {p} sleep .", bad=f"the {p} sleeps ."),
                 dict(task="det_sing", group="determiner", good=f"this {s} ran .", bad=f"these {s} ran ."),
                 dict(task="det_plur", group="determiner", good=f"these {p} ran .", bad=f"this {p} ran ."),
                 dict(task="refl", group="anaphor", good=f"the {s} saw itself .", bad=f"the {s} saw themselves .")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def taskspace(*args: str) -> subprocess.CompletedProcess:
    """``taskspace ARGS`` in this process (conftest's :func:`run_cli`: the console script's function, no
    interpreter start)."""
    return run_cli(*args, env={"TASKSPACE_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"})


def test_cli_gradients_with_init_control_writes_the_layout(tiny_model_dir, tmp_path):
    suite = write_suite(tmp_path / "pairs.jsonl")
    out = tmp_path / "out"
    r = taskspace("probe", "gradients", "--model", tiny_model_dir, "--revision", "step10", "--suite", suite,
                  "--out", out, "--train-pairs", "4", "--control", "init", "--seed", "3")
    assert r.returncode == 0, r.stderr
    for d in (out, out / "control"):
        assert (d / "spaces" / "gradients.csv").exists() and (d / "spaces" / "gradients.json").exists()
        mods = sorted(p.name for p in (d / "spaces" / "gradients_by_module").glob("*.csv"))
        assert mods == sorted(f"{m}.csv" for m in ("embed", "final", "block0.norm", "block0.attn",
                                                    "block0.mlp", "block1.norm", "block1.attn", "block1.mlp"))
        assert (d / "stats" / "distributedness.csv").exists()
        assert not (d / "spaces" / "overlap.csv").exists() and not (d / "masks").exists()
    spaces = read_spaces(out)
    g = spaces["gradients"]
    assert g.tasks == ["sv_sing", "sv_plur", "det_sing", "det_plur", "refl"]
    assert g.groups == ["agreement", "agreement", "determiner", "determiner", "anaphor"]
    prov = g.provenance
    assert prov["probe"] == "gradients" and prov["revision"] == "step10"
    assert prov["model"]["path"].endswith("step10") and prov["model"]["n_parameters"] > 0
    assert prov["convention"]["prefix_token"] == "<s>" and prov["convention"]["reduction"] == "sum"
    assert prov["settings"]["train_pairs"] == 4 and prov["seed"] == 3
    assert prov["suite"]["n_tasks"] == 5 and prov["n_train_pairs"] == {t: 4 for t in g.tasks}
    assert "torch" in prov["versions"] and prov["created"]
    ctl = read_spaces(out / "control")["gradients"]
    assert ctl.provenance["revision"] == "init" and ctl.provenance["model"]["init_seed"] == 0
    assert not np.allclose(ctl.matrix, g.matrix)
    summary = json.loads((out / "stats" / "gradients_summary.json").read_text())
    assert summary["trained"]["difference"] == pytest.approx(g.within_between()["difference"])
    assert summary["control"]["within"] == pytest.approx(ctl.within_between()["within"])
    assert summary["trained_minus_control"]["difference"] == pytest.approx(
        g.within_between()["difference"] - ctl.within_between()["difference"])
    # the printed summary: trained, control, difference with the numbers
    for word in ("trained", "control", "within", "between", f"{summary['trained']['within']:.4f}"):
        assert word in r.stdout
    dist = read_distributedness(out)
    assert list(dist["task"]) == g.tasks and "share:block1.mlp" in dist.columns


def test_cli_overlap_with_first_control_and_masks(tiny_model_dir, tmp_path):
    from taskspace.probes import load_mask

    suite = write_suite(tmp_path / "pairs.jsonl")
    out = tmp_path / "out"
    r = taskspace("probe", "overlap", "--model", tiny_model_dir, "--revision", "step10", "--suite", suite,
                  "--out", out, "--tasks", "sv_sing,det_sing,refl", "--mask-fraction", "0.1", "--control",
                  "first", "--save-masks")
    assert r.returncode == 0, r.stderr
    o = TaskSpace.load(out / "spaces" / "overlap.csv")
    assert o.kind == "overlap" and o.tasks == ["sv_sing", "det_sing", "refl"]
    assert np.allclose(np.diag(o.matrix), 1.0) and ((o.matrix >= 0) & (o.matrix <= 1)).all()
    assert o.provenance["mask"]["fraction"] == 0.1
    masks = {t: load_mask(out / "masks" / f"{t}.safetensors") for t in o.tasks}
    from taskspace.probes import jaccard, mask_size

    n = sum(v.numel() for v in masks["refl"].values())
    assert all(mask_size(m) == round(0.1 * n) for m in masks.values())
    assert o.matrix[0, 2] == pytest.approx(jaccard(masks["sv_sing"], masks["refl"]))
    c = TaskSpace.load(out / "control" / "spaces" / "overlap.csv")
    assert c.provenance["revision"] == "step0"
    assert (out / "control" / "masks" / "refl.safetensors").exists()
    assert not (out / "spaces" / "gradients.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--tasks", "sv_sing,nope"], "nope"),
    (["--control", "first"], "control 'first'"),            # step0 is the revision probed
    (["--mask-fraction", "1.5"], "mask fraction"),
])
def test_cli_bad_input_is_one_line_exit_2_and_no_files(tiny_model_dir, tmp_path, args, message):
    suite = write_suite(tmp_path / "pairs.jsonl")
    out = tmp_path / "out"
    r = taskspace("probe", "overlap", "--model", tiny_model_dir, "--revision", "step0", "--suite", suite,
                  "--out", out, *args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("Loading", "[transformers]"))]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_control_revision(tiny_model_dir):
    assert control_revision(str(tiny_model_dir), "step10", "first") == "step0"
    assert control_revision(str(tiny_model_dir), "step10", "init") == "init"
    assert control_revision("EleutherAI/pythia-70m", "step1000", "init") == "init"
    with pytest.raises(TaskspaceError, match="local model folder"):
        control_revision("EleutherAI/pythia-70m", "step1000", "first")
    with pytest.raises(InputError, match="unknown control"):
        control_revision(str(tiny_model_dir), "step10", "last")


def test_summarize_with_control():
    tasks, groups = ["a", "b", "c", "d"], ["x", "x", "y", "y"]
    t = np.array([[1, .8, .1, .2], [.8, 1, .3, .0], [.1, .3, 1, .6], [.2, .0, .6, 1]])
    c = np.array([[1, .5, .2, .2], [.5, 1, .2, .2], [.2, .2, 1, .3], [.2, .2, .3, 1]])
    s = summarize_with_control(TaskSpace(t, tasks, groups, "gradients"), TaskSpace(c, tasks, groups, "gradients"))
    assert s["trained"]["within"] == pytest.approx(0.7) and s["trained"]["between"] == pytest.approx(0.15)
    assert s["control"]["within"] == pytest.approx(0.4) and s["control"]["between"] == pytest.approx(0.2)
    assert s["trained_minus_control"]["difference"] == pytest.approx((0.7 - 0.15) - (0.4 - 0.2))
    alone = summarize_with_control(TaskSpace(t, tasks, groups, "gradients"), None)
    assert alone["control"] is None and alone["trained_minus_control"] is None


# -- real models ---------------------------------------------------------------------------------------

def _gap(model: str, revision: str, suite, train_pairs: int) -> float:
    """Within − between of the gradient cosine space: ḡ_t of every task (exact), then their cosines — the
    gradient probe's space without its masks and distributedness table, which the gap does not read (a
    third of the probe's time at 67 tasks)."""
    from taskspace.models import load_model
    from taskspace.probes import ProbeSettings
    from taskspace.probes.gradient.differentials import task_gradients
    from taskspace.probes.gradient.similarity import gradient_space

    lm = load_model(model, revision)
    settings = ProbeSettings(train_pairs=train_pairs, dev_pairs=0, eval_pairs=1)
    grads = task_gradients(lm, None, settings.splits(suite)["train"], settings, progress=False)
    space, _ = gradient_space(grads, settings)
    return space.within_between()["difference"]


@pytest.mark.slow
def test_gutenberg_gradient_gap_grows_with_training():
    """docs/design.md, "Controls": the within-minus-between gap of gradient cosine over all 67 BLiMP tasks grows with
    training (0.02 at step0 → 0.10 at step2577 with more pairs)."""
    model = shared_or_skip(GUTENBERG_MODEL)
    from taskspace.suites import load_suite

    suite = load_suite(shared_or_skip(BLIMP))
    assert len(suite.tasks) == 67
    g0 = _gap(str(model), "step0", suite, 30)
    g1 = _gap(str(model), "step2577", suite, 30)
    print(f"\ngutenberg-gpt2-5m, 67 BLiMP tasks, 30 train pairs: gap step0 {g0:.4f}, step2577 {g1:.4f}")
    assert g1 > g0 + 0.02


def _toy_available() -> bool:
    return (importlib.util.find_spec("taskspace.suites.toy") is not None
            and importlib.util.find_spec("taskspace.models.pretrain") is not None)


@pytest.mark.slow
@pytest.mark.skipif(not _toy_available(), reason="toy world / pretraining not available yet")
@pytest.mark.xdist_group("toy_tiny")
def test_toy_world_gradient_gap_exceeds_the_control(toy_tiny):
    """Within-group minus between-group similarity of the gradient space exceeds the control's
    (the untrained step0 of the same run) on a model trained on the toy world (conftest's ``toy_tiny``:
    tiny, 300 steps, seed 0)."""
    from taskspace.suites.toy import toy_suite

    out = toy_tiny
    assert (out / "step300").is_dir() and (out / "step0").is_dir()
    suite = toy_suite(seed=0)
    trained = _gap(str(out), "step300", suite, 40)
    control = _gap(str(out), "step0", suite, 40)
    print(f"\ntoy world (tiny, 300 steps): gap trained {trained:.4f}, control {control:.4f}")
    assert trained > control


# -- the commands are generated from the registry -------------------------------------------------------

def _expected_options(name: str) -> list[tuple[str, str | None, object]]:
    """(option, short flag, default) in --help order, from the registry and ProbeSettings' defaults;
    ...: required, None: optional without a default."""
    import dataclasses

    from taskspace.probes import registry
    from taskspace.probes.settings import ProbeSettings

    spec = registry.get(name)
    defaults = {f.name: f.default for f in dataclasses.fields(ProbeSettings)}
    flag = lambda n: "--" + n.replace("_", "-")  # noqa: E731
    head = [("--model", "-m", ...), ("--suite", "-s", ...), ("--out", "-o", ...), ("--revision", "-r", None),
            ("--tasks", None, None)]
    tail = [("--control", None, None), ("--device", None, "auto"), ("--dtype", None, "float32"),
            ("--attn-implementation", None, None), ("--threads", None, None), ("--trust-remote-code", None, False)]
    return (head + [(flag(n), None, defaults[n]) for n in spec.reads] + tail
            + [(flag(n), None, defaults[n]) for n in spec.uses] + [(o.flag, None, o.default) for o in spec.options])


def _probe_command(name: str):
    import typer

    from taskspace.cli import app

    return typer.main.get_command(app).commands["probe"].commands[name]


@pytest.mark.parametrize("name", __import__("taskspace.probes.registry", fromlist=["names"]).names())
def test_probe_help_lists_every_option_with_its_flags_and_defaults(name):
    from typer.testing import CliRunner

    from taskspace.cli import app

    r = CliRunner().invoke(app, ["probe", name, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert r.exit_code == 0, r.output
    expected = _expected_options(name)
    from taskspace.probes import registry

    assert (("--mask-fraction", None, 0.05) in expected) == ("mask_fraction" in registry.get(name).reads)
    rows = [line.strip("│ *").split() for line in r.output.splitlines() if line.startswith("│")]
    shown = [row[0] for row in rows if row and row[0].startswith("--")]     # first column of the table
    assert shown == [opt for opt, _, _ in expected] + ["--help"]
    assert ("--workers" in r.output) == ("workers" in registry.get(name).uses)
    params = [p for p in _probe_command(name).params if p.name != "help"]
    assert [p.opts[0] for p in params] == [opt for opt, _, _ in expected]
    for p, (opt, short, default) in zip(params, expected):
        assert p.opts[1:] == ([short] if short else []), opt
        assert p.help and p.help.split()[0] in r.output, opt       # every option keeps its help
        if default is ...:
            assert p.required, opt
        else:
            assert not p.required and p.default == default, opt
    first_line = _probe_command(name).help.splitlines()[0]
    assert first_line in r.output                                  # the docstring is still the help


@pytest.mark.parametrize("name", ["transfer", "baseline"])
def test_probe_workers_zero_is_refused(tmp_path, name):
    out = tmp_path / "out"
    r = taskspace("probe", name, "--model", tmp_path / "m", "--suite", tmp_path / "s.jsonl", "--out", out,
                  "--workers", "0")
    assert r.returncode == 2                                       # click's usage error
    assert "Invalid value for '--workers'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


@pytest.mark.parametrize("name", ["gradients", "transfer", "latent"])
def test_probe_refuses_a_sentence_longer_than_the_context_before_writing(tiny_model_dir, tmp_path, name):
    """The tiny GPT-2 has 64 positions: a pair of 70 words is one line naming task and pair, exit 2."""
    suite = write_suite(tmp_path / "pairs.jsonl")
    long = " ".join(["the cat"] * 35) + " sleeps ."
    with open(suite, "a") as f:
        f.write(json.dumps(dict(task="refl", group="anaphor", good=long, bad=long.replace("sleeps", "sleep")))
                + "\n")
    out = tmp_path / "out"
    r = taskspace("probe", name, "--model", tiny_model_dir, "--revision", "step10", "--suite", suite,
                  "--out", out, "--train-pairs", "3")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "positions" in lines[0] and "'refl'" in lines[0], r.stderr
    assert not out.exists()
