"""The notebook route of the README ("Quickstart: Python"): score → probe → compare with theory → plot, in
memory, with the top-level names only — and without touching matplotlib's backend, which a notebook owns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import MINI_NOUNS, REPO

#: the route as a notebook runs it, in a fresh process whose backend is set beforehand (MPLBACKEND=svg: any
#: backend but Agg, which figures.py used to force); it prints what the test checks
ROUTE = textwrap.dedent('''
    import json, os, sys
    import matplotlib

    backend = matplotlib.get_backend()
    import taskspace

    after_import = matplotlib.get_backend()
    lm = taskspace.load_model(sys.argv[1], revision="step10", device="cpu")
    suite = taskspace.Suite([taskspace.Pair(*row) for row in json.loads(sys.argv[2])], name="mini")
    settings = taskspace.ProbeSettings(train_pairs=3, dev_pairs=1, eval_pairs=1)
    scores = taskspace.score(lm, suite, settings)
    res = taskspace.probe(lm, suite, "gradients", settings, progress=False)
    summary = taskspace.summarize_space(res.spaces["gradients"], bootstrap=50, permutations=99)
    fig = taskspace.fig_space(res.spaces["gradients"])

    from matplotlib.figure import Figure

    print(json.dumps({
        "backend": backend, "after_import": after_import, "after_route": matplotlib.get_backend(),
        "pyplot": "matplotlib.pyplot" in sys.modules, "figure": isinstance(fig, Figure), "axes": len(fig.axes),
        "accuracy": scores.accuracy, "tasks": res.spaces["gradients"].tasks,
        "summary": sorted(summary), "n_tasks": summary["n_tasks"], "written": sorted(os.listdir(".")),
    }))
''')


def _rows() -> list[list[str]]:
    rows = []
    for i, (s, p) in enumerate(MINI_NOUNS):
        rows += [["sv_sing", "agr", f"a{i}", f"the {s} sleeps .", f"the {s} sleep ."],
                 ["sv_plur", "agr", f"b{i}", f"the {p} sleep .", f"the {p} sleeps ."],
                 ["refl", "ana", f"c{i}", f"the {s} saw itself .", f"the {s} saw themselves ."]]
    return rows


def test_the_notebook_route_runs_in_memory_and_leaves_the_backend_alone(tiny_model_dir, tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    env = dict(os.environ, MPLBACKEND="svg", TASKSPACE_NO_PROGRESS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", ROUTE, str(tiny_model_dir), json.dumps(_rows())], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"].lower() == "svg"
    assert out["after_import"] == out["backend"], "import taskspace changed matplotlib's backend"
    assert out["after_route"] == out["backend"], "the route changed matplotlib's backend"
    assert not out["pyplot"], "the figures are drawn without pyplot"
    assert out["figure"] and out["axes"] >= 1
    assert 0.0 <= out["accuracy"] <= 1.0
    assert out["tasks"] == ["sv_sing", "sv_plur", "refl"] and out["n_tasks"] == 3
    assert {"signed", "absolute", "ari"} <= set(out["summary"])
    assert out["written"] == [], "the route wrote files"


def test_the_top_level_exports_load_lazily():
    code = ("import sys, taskspace; assert 'taskspace.analysis' not in sys.modules and 'torch' not in sys.modules; "
            "from taskspace import fig_space, summarize_space; "
            "from taskspace.analysis.compare import summarize_space as s; from taskspace.report.figures import fig_space as f; "
            "assert s is summarize_space and f is fig_space; assert 'torch' not in sys.modules; "
            "assert {'fig_space', 'summarize_space'} <= set(taskspace.__all__) <= set(dir(taskspace))")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
