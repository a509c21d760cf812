"""Side-by-side speed of two checkouts (issue 25): the same commands with the code before and after a change,
interleaved (before, after, after, before, ...), so both see the same machine; prints wall seconds, the
ratio before ÷ after and each run's peak RSS (ru_maxrss of the command's process tree, from the OS).

    python benchmarks/bench_speed.py --before 44717e3 quick report transfer8
    python benchmarks/bench_speed.py --before 44717e3 --reps 1 tests
    python benchmarks/bench_speed.py --before e0ef906 --reps 1 demo
    python benchmarks/bench_speed.py --before 44717e3 --reps 1 transfer67

What each name runs (with one checkout's ``src/`` first on PYTHONPATH, in a fresh temporary folder):

- ``quick``: ``taskspace demo --quick`` (the README's first command);
- ``demo``: ``taskspace demo`` (the full demo: about ten minutes a run on two cores);
- ``report``: ``taskspace report`` on a finished quick demo (made once beforehand with the *after* code;
  each run starts from a fresh copy of it, so the comparison is rebuilt every time);
- ``transfer8``: ``taskspace probe transfer`` on the first 8 BLiMP paradigms of gutenberg-gpt2-5m step2577
  at the default settings, one worker, one torch thread (needs ``../shared``);
- ``transfer67``: the 67 × 67 transfer space, all BLiMP paradigms of gutenberg-gpt2-5m step2577 at the
  default settings, ``--workers 2`` (17–18 minutes a run on two cores, 2026-12-06); the first run of each side keeps its
  output, and the two sides' CSV files are compared as ``check_numbers.sh --compare`` does;
- ``gradients10``: ``taskspace probe gradients`` on 10 BLiMP paradigms (every sixth) of gutenberg-gpt2-5m
  step2577, 30 train pairs, one thread, the split-half pass on (its default);
- ``tests``: ``python3 -m pytest -q`` in that checkout (the README's test command; minutes).

The before checkout is made with ``git worktree add`` under the temporary folder and removed at the end.
Other processes on the machine slow both sides alike only when they run the whole time: the load average
is printed with each run, and ``benchmarks/README.md`` says what else ran.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
MODEL = SHARED / "models" / "gutenberg-gpt2-5m"
BLIMP = SHARED / "data" / "blimp"

#: the peak RSS of the process tree a command starts: a wrapper reads RUSAGE_CHILDREN after it ends
_WRAP = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
         "s = time.perf_counter() - t; print(rc, s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _taskspace() -> list[str]:
    """The command line, run as the ``taskspace`` console script would (its package from PYTHONPATH)."""
    return [sys.executable, "-c", "import sys; from taskspace.cli import main; sys.argv[0] = 'taskspace'; main()"]


def _first_tasks(n: int, every: int = 1) -> str:
    """``n`` BLiMP paradigms: the first ``n``, or every ``every``-th from the first."""
    sys.path.insert(0, str(REPO / "src"))
    from taskspace.suites import load_suite

    return ",".join(load_suite(str(BLIMP)).tasks[::every][:n])


def command(what: str, tree: Path, work: Path, ready: dict) -> tuple[list[str], Path]:
    """The command line of ``what`` for the checkout at ``tree``, and the folder to run it in."""
    ts = _taskspace()
    if what == "quick":
        return [*ts, "demo", "--quick", "--out", str(work / "demo")], work
    if what == "demo":
        return [*ts, "demo", "--out", str(work / "demo")], work
    if what == "report":
        run = work / "run"
        shutil.copytree(ready["demo"], run, symlinks=True)
        for stale in ("comparison.json", "report.html"):
            (run / stale).unlink(missing_ok=True)
        shutil.rmtree(run / "figures", ignore_errors=True)
        return [*ts, "report", str(run)], work
    if what == "transfer8":
        return [*ts, "probe", "transfer", "--model", str(MODEL), "--revision", "step2577", "--suite", str(BLIMP),
                "--tasks", ready["tasks8"], "--threads", "1", "--workers", "1", "--out", str(work / "t")], work
    if what == "transfer67":
        return [*ts, "probe", "transfer", "--model", str(MODEL), "--revision", "step2577", "--suite", str(BLIMP),
                "--workers", "2", "--out", str(work / "t")], work
    if what == "gradients10":
        return [*ts, "probe", "gradients", "--model", str(MODEL), "--revision", "step2577", "--suite", str(BLIMP),
                "--tasks", ready["tasks10"], "--train-pairs", "30", "--threads", "1", "--out", str(work / "g")], work
    if what == "tests":
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], tree
    raise SystemExit(f"unknown benchmark {what!r}")


def run_once(what: str, tree: Path, scratch: Path, ready: dict, keep: Path | None = None) -> dict:
    """One timed run; ``keep``: where to move the run's probe output (``t``) before its folder is removed."""
    work = Path(tempfile.mkdtemp(dir=scratch, prefix=f"{what}-"))
    argv, cwd = command(what, tree, work, ready)
    # the shared data stays where this checkout finds it (the before worktree has no ../shared beside it)
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), TASKSPACE_NO_PROGRESS="1", HF_HUB_OFFLINE="1",
               TASKSPACE_SHARED=str(SHARED))
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", _WRAP, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    rc, seconds, rss_kb = int(out[0]), float(out[1]), int(out[2])
    if keep is not None and rc == 0:
        shutil.move(str(work / "t"), keep)
    shutil.rmtree(work, ignore_errors=True)
    if rc != 0:
        raise SystemExit(f"{what} failed (exit {rc}) with the code at {tree}: run it by hand to see why")
    return {"seconds": seconds, "peak_rss_gb": rss_kb / 1e6, "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="+", choices=["quick", "demo", "report", "transfer8", "transfer67", "gradients10",
                                                   "tests"])
    ap.add_argument("--before", required=True, help="git commit of the code before")
    ap.add_argument("--after", default=None, help="git commit of the code after (default: this working tree)")
    ap.add_argument("--reps", type=int, default=2, help="runs per side (interleaved)")
    args = ap.parse_args()
    if {"transfer8", "transfer67", "gradients10"} & set(args.what) and not (MODEL.is_dir() and BLIMP.is_dir()):
        raise SystemExit(f"the transfer and gradient cases need {MODEL} and {BLIMP}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    trees = {"before": scratch / "before"}
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(trees["before"]), args.before],
                   check=True)
    if args.after:
        trees["after"] = scratch / "after"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(trees["after"]), args.after],
                       check=True)
    else:
        trees["after"] = REPO
    try:
        ready: dict = {}
        if "report" in args.what:
            ready["demo"] = scratch / "ready" / "demo"
            argv, _ = command("quick", trees["after"], scratch / "ready", ready)
            (scratch / "ready").mkdir()
            subprocess.run(argv, env=dict(os.environ, PYTHONPATH=str(trees["after"] / "src"), TASKSPACE_NO_PROGRESS="1"),
                           check=True, capture_output=True)
        if "transfer8" in args.what:
            ready["tasks8"] = _first_tasks(8)
        if "gradients10" in args.what:
            ready["tasks10"] = _first_tasks(10, every=6)
        rows = []
        for what in args.what:
            got: dict[str, list[dict]] = {"before": [], "after": []}
            for r in range(args.reps):
                for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    keep = scratch / f"{what}-{side}-out" if what == "transfer67" and r == 0 else None
                    res = run_once(what, trees[side], scratch, ready, keep)
                    got[side].append(res)
                    print(f"{what:10s} {side:6s} {res['seconds']:8.1f} s  peak RSS {res['peak_rss_gb']:.2f} GB  "
                          f"load {res['load']:.1f}", flush=True)
            if what == "transfer67":
                subprocess.run(["bash", str(REPO / "benchmarks" / "check_numbers.sh"), "--compare",
                                str(scratch / f"{what}-before-out"), str(scratch / f"{what}-after-out")], check=False)
            b = statistics.median(x["seconds"] for x in got["before"])
            a = statistics.median(x["seconds"] for x in got["after"])
            rows.append({"what": what, "before_s": round(b, 1), "after_s": round(a, 1), "ratio": round(b / a, 2),
                         "before_rss_gb": round(max(x["peak_rss_gb"] for x in got["before"]), 2),
                         "after_rss_gb": round(max(x["peak_rss_gb"] for x in got["after"]), 2)})
        print(f"\nbefore = {args.before}, after = {args.after or 'working tree'}; median of {args.reps} run(s) a side\n")
        print("| what | before (s) | after (s) | before ÷ after | peak RSS before / after (GB) |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['what']} | {r['before_s']} | {r['after_s']} | {r['ratio']}× | "
                  f"{r['before_rss_gb']} / {r['after_rss_gb']} |")
        results = REPO / "benchmarks" / "results"
        results.mkdir(exist_ok=True)
        (results / f"speed_{time.strftime('%Y%m%d_%H%M%S')}.json").write_text(json.dumps(
            {"before": args.before, "after": args.after or "working tree", "reps": args.reps, "rows": rows}, indent=1))
    finally:
        for tree in trees.values():
            if tree != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
