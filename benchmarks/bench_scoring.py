"""Scoring speed and agreement: taskspace vs minicons vs the bare forward pass (docs/design.md, "Targets").

On the same model and the same BLiMP pairs (the first N pairs of each of the 67 paradigms), measures
pairs per second of

- ``bare``: the model's plain forward pass over the same full sentences (prefix token + sentence),
  length-sorted batches of the same token budget, logits only: the limit for whole-sentence scoring;
- ``taskspace``: :class:`taskspace.Scorer` as ``taskspace score`` runs it (unique sentences once,
  pair prefixes shared when exact), and ``taskspace (no prefix sharing)``;
- ``minicons bs=32/64``: ``scorer.IncrementalLMScorer(model, tokenizer=..., device="cpu")`` and
  ``sequence_score(batch, reduction=lambda x: x.sum(0).item(), bos_token=True)`` over the sentences in
  file order (good, bad, good, bad, ...), as its users call it.

and prints the ratios and the largest per-sentence log-prob difference between taskspace and minicons
(and taskspace's own two modes). Two model sizes: ``tiny`` = ../shared/models/gutenberg-gpt2-5m
step2577 (4 layers, width 256, vocabulary 8,192), ``gpt2-small`` = a GPT-2-small-shaped model (12
layers, width 768, vocabulary 50,257) with random weights (seed 0) and the gutenberg tokenizer, whose
ids all fall inside the larger vocabulary.

Times are the best of ``--repeats`` runs, wall clock and process CPU time (the CPU time is the stabler
figure on a shared machine). minicons is an optional dependency (``pip install minicons``, the
``bench`` extra); without it those rows are skipped.

    python benchmarks/bench_scoring.py                          # both sizes, 1 thread
    python benchmarks/bench_scoring.py --sizes tiny --threads 2 --pairs-per-task 100
    python benchmarks/bench_scoring.py --sizes tiny --bare-only --pairs-per-task 20 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def load_pairs(folder: Path, per_task: int) -> list[tuple[str, str]]:
    """(good, bad) of the first ``per_task`` pairs of every ``<UID>.jsonl`` file, files in name order."""
    pairs = []
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per_task:
                    break
                d = json.loads(line)
                pairs.append((d["sentence_good"], d["sentence_bad"]))
    if not pairs:
        sys.exit(f"no BLiMP files in {folder}")
    return pairs


def make_model(size: str, model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except ValueError:  # transformers 4.x: a tokenizer saved by 5.x (class TokenizersBackend), for speed runs
        import json

        from transformers import PreTrainedTokenizerFast

        cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
        tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"),
                                      **{k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")
                                         if isinstance(cfg.get(k), str)})
    if size == "tiny":
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    elif size == "gpt2-small":
        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(size)
    return model.eval(), tok


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Best wall and CPU seconds over ``repeats`` runs, and the last result."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu, out


def bench_size(size: str, args: argparse.Namespace) -> dict:
    import copy

    import numpy as np
    import torch

    from taskspace.scoring import Scorer, encode, length_batches
    from taskspace.suites.schema import Pair

    per_task = args.pairs_per_task or (100 if size == "tiny" else 10)
    pairs = load_pairs(Path(args.blimp), per_task)
    model, tok = make_model(size, Path(args.model) / args.revision)
    sentences = [s for p in pairs for s in p]
    suite_pairs = [Pair("t", "g", str(i), g, b) for i, (g, b) in enumerate(pairs)]
    n = len(pairs)
    rows: dict[str, dict] = {}
    logps: dict[str, np.ndarray] = {}

    ids = encode(tok, list(dict.fromkeys(sentences)), tok.bos_token_id)
    lengths = [len(x) for x in ids]

    def bare() -> None:
        with torch.inference_mode():
            for batch in length_batches(lengths, args.batch_tokens):
                x = torch.full((len(batch), max(lengths[i] for i in batch)), tok.pad_token_id)
                for r, i in enumerate(batch):
                    x[r, : lengths[i]] = torch.as_tensor(ids[i])
                _ = model(input_ids=x, use_cache=False).logits

    methods: list[tuple[str, Callable[[], Any]]] = [("bare forward", bare)]
    for label, share in () if args.bare_only else (("taskspace", None), ("taskspace (no prefix sharing)", False)):
        scorer = Scorer(model, tok, batch_tokens=args.batch_tokens, share_prefix=share)
        _ = scorer.shares_prefix  # the one-off exactness checks run here, not inside the timing

        def run(scorer: Scorer = scorer) -> np.ndarray:
            df = scorer.score_pairs(suite_pairs)
            return np.stack([df["logp_good"].to_numpy(), df["logp_bad"].to_numpy()], 1).ravel()

        methods.append((label + (" [shares prefix]" if share is None and scorer.shares_prefix else ""), run))
    try:
        from minicons import scorer as mc_scorer
    except ImportError:
        mc_scorer = None
        print("minicons is not installed (pip install minicons): skipping it", file=sys.stderr)
    if mc_scorer is not None and not args.bare_only:
        lm = mc_scorer.IncrementalLMScorer(model, tokenizer=copy.deepcopy(tok), device="cpu")
        for bs in args.minicons_batches:
            def run_mc(bs: int = bs) -> np.ndarray:
                out = []
                for s in range(0, len(sentences), bs):
                    out += lm.sequence_score(sentences[s : s + bs], reduction=lambda x: x.sum(0).item(),
                                             bos_token=True)
                return np.asarray(out)

            methods.append((f"minicons bs={bs}", run_mc))

    for label, fn in methods:
        if args.warmup:
            fn()
        wall, cpu, out = best_time(fn, args.repeats)
        rows[label] = {"wall_s": wall, "cpu_s": cpu, "pairs_per_s_wall": n / wall, "pairs_per_s_cpu": n / cpu}
        if out is not None:
            logps[label] = out
        print(f"  {size:10s} {label:38s} wall {wall:8.2f} s  cpu {cpu:8.2f} s  "
              f"{n / wall:8.1f} pairs/s (wall)  {n / cpu:8.1f} pairs/s (cpu)", flush=True)

    ts = next((k for k in rows if k.startswith("taskspace") and "no prefix" not in k), None)
    report = {"size": size, "pairs": n, "pairs_per_task": per_task, "threads": torch.get_num_threads(),
              "batch_tokens": args.batch_tokens, "results": rows, "ratios": {}, "max_abs_logp_diff": {}}
    for label in rows:
        if ts is None or label == ts:
            continue
        for clock in ("cpu", "wall"):
            report["ratios"][f"{ts} / {label} ({clock})"] = rows[label][f"{clock}_s"] / rows[ts][f"{clock}_s"]
    for label, lp in logps.items():
        if ts is not None and label != ts:
            report["max_abs_logp_diff"][f"{ts} vs {label}"] = float(np.max(np.abs(lp - logps[ts])))
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,gpt2-small", help="comma-separated: tiny, gpt2-small")
    ap.add_argument("--blimp", default=str(SHARED / "data" / "blimp"))
    ap.add_argument("--model", default=str(SHARED / "models" / "gutenberg-gpt2-5m"))
    ap.add_argument("--revision", default="step2577")
    ap.add_argument("--pairs-per-task", type=int, default=None,
                    help="first N pairs of each paradigm (default: 100 for tiny, 10 for gpt2-small)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = the headline figure)")
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--minicons-batches", default="32,64")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--bare-only", action="store_true",
                    help="time the bare forward pass only (comparing library versions, issue 11)")
    args = ap.parse_args(argv)
    args.minicons_batches = [int(b) for b in args.minicons_batches.split(",") if b]

    import torch

    torch.set_num_threads(args.threads)
    reports = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        print(f"[{size}] threads={args.threads}", flush=True)
        rep = bench_size(size, args)
        reports.append(rep)
        for k, v in rep["ratios"].items():
            print(f"  ratio {k:70s} {v:6.2f}x")
        for k, v in rep["max_abs_logp_diff"].items():
            print(f"  max |logp diff| {k:60s} {v:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
