"""Where the system time of the exact gradient probe goes: minor page faults and system seconds of
one task's mask + distributedness statistics, exact path (``top_fraction_mask`` + ``_task_stats``: whole-model
float32/float64 temporaries) vs the streamed path (``gradient_bitset`` + ``streamed_stats``: 1M-element
steps), on a synthetic gradient with the 210M GPT-2 shape (16 layers, width 1024, vocabulary 8192).

    PYTHONPATH=src python benchmarks/bench_faults.py [--layers 16]
    PYTHONPATH=src python benchmarks/bench_faults.py --part pass [--threads 1]   # one task's pass, timed

Faults and system seconds come from ``resource.getrusage`` around each call (this process only).
"""
from __future__ import annotations

import argparse
import resource
import time

import torch


def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime, r.ru_utime, time.perf_counter()


def measure(name, fn):
    a = usage()
    out = fn()
    b = usage()
    print(f"{name:<48} {b[0] - a[0]:>10,d} faults  {b[1] - a[1]:6.2f} s sys  {b[2] - a[2]:6.2f} s user  "
          f"{b[3] - a[3]:6.2f} s wall", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--part", choices=["faults", "pass"], default="faults",
                    help="pass: one task's sketch + statistics + mask, separate calls vs the one pass")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from taskspace.probes.gradient.bitsets import gradient_bitset
    from taskspace.probes.gradient.differentials import TaskGradients
    from taskspace.probes.gradient.masks import top_fraction_mask
    from taskspace.probes.gradient.similarity import _task_stats
    from taskspace.probes.gradient.sketch_engine import streamed_stats

    w = args.width
    shapes = {"wte": (8192, w), "wpe": (512, w)}
    for i in range(args.layers):
        shapes.update({f"h.{i}.ln_1.weight": (w,), f"h.{i}.attn.c_attn.weight": (w, 3 * w),
                       f"h.{i}.attn.c_proj.weight": (w, w), f"h.{i}.ln_2.weight": (w,),
                       f"h.{i}.mlp.c_fc.weight": (w, 4 * w), f"h.{i}.mlp.c_proj.weight": (4 * w, w)})
    gen = torch.Generator().manual_seed(0)
    g = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    n = sum(v.numel() for v in g.values())
    print(f"{n:,} parameters, {args.threads} threads")
    tg = TaskGradients(["t"], ["g"], list(shapes), shapes)
    mods = tg.modules
    if args.part == "pass":
        from taskspace.probes import ProbeSettings
        from taskspace.probes.gradient.sketch import SketchSet
        from taskspace.probes.gradient.sketch_engine import StreamedStats, one_pass, task_bitset

        settings = ProbeSettings()
        sk = SketchSet(list(shapes), shapes, mods, dim=settings.sketch_dim)
        measure("hash codes, once per run (int16 cache)", lambda: [sk.codes(n, 0, 1) for n in shapes])
        for _ in range(3):
            gc = {k: v.clone() for k, v in g.items()}
            measure("separate: sketch (SketchSet.add)", lambda gc=gc: sk.add("t", gc))
            measure("separate: streamed_stats", lambda gc=gc: streamed_stats("t", "g", 1, gc, mods, None))
            measure("separate: mask (overwrite)", lambda gc=gc: task_bitset(gc, shapes, "t", settings, overwrite=True))
            gc = {k: v.clone() for k, v in g.items()}
            measure("one pass: sketch + statistics + mask",
                    lambda gc=gc: one_pass("t", gc, set(), sk, StreamedStats(mods), settings, shapes))
            del gc
        return
    for _ in range(2):
        m = measure("exact: top_fraction_mask", lambda: top_fraction_mask(g, 0.05))
        measure("exact: _task_stats (norm, PR, shares)", lambda m=m: _task_stats("t", "g", tg, g, m))
        del m
        measure("streamed: gradient_bitset", lambda: gradient_bitset(g, fraction=0.05))
        gc = {k: v.clone() for k, v in g.items()}
        measure("streamed: streamed_stats", lambda gc=gc: streamed_stats("t", "g", 1, gc, mods, None))
        measure("streamed: gradient_bitset(overwrite=True)",
                lambda gc=gc: gradient_bitset(gc, fraction=0.05, overwrite=True))
        del gc
        measure("fresh float32 gradient-sized buffers (backward, p.grad=None)",
                lambda: [torch.ones(s) for s in shapes.values()])


if __name__ == "__main__":
    main()
