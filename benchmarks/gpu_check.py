"""One-shot GPU check (issue 9): CPU-vs-GPU agreement and timings on a Pythia-160M-shaped random model.

    python benchmarks/gpu_check.py               # on a CUDA machine: checks + timings, one table
    python benchmarks/gpu_check.py --cpu-smoke   # anywhere: the same checks, CPU float32 vs CPU float64,
                                                 # on a tiny shape (what CI runs)

Checks (float32 on both sides):

- scores: per-sentence log-probabilities of the reference and the device agree within 1e-4;
- gradient cosines: the exact gradient space agrees within 1e-4, and the sketch space too (its
  hashes are computed on the tensor's device, so CPU and GPU use the same buckets and signs);
- FTGD restore: after a masked fine-tuning on the device every weight is bit-for-bit what it was.

Timings (device): scoring all eval pairs, the gradient + overlap probes (exact and sketch, and with
bfloat16 autocast), and one transfer row (FTGD on one task, evaluated on every task). Without CUDA and
without ``--cpu-smoke`` it prints "no CUDA" and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
WORDS = ("the a this that these those cat cats dog dogs girl girls boy boys teacher teachers sleeps sleep "
         "runs run sees see saw ran herself himself themselves itself who never ever nobody somebody .").split()


class Loaded:
    def __init__(self, model, tokenizer, name):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    def describe(self):
        return {"model": self.name, "architecture": type(self.model).__name__,
                "device": str(next(self.model.parameters()).device)}


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def toy_suite():
    from taskspace.suites import Pair, Suite

    rows = []
    for n_s, n_p in [("cat", "cats"), ("dog", "dogs"), ("girl", "girls"), ("boy", "boys"), ("teacher", "teachers")]:
        rows.append(("sv", "agr", f"the {n_s} sleeps .", f"the {n_s} sleep ."))
        rows.append(("sv", "agr", f"the {n_p} sleep .", f"the {n_p} sleeps ."))
        rows.append(("det", "agr", f"this {n_s} ran .", f"these {n_s} ran ."))
        rows.append(("det", "agr", f"those {n_p} ran .", f"that {n_p} ran ."))
        rows.append(("refl", "ana", f"the {n_s} saw itself .", f"the {n_s} saw themselves ."))
        rows.append(("npi", "npi", f"nobody ever saw the {n_s} .", f"somebody ever saw the {n_s} ."))
    return Suite([Pair(t, g, str(i), a, b) for i, (t, g, a, b) in enumerate(rows)], name="toy")


def build(shape: str, vocab: int, dtype):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    dims = {"pythia160m": (12, 768, 12), "tiny": (2, 64, 2)}[shape]
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=dims[1], num_hidden_layers=dims[0],
                        num_attention_heads=dims[2], intermediate_size=4 * dims[1], max_position_embeddings=512,
                        hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False)
    return GPTNeoXForCausalLM(cfg).to(dtype).eval()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shape, CPU float32 vs CPU float64")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=20)
    args = ap.parse_args()
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA")
        return 0
    from taskspace.probes import ProbeSettings, run_gradient_probes
    from taskspace.probes.finetune.ftgd import ftgd
    from taskspace.probes.gradient.differentials import iter_task_gradients
    from taskspace.probes.gradient.sketch_engine import task_bitset
    from taskspace.probes.kinds.transfer import transfer_probe
    from taskspace.scoring import Scorer

    if args.cpu_smoke:
        shape, ref_dtype, dev = "tiny", torch.float64, "cpu"
        tok, suite = word_tokenizer(), toy_suite()
        tasks = tuple(suite.tasks[:3])
        pairs, eval_pairs = 3, 2
    else:
        shape, ref_dtype, dev = "pythia160m", torch.float32, "cuda"
        blimp = SHARED / "data" / "blimp"
        gut = SHARED / "models" / "gutenberg-gpt2-5m" / "step2577"
        if blimp.exists() and gut.exists():
            from transformers import AutoTokenizer

            from taskspace.suites.blimp import load_blimp_folder

            tok, suite = AutoTokenizer.from_pretrained(str(gut)), load_blimp_folder(blimp)
        else:
            tok, suite = word_tokenizer(), toy_suite()
        tasks = tuple(suite.tasks[: args.tasks])
        pairs, eval_pairs = args.pairs, args.pairs
    vocab = 50304 if shape == "pythia160m" else len(tok)
    ref = build(shape, vocab, ref_dtype)                                   # CPU reference
    test = build(shape, vocab, torch.float32).to(dev)                      # the device under test
    steps = 2 if args.cpu_smoke else 5
    settings = ProbeSettings(tasks=tasks, train_pairs=pairs, dev_pairs=0, eval_pairs=eval_pairs, steps=steps,
                             eval_every=steps, bootstrap=10, gradient_mode="exact")
    test_pairs = settings.splits(suite)["test"].pairs
    rows: list[tuple[str, str, str, str]] = []
    times: list[tuple[str, float]] = []

    # scores
    s_ref = Scorer(ref, tok).score_pairs(test_pairs)
    sync(dev)
    t = time.perf_counter()
    s_dev = Scorer(test, tok).score_pairs(test_pairs)
    sync(dev)
    times.append(("scoring (all eval pairs)", time.perf_counter() - t))
    cols = [c for c in ("logp_good", "logp_bad") if c in s_ref.columns] or ["margin"]
    d = max(float(np.max(np.abs(s_ref[c].to_numpy(float) - s_dev[c].to_numpy(float)))) for c in cols)
    rows.append(("scores max |Δ logp|", f"{d:.2e}", "1e-4", "ok" if d <= 1e-4 else "FAIL"))

    # gradient cosines, exact and sketch
    res_ref = {m: run_gradient_probes(Loaded(ref, tok, shape), suite,
                                      ProbeSettings(**{**settings.to_dict(), "gradient_mode": m}), progress=False)
               for m in ("exact", "sketch")}
    for m in ("exact", "sketch"):
        sync(dev)
        t = time.perf_counter()
        r = run_gradient_probes(Loaded(test, tok, shape), suite,
                                ProbeSettings(**{**settings.to_dict(), "gradient_mode": m}), progress=False)
        sync(dev)
        times.append((f"gradient + overlap probes ({m})", time.perf_counter() - t))
        d = float(np.nanmax(np.abs(r.spaces["gradients"].matrix - res_ref[m].spaces["gradients"].matrix)))
        rows.append((f"gradient cosines ({m}) max |Δ|", f"{d:.2e}", "1e-4", "ok" if d <= 1e-4 else "FAIL"))
    sync(dev)
    t = time.perf_counter()
    run_gradient_probes(Loaded(test, tok, shape), suite,
                        ProbeSettings(**{**settings.to_dict(), "gradient_mode": "sketch", "autocast": "bf16"}),
                        progress=False)
    sync(dev)
    times.append(("gradient + overlap probes (sketch, bf16 autocast)", time.perf_counter() - t))

    # FTGD restore, bit for bit, on the device (float32 and under bf16 autocast)
    train_by = settings.splits(suite)["train"].by_task()
    a = tasks[0]
    shapes = {n: tuple(p.shape) for n, p in test.named_parameters()}
    for _, g in iter_task_gradients(test, tok, {a: train_by[a]}, progress=False):
        full = {n: (v if v is not None else torch.zeros(shapes[n], device=dev)) for n, v in g.items()}
        mask = task_bitset(full, shapes, a, settings)
    before = {n: p.detach().clone() for n, p in test.named_parameters()}
    ok = True
    for ac in ("none", "bf16"):
        res = ftgd(test, tok, train_by[a], [], mask, steps=steps, eval_every=steps, autocast=ac)
        ok &= res.ok and all(torch.equal(p.detach(), before[n]) for n, p in test.named_parameters())
    rows.append(("FTGD restore bit-exact", "yes" if ok else "no", "bit-exact", "ok" if ok else "FAIL"))

    # one transfer row: FTGD on one task, evaluated on every task
    import taskspace.probes.kinds.transfer as tr

    orig = tr._in_process

    def one_row(loaded, scorer, job, todo):
        yield from orig(loaded, scorer, job, todo[:1])
        for b in todo[1:]:
            yield b, {"status": "failed", "reason": "not run (gpu_check)"}, {}

    tr._in_process = one_row
    try:
        with tempfile.TemporaryDirectory() as out:
            sync(dev)
            t = time.perf_counter()
            transfer_probe(Loaded(test, tok, shape), suite, settings, out, progress=False)
            sync(dev)
            times.append((f"one transfer row ({steps} steps, eval on all tasks)", time.perf_counter() - t))
    finally:
        tr._in_process = orig

    n_params = sum(p.numel() for p in test.parameters())
    what = "CPU float32 vs CPU float64 (smoke)" if args.cpu_smoke else f"CPU float32 vs {torch.cuda.get_device_name()}"
    print(f"gpu_check: {shape} GPT-NeoX, {n_params:,} parameters, {len(tasks)} tasks × {pairs} pairs; {what}")
    print(f"{'check':<44} {'value':>10} {'tolerance':>10} {'':>5}")
    for r in rows:
        print(f"{r[0]:<44} {r[1]:>10} {r[2]:>10} {r[3]:>5}")
    print(f"{'timing (' + dev + ')':<52} {'seconds':>10}")
    for name, s in times:
        print(f"{name:<52} {s:10.2f}")
    return 0 if all(r[3] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
