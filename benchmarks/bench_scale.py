"""Scale benchmark (issue 9): memory and time of the gradient + overlap probes on 210M / 1B random
models, sketch accuracy on gutenberg-gpt2-5m, and transfer rows on the 210M shape.

    python benchmarks/bench_scale.py accuracy                    # (c) sketch vs exact, 67 tasks × 100 pairs
    python benchmarks/bench_scale.py memory --tasks 8 16 67      # (a) 210M GPT-2: peak RSS, s/task vs fwd+bwd
    python benchmarks/bench_scale.py memory --shape neox1b --tasks 8 --pairs 2   # (b) 1B GPT-NeoX
    python benchmarks/bench_scale.py transfer --rows 2           # (d) 210M: transfer + baseline rows over 67 tasks
    python benchmarks/bench_scale.py memory --tasks 4 8 16 --pairs 1 --what forward steering erasure steering-estimate
                                                                 # (e) the causal probes (issue 16): peak RSS vs tasks
    python benchmarks/bench_scale.py memory --tasks 2 --pairs 4 --rotation-steps 5 --what forward das mdas
                                                                 # (f) the trained subspaces (issue 24), last layer

Each memory configuration runs in a fresh subprocess and reads its peak RSS from the OS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), with user / system CPU seconds and major / minor page
faults. The machine is shared: the 1-minute load average is printed next to every figure; compare
ratios measured in one run. Results are also written as JSON under ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
GUTENBERG = SHARED / "models" / "gutenberg-gpt2-5m"
BLIMP = SHARED / "data" / "blimp"
RESULTS = REPO / "benchmarks" / "results"


def _load() -> float:
    return os.getloadavg()[0]


def _usage() -> dict:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"maxrss_gb": r.ru_maxrss / 1024 ** 2, "user_s": r.ru_utime, "sys_s": r.ru_stime,
            "minflt": r.ru_minflt, "majflt": r.ru_majflt}


def _vm(field: str) -> float:
    """A ``/proc/self/status`` memory figure (VmHWM: peak resident, VmRSS: now) in GB; NaN elsewhere."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return float("nan")


def random_model(shape: str):
    """A randomly initialised model of the named shape, with its tokenizer (float32)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(GUTENBERG / "step2577"))
    if shape == "gpt2-210m":
        cfg = GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=1024, n_layer=16, n_head=16,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = GPT2LMHeadModel(cfg)
    elif shape in ("neox1b", "neox160m", "neox-tiny"):
        dims = {"neox1b": (16, 2048, 8), "neox160m": (12, 768, 12), "neox-tiny": (2, 64, 2)}[shape]
        # Pythia's vocabulary size; the gutenberg tokenizer's ids (< 8192) are all inside it
        cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=dims[1], num_hidden_layers=dims[0],
                            num_attention_heads=dims[2], intermediate_size=4 * dims[1],
                            max_position_embeddings=512, hidden_dropout=0.0, attention_dropout=0.0,
                            tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id)
        model = GPTNeoXForCausalLM(cfg)
    else:
        raise SystemExit(f"unknown shape {shape}")
    return model.float().eval(), tok


class Loaded:
    """The parts of a LoadedModel the probes read."""

    def __init__(self, model, tokenizer, name):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    def describe(self):
        return {"model": self.name, "architecture": type(self.model).__name__,
                "n_parameters": sum(p.numel() for p in self.model.parameters())}


def blimp(n_tasks: int):
    from taskspace.suites.blimp import load_blimp_folder

    suite = load_blimp_folder(BLIMP)
    return suite, tuple(suite.tasks[:n_tasks])


# -- (a)/(b): one configuration in this process ------------------------------------------------------

def one(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = random_model(args.shape)
    n_params = sum(p.numel() for p in model.parameters())
    suite, tasks = blimp(args.tasks)
    from taskspace.probes import ProbeSettings

    settings = ProbeSettings(tasks=tasks, train_pairs=args.pairs, dev_pairs=0, eval_pairs=1,
                             gradient_mode=args.mode, sketch_dim=args.sketch_dim)
    build = time.perf_counter() - t0
    before = _usage()
    t = time.perf_counter()
    if args.what in CAUSAL + SUBSPACES or args.what == "forward":
        # the causal probes at the last layer (fixed: no dev sweep), one random direction; "forward" is one
        # plain scoring of the same eval pairs, the floor any forward-only probe sits on
        import taskspace
        from taskspace.scoring import Scorer

        settings = ProbeSettings(tasks=tasks, train_pairs=args.pairs, dev_pairs=0, eval_pairs=args.pairs,
                                 bootstrap=0)
        if args.what == "forward":
            Scorer(model, tok, share_prefix=False).score_pairs(settings.splits(suite)["test"].pairs)
            extra = {}
        elif args.what in SUBSPACES:
            # das / mdas at the last layer (fixed: one training per task, no dev sweep), rotation_steps steps
            # of batch_pairs pairs, two random subspaces; mdas computes das's subspaces too (one job)
            import numpy as np

            opts = {"layer": model.config.num_hidden_layers - 1, "rotation_steps": args.rotation_steps,
                    "random_subspaces": 2, "min_pairs": 1}
            kinds = ("das",) if args.what == "das" else ("das", "mdas")   # the same pass either way
            res = taskspace.probe((model, tok), suite, kinds, settings, progress=False, **opts)
            tab = res.tables["stats/das_tasks.csv"][0]
            extra = {"finite_cells": int(np.isfinite(res.spaces[args.what].matrix).sum()),
                     "rotation_steps": args.rotation_steps, "batch_pairs": settings.batch_pairs,
                     "train_s_per_task": float(tab["train_seconds"].mean()),
                     "row_s": float(tab["row_seconds"].mean())}
            if args.what == "mdas":
                extra["train_s_per_group"] = float(res.tables["stats/mdas_groups.csv"][0]["train_seconds"].mean())
        else:
            opts = {"layer": model.config.num_hidden_layers - 1, "random_directions": 1}
            res = taskspace.probe((model, tok), suite, args.what, settings, progress=False, **opts)
            main = next(iter(res.spaces.values()))
            import numpy as np

            extra = {"finite_cells": int(np.isfinite(main.matrix).sum())}
    elif args.what == "fwdbwd":
        # the same tasks' forward + backward passes alone (buffers reused, nothing else done)
        from taskspace.probes.gradient.differentials import iter_task_gradients

        train = settings.splits(suite)["train"]
        for _ in iter_task_gradients(model, tok, train.by_task(), reuse=True, progress=False):
            pass
        extra = {}
    else:
        from taskspace.probes import run_gradient_probes
        from taskspace.probes.gradient import similarity

        # the time of the sketch mode's per-task pass (sketch + statistics + mask), timed in place so the
        # rest of the probe's time (forward + backward, overlap) is known from the same run
        inner = similarity.one_pass
        spent = [0.0]

        hwm: list[float] = []

        def timed_pass(*a, **kw):
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - t0
                hwm.append(_vm("VmHWM"))

        similarity.one_pass = timed_pass
        res = run_gradient_probes(Loaded(model, tok, args.shape), suite, settings, progress=False)
        similarity.one_pass = inner
        extra = {"pass_s_per_task": spent[0] / len(tasks), "peak_gb_after_each_task": hwm, "mode": res.mode, "within_between": res.spaces["gradients"].within_between()["difference"],
                 "sketch_bytes": res.sketches.nbytes if res.sketches is not None else None}
    wall = time.perf_counter() - t
    after = _usage()
    return {"shape": args.shape, "what": args.what, "tasks": len(tasks), "pairs": args.pairs,
            "n_parameters": n_params, "build_s": build, "wall_s": wall, "s_per_task": wall / len(tasks),
            "sys_s": after["sys_s"] - before["sys_s"], "user_s": after["user_s"] - before["user_s"],
            "minflt": after["minflt"] - before["minflt"], "maxrss_gb": after["maxrss_gb"],
            "load": _load(), "threads": args.threads, **extra}


CAUSAL = ("steering", "erasure", "steering-estimate")
SUBSPACES = ("das", "mdas")


def memory(args) -> list[dict]:
    out = []
    for n in args.tasks:
        for what in args.what:
            cmd = [sys.executable, __file__, "_one", "--shape", args.shape, "--tasks", str(n), "--pairs",
                   str(args.pairs), "--what", what, "--threads", str(args.threads), "--mode", args.mode,
                   "--sketch-dim", str(args.sketch_dim), "--rotation-steps", str(args.rotation_steps)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-3000:], file=sys.stderr)
                rec = {"shape": args.shape, "tasks": n, "what": what, "error": r.stderr[-500:]}
            else:
                rec = json.loads(r.stdout.strip().splitlines()[-1])
            out.append(rec)
            print(json.dumps(rec), flush=True)
    probe = {r["tasks"]: r for r in out if r.get("what") == "probe" and "maxrss_gb" in r}
    fb = {r["tasks"]: r for r in out if r.get("what") == "fwdbwd" and "maxrss_gb" in r}
    print(f"\n{args.shape}, {args.pairs} pairs/task, {args.threads} threads")
    for what in [w for w in args.what if w in CAUSAL + SUBSPACES or w == "forward"]:
        rows = {r["tasks"]: r for r in out if r.get("what") == what and "maxrss_gb" in r}
        if not rows:
            continue
        print(f"\n{what}: {'tasks':>5} {'peak RSS GB':>11} {'s/task':>7} {'load':>5}")
        for n in sorted(rows):
            print(f"{'':{len(what) + 1}} {n:5d} {rows[n]['maxrss_gb']:11.2f} {rows[n]['s_per_task']:7.2f} {rows[n]['load']:5.1f}")
        if len(rows) >= 2:
            a, b = min(rows), max(rows)
            print(f"  RSS slope {(rows[b]['maxrss_gb'] - rows[a]['maxrss_gb']) * 1024 / (b - a):.1f} MB/task ({a} → {b} tasks)")
    if not probe:
        return out
    print(f"\n{args.shape}, {args.pairs} pairs/task, mode {args.mode}, k={args.sketch_dim}, "
          f"{args.threads} threads")
    print(f"{'tasks':>5} {'peak RSS GB':>11} {'s/task':>7} {'fwd+bwd s/task':>14} {'ratio':>6} "
          f"{'pass s/task':>11} {'(s/task − pass) ratio':>21} {'sys s':>6} {'minflt':>9} {'load':>5}")
    for n in sorted(probe):
        p, f = probe[n], fb.get(n)
        ratio = p["s_per_task"] / f["s_per_task"] if f else float("nan")
        ps = p.get("pass_s_per_task", float("nan"))
        # same-run ratio: the probe's per-task time over its own time without the pass (load-robust)
        inner = p["s_per_task"] / (p["s_per_task"] - ps) if ps == ps else float("nan")
        print(f"{n:5d} {p['maxrss_gb']:11.2f} {p['s_per_task']:7.2f} "
              f"{(f['s_per_task'] if f else float('nan')):14.2f} {ratio:6.2f} {ps:11.2f} {inner:21.2f} "
              f"{p['sys_s']:6.1f} {p['minflt']:9d} {p['load']:5.1f}")
    ns = sorted(probe)
    if len(ns) >= 2:
        a, b = ns[0], ns[-1]
        slope = (probe[b]["maxrss_gb"] - probe[a]["maxrss_gb"]) * 1024 / (b - a)
        print(f"RSS slope {slope:.1f} MB/task ({a} → {b} tasks)")
    return out


# -- (c): sketch accuracy ---------------------------------------------------------------------------

def accuracy(args) -> dict:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from taskspace.models.loading import load_model
    from taskspace.probes import ProbeSettings, task_gradients
    from taskspace.probes.gradient.similarity import _cosine
    from taskspace.probes.gradient.sketch import SketchSet
    from taskspace.spaces import TaskSpace

    torch.set_num_threads(args.threads)
    loaded = load_model(str(GUTENBERG), "step2577")
    suite, tasks = blimp(args.tasks)
    settings = ProbeSettings(tasks=tasks, train_pairs=args.pairs, dev_pairs=0, eval_pairs=1)
    train = settings.splits(suite)["train"]
    t = time.perf_counter()
    grads = task_gradients(loaded, None, train, batch_tokens=settings.batch_tokens, progress=False)
    t_grad = time.perf_counter() - t
    total, by_module = grads.gram(per_module=True)
    exact = _cosine(total)
    n = len(grads.tasks)
    off = ~np.eye(n, dtype=bool)
    h = TaskSpace(exact, grads.tasks, grads.groups, "gradients").hypothesis()

    def read(m):
        sp = TaskSpace(m, grads.tasks, grads.groups, "gradients")
        wb = sp.within_between()["difference"]
        mantel = spearmanr(m[off], h[off]).statistic
        return wb, mantel

    wb_e, mantel_e = read(exact)
    rows = []
    for k in args.dims:
        sk = SketchSet(grads.param_names, grads.shapes, grads.modules, dim=k, seed=args.seed)
        t = time.perf_counter()
        for task in grads.tasks:
            sk.add(task, grads.get(task))
        t_sk = (time.perf_counter() - t) / n
        tot, mods = sk.gram(per_module=True)
        cs = _cosine(tot)
        err = np.abs(cs - exact)[off]
        wb_s, mantel_s = read(cs)
        mod_err = [float(np.nanmean(np.abs(_cosine(mods[m]) - _cosine(by_module[m]))[off]))
                   for m in mods if m not in sk.exact_modules]
        row = {"k": k, "module_dim": sk.module_dim, "mean_err": float(err.mean()), "max_err": float(err.max()),
               "spearman": float(spearmanr(cs[off], exact[off]).statistic),
               "gap_err": abs(wb_s - wb_e), "mantel_err": abs(mantel_s - mantel_e),
               "module_mean_err": float(np.mean(mod_err)) if mod_err else 0.0,
               "s_per_task_sketch": t_sk, "numbers_per_task": sk.numbers_per_task}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\ngutenberg-gpt2-5m step2577, {n} tasks × {args.pairs} pairs, {grads.n_parameters:,} parameters; "
          f"exact gradients {t_grad:.0f} s; exact gap {wb_e:.4f}, Mantel ρ {mantel_e:.4f}; load {_load():.1f}")
    print(f"{'k':>6} {'mean|Δcos|':>10} {'max|Δcos|':>9} {'Spearman':>8} {'Δgap':>7} {'ΔMantel':>8} "
          f"{'module mean|Δ|':>14} {'s/task':>6}")
    for r in rows:
        print(f"{r['k']:6d} {r['mean_err']:10.4f} {r['max_err']:9.4f} {r['spearman']:8.4f} {r['gap_err']:7.4f} "
              f"{r['mantel_err']:8.4f} {r['module_mean_err']:14.4f} {r['s_per_task_sketch']:6.2f}")
    return {"tasks": n, "pairs": args.pairs, "exact_gap": wb_e, "exact_mantel": mantel_e, "rows": rows,
            "gradient_seconds": t_grad, "load": _load()}


# -- (d): transfer rows ------------------------------------------------------------------------------

def transfer(args) -> dict:
    """Transfer (and baseline) rows on the random model: each source row fine-tuned and evaluated on
    all 67 BLiMP tasks' eval pairs, one row per call (``rows=``), the base model scored once."""
    import tempfile

    import torch

    from taskspace.probes import ProbeSettings
    from taskspace.probes.kinds.transfer import transfer_probe

    torch.set_num_threads(args.threads)
    model, tok = random_model(args.shape)
    loaded = Loaded(model, tok, args.shape)
    suite, tasks = blimp(67)
    settings = ProbeSettings(tasks=tasks, train_pairs=args.pairs, dev_pairs=0, eval_pairs=args.eval_pairs,
                             steps=args.steps, eval_every=args.steps, bootstrap=10)
    per_row = []
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for probe in args.probes:
            base_from = None
            for a in tasks[: args.rows]:
                t0 = time.perf_counter()
                transfer_probe(loaded, suite, settings, out, baseline=(probe == "baseline"), progress=False,
                               rows=[a], base_from=base_from)
                wall = time.perf_counter() - t0
                base_from = out
                files = sorted((Path(out) / "stats" / f"{probe}_timings").glob("*.json"),
                               key=lambda f: f.stat().st_mtime)
                tm = json.loads(files[-1].read_text())
                row = {"probe": probe, "task": a, "wall_s": wall, "base_eval_s": tm["base_eval"],
                       "gradient_mask_s": tm["gradients"], "finetune_s": tm["finetune"], "eval_s": tm["eval"],
                       "maxrss_gb": _usage()["maxrss_gb"], "load": _load()}
                per_row.append(row)
                print(json.dumps(row), flush=True)
    res = {"shape": args.shape, "rows": per_row, "wall_s": time.perf_counter() - t, "usage": _usage(),
           "steps": args.steps, "pairs": args.pairs, "eval_pairs": args.eval_pairs, "threads": args.threads}
    print(f"\n{args.shape}: {args.pairs} train pairs, {args.steps} steps, {args.eval_pairs} eval pairs × 67 tasks")
    print(f"{'probe':9} {'row':38} {'base scoring s':>14} {'gradient/mask s':>15} {'fine-tune s':>11} "
          f"{'eval s':>7} {'peak RSS GB':>11} {'load':>5}")
    for r in per_row:
        print(f"{r['probe']:9} {r['task']:38} {r['base_eval_s']:14.1f} {r['gradient_mask_s']:15.1f} "
              f"{r['finetune_s']:11.1f} {r['eval_s']:7.1f} {r['maxrss_gb']:11.2f} {r['load']:5.1f}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--tasks", type=int, default=67)
    a.add_argument("--pairs", type=int, default=100)
    a.add_argument("--dims", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("memory")
    m.add_argument("--shape", default="gpt2-210m")
    m.add_argument("--tasks", type=int, nargs="+", default=[8, 16, 67])
    m.add_argument("--pairs", type=int, default=4)
    m.add_argument("--what", nargs="+", default=["probe", "fwdbwd"])
    m.add_argument("--mode", default="auto")
    m.add_argument("--sketch-dim", type=int, default=32768)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--rotation-steps", type=int, default=5, help="das / mdas: training steps per subspace")
    o = sub.add_parser("_one")
    o.add_argument("--shape", default="gpt2-210m")
    o.add_argument("--tasks", type=int, default=8)
    o.add_argument("--pairs", type=int, default=4)
    o.add_argument("--what", default="probe")
    o.add_argument("--mode", default="auto")
    o.add_argument("--sketch-dim", type=int, default=32768)
    o.add_argument("--threads", type=int, default=2)
    o.add_argument("--rotation-steps", type=int, default=5)
    t = sub.add_parser("transfer")
    t.add_argument("--shape", default="gpt2-210m")
    t.add_argument("--rows", type=int, default=2)
    t.add_argument("--probes", nargs="+", default=["transfer", "baseline"])
    t.add_argument("--pairs", type=int, default=4)
    t.add_argument("--eval-pairs", type=int, default=2)
    t.add_argument("--steps", type=int, default=2)
    t.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "_one":
        print(json.dumps(one(args)))
        return
    res = {"accuracy": accuracy, "memory": memory, "transfer": transfer}[args.cmd](args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"scale_{args.cmd}" + (f"_{args.shape}" if hasattr(args, "shape") else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
