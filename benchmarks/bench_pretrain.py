"""Benchmark of ``taskspace pretrain`` (issue 3): prints the figures for benchmarks/README.md.

1. throughput: training tokens/s of the real loop (and of the whole ``pretrain()`` call with its
   checkpoints and held-out evaluations) against the bare ``model(ids, labels=ids).loss.backward();
   opt.step()`` of the same model on the same batches, side by side in one process;
2. presets: parameter counts, minutes per preset on the toy corpus (default steps), and the final toy
   suite test accuracy of each;
3. gutenberg: ``small`` trained on ../shared/data/gutenberg/train.txt (byte-level BPE) for a fixed token
   budget, then scored on BLiMP (first 100 pairs per task) per group, at step0 and at the end.

    python benchmarks/bench_pretrain.py                      # all three parts
    python benchmarks/bench_pretrain.py --parts throughput --steps 60
    python benchmarks/bench_pretrain.py --parts gutenberg --gutenberg-tokens 1000000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))


def throughput(sizes: list[str], steps: int, repeats: int) -> list[dict]:
    import torch
    from transformers import GPT2LMHeadModel

    from taskspace.models import pretrain as P
    from taskspace.models.presets import get_preset, model_config

    corpus = P.load_corpus("toy", sentences=20_000)
    tok, _ = P.build_tokenizer(corpus)
    data = P.make_data(corpus.documents, tok, n_positions=64)
    results = []
    for size in sizes:
        preset = get_preset(size)
        stream = P.BatchStream(data.train, preset.batch_size, seed=0)
        batches = [stream.batch(k) for k in range(steps)]
        n_tokens = sum(int((b >= 0).sum()) for b in batches)

        def fresh():
            torch.manual_seed(0)
            m = GPT2LMHeadModel(model_config(preset, vocab_size=len(tok), n_positions=64)).train()
            return m, torch.optim.AdamW(m.parameters(), lr=preset.lr, betas=(0.9, 0.95))

        def bare() -> float:
            m, opt = fresh()
            ids = [b.clamp(min=0) for b in batches]  # padding becomes <|endoftext|>, as a user would
            t = time.perf_counter()
            for x in ids:
                m(input_ids=x, labels=x).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return time.perf_counter() - t

        def loop() -> float:
            # the body of pretrain(): schedule, batch assembly from the seeded stream, masked loss, clip
            m, opt = fresh()
            params = list(m.parameters())
            t = time.perf_counter()
            for k in range(steps):
                for g in opt.param_groups:
                    g["lr"] = P.learning_rate(k, steps, preset)
                loss, _ = P.lm_loss(m, stream.batch(k), 0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                float(loss.detach())
            return time.perf_counter() - t

        bare_t, loop_t = [], []
        for _ in range(repeats):
            bare_t.append(bare())
            loop_t.append(loop())
        r = {"size": size, "steps": steps, "tokens": n_tokens,
             "bare_tokens_per_s": n_tokens / min(bare_t), "loop_tokens_per_s": n_tokens / min(loop_t)}
        r["loop_vs_bare"] = r["loop_tokens_per_s"] / r["bare_tokens_per_s"]
        results.append(r)
        print(f"[throughput] {size:5s}  bare fwd+bwd+step {r['bare_tokens_per_s']:8.0f} tok/s   "
              f"training loop {r['loop_tokens_per_s']:8.0f} tok/s   ratio {r['loop_vs_bare']:.2f}x "
              f"(best of {repeats}, {steps} steps, {n_tokens:,} tokens)", flush=True)
    return results


def csv_rows(path: Path):
    import csv

    with open(path, encoding="utf-8") as f:
        yield from csv.DictReader(f)


def presets(sizes: list[str], bare: dict[str, float]) -> list[dict]:
    from taskspace.models import pretrain as P
    from taskspace.models.loading import load_model
    from taskspace.scoring import Scorer, summarize_tasks
    from taskspace.suites import split_suite
    from taskspace.suites.toy import toy_suite

    test = split_suite(toy_suite())["test"]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            d = Path(tmp) / size
            t, c = time.perf_counter(), time.process_time()
            P.pretrain("toy", size, d, progress=False)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            meta = json.loads((d / "pretrain.json").read_text())
            accs = {}
            for rev in meta["revisions"]:
                lm = load_model(str(d), rev)
                accs[rev] = float(summarize_tasks(Scorer.from_loaded(lm).score_pairs(test.pairs))["accuracy"].mean())
            r = {"size": size, "steps": meta["steps"], "total_parameters": meta["parameters"]["total"],
                 "non_embedding_parameters": meta["parameters"]["non_embedding"],
                 "tokens_seen": meta["tokens_seen"], "train_minutes": meta["elapsed_s"] / 60,
                 "call_minutes": wall / 60, "call_cpu_minutes": cpu / 60, "final_heldout_loss": meta["final_heldout_loss"],
                 "toy_test_accuracy": accs, "tokens_per_s": meta["tokens_seen"] / meta["elapsed_s"]}
            if size in bare:
                r["vs_bare"] = r["tokens_per_s"] / bare[size]
            out.append(r)
            print(f"[presets] {size:5s}  {r['total_parameters']:>9,} params ({r['non_embedding_parameters']:,} "
                  f"non-embedding)  {r['steps']} steps  {r['tokens_seen']:,} tokens  "
                  f"train {r['train_minutes']:.2f} min (whole call {r['call_minutes']:.2f} min wall, "
                  f"{r['call_cpu_minutes']:.2f} min CPU)  "
                  f"held-out loss {r['final_heldout_loss']:.3f}  {r['tokens_per_s']:.0f} tok/s incl. "
                  f"checkpoints and held-out evaluation"
                  + (f" ({r['vs_bare']:.2f}x the bare fwd+bwd+step)" if "vs_bare" in r else ""), flush=True)
            print("          toy test accuracy per checkpoint: "
                  + "  ".join(f"{k} {v:.3f}" for k, v in accs.items()), flush=True)
    base = out[0]["non_embedding_parameters"] if out else 1
    print("[presets] non-embedding ratio: " + " : ".join(f"{r['non_embedding_parameters'] / base:.2f}" for r in out)
          + "   (paper 27M : 70M : 203M = 1 : 2.6 : 7.5)")
    return out


def gutenberg(tokens: int, batch_size: int, vocab_size: int, limit: int) -> dict:
    from taskspace.models import pretrain as P
    from taskspace.models.loading import load_model
    from taskspace.scoring import Scorer, summarize_groups, summarize_tasks
    from taskspace.suites import load_suite

    train = SHARED / "data" / "gutenberg" / "train.txt"
    blimp = SHARED / "data" / "blimp"
    if not train.exists() or not blimp.exists():
        print(f"[gutenberg] skipped: {train} or {blimp} is absent")
        return {}
    steps = max(1, round(tokens / (batch_size * 128)))
    suite = load_suite(str(blimp)).select(limit_per_task=limit)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "small"
        t = time.perf_counter()
        P.pretrain(str(train), "small", d, steps=steps, batch_size=batch_size, vocab_size=vocab_size,
                   progress=False, log=lambda m: print(f"[gutenberg] {time.perf_counter() - t:7.1f}s {m}", flush=True))
        wall = time.perf_counter() - t
        meta = json.loads((d / "pretrain.json").read_text())
        res = {"steps": steps, "batch_size": batch_size, "tokens_seen": meta["tokens_seen"],
               "parameters": meta["parameters"], "train_minutes": meta["elapsed_s"] / 60,
               "call_minutes": wall / 60, "heldout_loss": [float(r["heldout_loss"]) for r in csv_rows(d / "training.csv")],
               "blimp": {}}
        for rev in ("step0", f"step{steps}"):
            pairs = Scorer.from_loaded(load_model(str(d), rev)).score_pairs(suite.pairs)
            groups = summarize_groups(pairs)
            res["blimp"][rev] = {"mean_task_accuracy": float(summarize_tasks(pairs)["accuracy"].mean()),
                                 "groups": dict(zip(groups["group"], groups["accuracy"].astype(float)))}
    p = res["parameters"]
    print(f"[gutenberg] small: {p['total']:,} params ({p['non_embedding']:,} non-embedding), BPE {vocab_size}, "
          f"{steps} steps x {batch_size} x 128 = {res['tokens_seen']:,} tokens in {res['train_minutes']:.2f} min "
          f"(whole call incl. BPE training and tokenizing {res['call_minutes']:.2f} min); held-out loss "
          + " -> ".join(f"{x:.2f}" for x in res["heldout_loss"]))
    first, last = res["blimp"]["step0"], res["blimp"][f"step{steps}"]
    print(f"[gutenberg] BLiMP (first {limit} pairs per task), mean task accuracy: step0 "
          f"{first['mean_task_accuracy']:.3f} -> step{steps} {last['mean_task_accuracy']:.3f}")
    for g in last["groups"]:
        print(f"[gutenberg]   {g:28s} step0 {first['groups'][g]:.3f}   step{steps} {last['groups'][g]:.3f}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="throughput,presets,gutenberg")
    ap.add_argument("--sizes", default="tiny,small,base")
    ap.add_argument("--steps", type=int, default=60, help="steps per throughput measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gutenberg-tokens", type=int, default=1_000_000)
    ap.add_argument("--gutenberg-batch", type=int, default=16)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--blimp-limit", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs visible, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    parts = a.parts.split(",")
    sizes = a.sizes.split(",")
    res: dict = {"threads": torch.get_num_threads()}
    if "throughput" in parts:
        res["throughput"] = throughput(sizes, a.steps, a.repeats)
    if "presets" in parts:
        bare = {r["size"]: r["bare_tokens_per_s"] for r in res.get("throughput", [])}
        res["presets"] = presets(sizes, bare)
    if "gutenberg" in parts:
        res["gutenberg"] = gutenberg(a.gutenberg_tokens, a.gutenberg_batch, a.vocab_size, a.blimp_limit)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.exit(main())
