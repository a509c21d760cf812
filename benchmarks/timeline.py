"""A run's job timeline from its ``.jobs/log.jsonl``: when each job started and ended, on which worker,
and how long each worker sat idle between jobs.

    python benchmarks/timeline.py RUN_DIR [--since EPOCH_SECONDS]

``--since`` (e.g. ``date +%s.%N`` taken just before the run's command) puts the command's start at 0, so
the time before the first job (start-up, planning) shows too. Times are seconds; the log records
milliseconds.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--since", type=float, default=None, help="epoch seconds to count from")
    args = ap.parse_args()
    events = [json.loads(line) for line in (args.run_dir / ".jobs" / "log.jsonl").read_text().splitlines()
              if line.strip()]
    started: dict[str, tuple[float, int]] = {}
    jobs: list[tuple[float, float, int, str]] = []
    for e in events:
        t = datetime.fromisoformat(e["time"]).timestamp()
        if e["event"] == "start":
            started[e["key"]] = (t, e["pid"])
        elif e["event"] in ("done", "fail") and e["key"] in started:
            t0, pid = started.pop(e["key"])
            jobs.append((t0, t, pid, e["label"]))
    if not jobs:
        raise SystemExit(f"{args.run_dir}: no finished jobs in .jobs/log.jsonl")
    origin = args.since if args.since is not None else min(j[0] for j in jobs)
    workers = sorted({j[2] for j in jobs})
    print(f"{'start':>7} {'end':>7} {'secs':>6}  worker  job")
    for t0, t1, pid, label in sorted(jobs):
        print(f"{t0 - origin:7.2f} {t1 - origin:7.2f} {t1 - t0:6.2f}  w{workers.index(pid)}      {label}")
    first, end = min(j[0] for j in jobs), max(j[1] for j in jobs)
    print(f"\nfirst job starts at {first - origin:.2f} s, last ends at {end - origin:.2f} s")
    for w, pid in enumerate(workers):
        mine = [j for j in jobs if j[2] == pid]
        busy = sum(t1 - t0 for t0, t1, _, _ in mine)
        print(f"w{w} (pid {pid}): {len(mine)} jobs, busy {busy:.1f} s of {end - first:.1f} s, "
              f"idle {end - first - busy:.1f} s")


if __name__ == "__main__":
    main()
