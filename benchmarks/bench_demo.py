"""Wall time of `taskspace demo --quick` and of the full demo (docs/design.md, "Targets": ≤ 1 and ≤ 15 minutes on two
CPU cores), with the time per stage taken from the run's job log, and the time of a resumed (no-op)
rerun.

    python benchmarks/bench_demo.py                 # both
    python benchmarks/bench_demo.py --quick-only
    python benchmarks/bench_demo.py --full-only --keep /tmp/demo-full

Each demo runs in a fresh folder through the real console script, so the numbers include start-up,
imports and writing the report: what a newcomer waits for.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGETS = {"quick": 60.0, "full": 900.0}


def stage_seconds(run: Path) -> dict[str, float]:
    """Seconds per job kind, summed from the done events of ``RUN/.jobs/log.jsonl``."""
    out: dict[str, float] = defaultdict(float)
    for line in (run / ".jobs" / "log.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "done":
            out[e["label"].split()[0]] += float(e.get("seconds", 0.0))
    return dict(out)


def time_demo(quick: bool, folder: Path) -> dict:
    env = dict(os.environ, TASKSPACE_NO_PROGRESS="1")
    cmd = ["taskspace", "demo", "--out", str(folder)] + (["--quick"] if quick else [])
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    t1 = time.perf_counter()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    rerun = time.perf_counter() - t1
    return {"wall_s": wall, "cpu_s": cpu, "load_after": os.getloadavg()[0], "rerun_s": rerun, "rerun_ok": again.returncode == 0,
            "stages_s": stage_seconds(folder), "stdout_tail": r.stdout.strip().splitlines()[-8:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick-only", action="store_true")
    ap.add_argument("--full-only", action="store_true")
    ap.add_argument("--keep", type=Path, default=None, help="Keep the demo folders under this folder.")
    args = ap.parse_args()
    modes = ["quick"] if args.quick_only else ["full"] if args.full_only else ["quick", "full"]
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    print(f"cpus available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
    for mode in modes:
        folder = base / mode
        shutil.rmtree(folder, ignore_errors=True)
        res = time_demo(mode == "quick", folder)
        ok = "within" if res["wall_s"] <= TARGETS[mode] else "OVER"
        print(f"\ndemo {'--quick' if mode == 'quick' else '(full)'}: {res['wall_s']:.1f} s "
              f"({ok} the {TARGETS[mode]:.0f} s target); CPU time {res['cpu_s']:.1f} s; load average at the "
              f"end {res['load_after']:.1f} (other work on the machine slows it); resumed rerun "
              f"{res['rerun_s']:.1f} s")
        for stage, s in sorted(res["stages_s"].items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<20} {s:8.1f} s")
        for line in res["stdout_tail"]:
            print("  | " + line)
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
