"""Scale: gradient sketches, bitset masks, memory flat in tasks, GPT-NeoX and Llama-style models."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer
from taskspace.errors import InputError
from taskspace.probes import ProbeSettings, run_gradient_probes, task_gradients, top_fraction_mask
from taskspace.probes.gradient.bitsets import BitsetMask, gradient_bitset, overlap_from_bitsets
from taskspace.probes.gradient.differentials import iter_task_gradients
from taskspace.probes.gradient.masks import jaccard, overlap_matrix, pack, threshold_mask
from taskspace.probes.gradient.modules import param_modules
from taskspace.probes.gradient.similarity import resolve_gradient_mode
from taskspace.probes.gradient.sketch import SketchSet, sketch_tensor, tensor_key
from taskspace.suites import Pair, Suite

ROOT = Path(__file__).resolve().parents[1]

ROWS = [
    ("sv", "agr", "the cat sleeps .", "the cat sleep ."),
    ("sv", "agr", "these girls sleep .", "these girls sleeps ."),
    ("sv", "agr", "the teachers who see the dog sleep .", "the teachers who see the dog sleeps ."),
    ("det", "agr", "this dog ran .", "these dog ran ."),
    ("det", "agr", "those boys never sleep .", "that boys never sleep ."),
    ("refl", "ana", "the girl saw herself .", "the girl saw himself ."),
    ("refl", "ana", "the boys who ran saw themselves !", "the boys who ran saw itself !"),
    ("neg", "npi", "nobody ever ran .", "somebody ever ran ."),
    ("neg", "npi", "the dog never ran .", "the dog ever ran ."),
]


def make_suite(n_copies: int = 1) -> Suite:
    """Tasks of ROWS; ``n_copies`` > 1 adds renamed copies of every task (more tasks, same data)."""
    pairs = []
    for c in range(n_copies):
        for i, (t, g, good, bad) in enumerate(ROWS):
            pairs.append(Pair(t if c == 0 else f"{t}{c}", g, f"{c}-{i}", good, bad))
    return Suite(pairs, name="mini")


def make_llama(vocab_size: int, seed: int = 0):
    """A tiny Llama-style model: RMSNorm, gated MLP, rotary positions, untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


class _Loaded:
    """The two attributes of a LoadedModel the probes read, plus ``describe``."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def describe(self):
        return {"architecture": type(self.model).__name__, "name": "tiny"}


# -- the sketch itself --------------------------------------------------------------------------------

def test_sketch_inner_products_are_unbiased():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3000, generator=gen)
    b = 0.5 * a + torch.randn(3000, generator=gen)
    exact = float(a.double() @ b.double())
    dim = 64
    est = np.array([float(sketch_tensor(a, k, dim) @ sketch_tensor(b, k, dim)) for k in range(400)])
    # the mean over independent hash keys converges to the exact inner product
    se = est.std() / math.sqrt(len(est))
    assert abs(est.mean() - exact) < 4 * se
    # and one sketch's error has the size the theory gives: var ≈ (|a|²|b|² + ⟨a,b⟩²) / k
    theory = math.sqrt((float(a @ a) * float(b @ b) + exact ** 2) / dim)
    assert 0.7 * theory < est.std() < 1.3 * theory


def test_sketch_deterministic_and_independent_of_tensor_order():
    shapes = {"w": (7, 5), "b": (5,), "e": (11, 3)}
    modules = {"w": "block0.mlp", "b": "block0.mlp", "e": "embed"}
    gen = torch.Generator().manual_seed(1)
    g = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    s1 = SketchSet(list(shapes), shapes, modules, dim=16, seed=3, module_dim=16)
    s2 = SketchSet(list(shapes), shapes, modules, dim=16, seed=3, module_dim=16)
    t1, m1 = s1.sketch(g)
    t2, m2 = s2.sketch(dict(reversed(list(g.items()))))
    np.testing.assert_array_equal(t1, t2)
    for m in m1:
        np.testing.assert_array_equal(m1[m], m2[m])
    # a tensor's sketch depends on its name and the seed, not on the other tensors
    np.testing.assert_array_equal(sketch_tensor(g["w"], tensor_key(3, "w"), 16).numpy(),
                                  sketch_tensor(g["w"].clone(), tensor_key(3, "w"), 16).numpy())
    other, _ = SketchSet(list(shapes), shapes, modules, dim=16, seed=4, module_dim=16).sketch(g)
    assert not np.allclose(t1, other)
    # a module no larger than module_dim is kept exactly
    s3 = SketchSet(list(shapes), shapes, modules, dim=16, seed=3, module_dim=40)
    _, m3 = s3.sketch(g)
    np.testing.assert_allclose(m3["embed"], g["e"].reshape(-1).numpy())
    assert "embed" in s3.describe()["exact_modules"]


def test_module_sketch_is_the_fold_of_the_total_and_a_count_sketch_itself():
    """A module's sketch (module_dim < dim) is its share of the total sketch folded to module_dim
    buckets, which is the count sketch of the module under the same hash with module_dim buckets;
    the total is the sum of the tensors' sketches."""
    shapes = {"w": (70, 50), "v": (300,), "e": (110, 30)}
    modules = {"w": "block0.mlp", "v": "block0.mlp", "e": "embed"}
    gen = torch.Generator().manual_seed(5)
    g = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    sk = SketchSet(list(shapes), shapes, modules, dim=256, seed=1, module_dim=64)
    total, mods = sk.sketch(g)
    ref_total = sum(sketch_tensor(g[n], tensor_key(1, n), 256) for n in shapes)
    np.testing.assert_allclose(total, ref_total.numpy(), rtol=1e-6, atol=1e-5)
    ref_mlp = sketch_tensor(g["w"], tensor_key(1, "w"), 64) + sketch_tensor(g["v"], tensor_key(1, "v"), 64)
    np.testing.assert_allclose(mods["block0.mlp"], ref_mlp.numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(mods["embed"], sketch_tensor(g["e"], tensor_key(1, "e"), 64).numpy(),
                               rtol=1e-6, atol=1e-5)


# -- bitset masks -------------------------------------------------------------------------------------

def _grads_with_ties(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    g = {"a": torch.randn(13, 7, generator=gen), "b": torch.randn(29, generator=gen),
         "c": torch.randn(5, 3, 2, generator=gen)}
    # ties across tensors, zeros, negative zero and NaN: the tie rule and NaN ranking must match
    g["a"][0, :4] = 0.5
    g["b"][:3] = -0.5
    g["c"][0] = 0.0
    g["b"][5] = float("nan")
    g["a"][2, 2] = -0.0
    return g


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.1, 0.33, 0.9, 0.995, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_bitset_mask_equals_top_fraction_mask(fraction, seed):
    g = _grads_with_ties(seed)
    exact = top_fraction_mask(g, fraction)
    bits = gradient_bitset(g, fraction=fraction)
    for n in g:
        assert torch.equal(bits[n], exact[n]), n
    assert bits.count() == sum(int(m.sum()) for m in exact.values())
    # the in-place variant (keys written over the gradient buffers) gives the same bits
    over = gradient_bitset({n: v.clone() for n, v in g.items()}, fraction=fraction, overwrite=True)
    np.testing.assert_array_equal(over.bits, bits.bits)
    # the fallback (the cut's 16-bit bin holds more entries than the cap) gives the same bits
    np.testing.assert_array_equal(gradient_bitset(g, fraction=fraction, cap=0).bits, bits.bits)


def test_bitset_threshold_mask_and_ties_at_the_cut():
    g = _grads_with_ties(2)
    bits = gradient_bitset(g, fraction=None, threshold=0.5)
    exact = threshold_mask(g, 0.5)
    for n in g:
        assert torch.equal(bits[n], exact[n])
    # a cut inside a run of equal values: 7 entries of 0.5, some of them selected
    flat = torch.cat([v.reshape(-1) for v in g.values()])
    for k in range(int((flat.abs() > 0.5).sum()), int((flat.abs() >= 0.5).sum()) + 1):
        f = k / flat.numel()
        bits = gradient_bitset(g, fraction=f)
        exact = top_fraction_mask(g, f)
        assert all(torch.equal(bits[n], exact[n]) for n in g)


def test_bitset_save_load_and_jaccard_from_bitsets(tmp_path):
    masks = [top_fraction_mask(_grads_with_ties(s), f) for s, f in ((0, 0.1), (1, 0.2), (2, 0.05), (3, 0.0))]
    bitsets = []
    for i, m in enumerate(masks):
        BitsetMask.from_mask(m).save(tmp_path / f"{i}.npy")
        bitsets.append(BitsetMask.load(tmp_path / f"{i}.npy"))
    for m, b in zip(masks, bitsets):
        assert all(torch.equal(m[n], b[n]) for n in m)
    # chunks of 3 bytes: intersections summed over many chunks
    o = overlap_from_bitsets(bitsets, chunk_bytes=3)
    ref = overlap_matrix([pack(m) for m in masks])
    np.testing.assert_array_equal(np.isnan(o), np.isnan(ref))
    np.testing.assert_allclose(o[~np.isnan(o)], ref[~np.isnan(ref)], rtol=0, atol=1e-15)
    assert o[0, 1] == pytest.approx(jaccard(masks[0], masks[1]), abs=1e-15)


# -- the probes in both modes -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


def _probe(model, tok, mode, suite=None, **kw):
    settings = ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=1, gradient_mode=mode, **kw)
    return run_gradient_probes(_Loaded(model, tok), suite or make_suite(), settings, progress=False)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_exact_and_sketch_modes_agree(arch, one_thread):
    tok = make_word_tokenizer(adds_bos=(arch == "llama"))
    model = make_llama(len(tok)) if arch == "llama" else make_tiny_model(arch, vocab_size=len(tok), seed=2)
    exact = _probe(model, tok, "exact")
    sk = _probe(model, tok, "sketch", sketch_dim=8192)
    assert exact.mode == "exact" and sk.mode == "sketch" and not hasattr(sk.grads, "get")
    assert sk.grads.tasks == exact.grads.tasks and sk.grads.convention == exact.grads.convention
    ge, gs = exact.spaces["gradients"].matrix, sk.spaces["gradients"].matrix
    # k = 8192 on ~10⁴–10⁵ coordinates: error ~ 1/√k ≈ 0.011 per entry
    assert np.nanmax(np.abs(ge - gs)) < 0.06
    # per-module spaces: same modules; modules smaller than the sketch are exact
    assert set(exact.by_module) == set(sk.by_module)
    for m in sk.sketches.exact_modules:
        np.testing.assert_allclose(sk.by_module[m].matrix, exact.by_module[m].matrix, atol=1e-5)
    # overlap from bitsets on disk = overlap from exact masks
    np.testing.assert_allclose(sk.spaces["overlap"].matrix, exact.spaces["overlap"].matrix, atol=1e-12)
    de, ds = exact.distributedness, sk.distributedness
    assert list(de.columns) == list(ds.columns)
    for c in ("grad_norm", "participation_ratio", "mask_size", "layer_centroid"):
        np.testing.assert_allclose(ds[c].to_numpy(float), de[c].to_numpy(float), rtol=1e-5)
    prov = sk.spaces["gradients"].provenance
    assert prov["gradient_mode"] == "sketch" and prov["sketch"]["dim"] == 8192 and prov["sketch"]["seed"] == 0
    assert sk.spaces["overlap"].provenance["gradient_mode"] == "sketch"
    assert exact.spaces["gradients"].provenance["gradient_mode"] == "exact"
    # masks readable per task, and the result writes like an exact one
    mask = sk.masks["sv"]
    ref = exact.masks["sv"]
    assert all(torch.equal(mask[n], ref[n]) for n in ref)


def test_sketch_mode_writes_and_random_masks(tmp_path, tok, one_thread):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    sk = _probe(model, tok, "sketch", mask_kind="random", seed=5)
    ex = _probe(model, tok, "exact", mask_kind="random", seed=5)
    np.testing.assert_allclose(sk.spaces["overlap"].matrix, ex.spaces["overlap"].matrix, atol=1e-12)
    paths = sk.write(tmp_path, save_masks=True)
    assert any(p.name == "overlap.csv" for p in paths)
    assert any("masks" in str(p) for p in paths)


def test_auto_mode_rule():
    assert resolve_gradient_mode("auto", 5_000_000, 67) == "exact"
    assert resolve_gradient_mode("auto", 210_000_000, 8) == "sketch"
    assert resolve_gradient_mode("exact", 210_000_000, 67) == "exact"
    with pytest.raises(InputError):
        ProbeSettings(gradient_mode="fast")
    with pytest.raises(InputError):
        ProbeSettings(autocast="fp8")
    with pytest.raises(InputError):
        ProbeSettings(sketch_dim=0)


# -- memory flat in tasks (counted, not timed) ------------------------------------------------------

def test_gradient_buffers_do_not_grow_with_tasks(tok, one_thread):
    """In sketch mode each parameter's .grad buffer is allocated once and reused for every task, and
    what a task leaves behind is k numbers: count distinct buffers and kept numbers at 1× and 4× tasks."""
    import gc
    import warnings

    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    n_params = sum(p.numel() for p in model.parameters())

    def big_tensors() -> set[int]:
        gc.collect()
        with warnings.catch_warnings():   # isinstance() touches torch's deprecated module shims in gc's list
            warnings.simplefilter("ignore", FutureWarning)
            return {o.data_ptr() for o in gc.get_objects()
                    if isinstance(o, torch.Tensor) and o.numel() >= n_params // 4}

    # tensors that other tests left alive (models held by fixtures or caches) are not this test's
    before = big_tensors() | {p.data_ptr() for p in model.parameters()}

    def buffers(suite):
        seen = set()
        for _, g in iter_task_gradients(model, tok, suite.by_task(), reuse=True, progress=False):
            seen |= {v.data_ptr() for v in g.values() if v is not None}
        return len(seen)

    few, many = make_suite(1), make_suite(4)
    assert len(many.tasks) == 4 * len(few.tasks)
    assert buffers(few) == buffers(many) <= len(list(model.parameters()))
    # the exact reference hands one buffer per parameter per task over to its store
    held = task_gradients(model, tok, many, progress=False)
    assert len({v.data_ptr() for t in held.tasks for v in held._mem[t].values()}) > buffers(many)

    # kept per task: sketch numbers only (no tensor of the model's size survives the run)
    res = _probe(model, tok, "sketch", suite=many, sketch_dim=256)
    per_task = res.sketches.numbers_per_task
    assert res.sketches.nbytes == len(many.tasks) * per_task * 4
    assert res.sketches.nbytes < len(many.tasks) * n_params * 4 / 4
    big = big_tensors() - before
    # only the exact reference's own store (held above) holds model-sized tensors
    assert len(big) <= sum(1 for t in held.tasks for v in held._mem[t].values() if v.numel() >= n_params // 4)


# -- architectures through FTGD / transfer ----------------------------------------------------------

def test_module_names_for_three_families(tok):
    ltok = make_word_tokenizer(adds_bos=True)
    for model in (make_tiny_model("gpt2", vocab_size=len(tok)), make_tiny_model("gpt_neox", vocab_size=len(tok)),
                  make_llama(len(ltok))):
        mods = param_modules(model)
        assert "other" not in mods.values() and not any(m.endswith(".other") for m in mods.values())
        assert {"embed", "block0.attn", "block0.mlp", "block0.norm", "block1.mlp", "final"} <= set(mods.values())
    llama = param_modules(make_llama(len(ltok)))
    assert llama["model.layers.0.mlp.gate_proj.weight"] == "block0.mlp"
    assert llama["model.layers.0.input_layernorm.weight"] == "block0.norm"
    assert llama["model.norm.weight"] == "final"
    assert llama["lm_head.weight"] == "final"


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_transfer_row_on_other_architectures(arch, tmp_path, one_thread):
    from taskspace.probes.kinds.transfer import transfer_probe

    tok = make_word_tokenizer(adds_bos=(arch == "llama"))
    model = make_llama(len(tok)) if arch == "llama" else make_tiny_model(arch, vocab_size=len(tok), seed=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = ProbeSettings(tasks=("sv", "det"), train_pairs=1, dev_pairs=0, eval_pairs=1, steps=2,
                             eval_every=1, bootstrap=10)
    spaces = transfer_probe(_Loaded(model, tok), make_suite(), settings, tmp_path, progress=False)
    assert spaces["transfer"].matrix.shape == (2, 2)
    # FTGD restored every weight bit-exactly
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


def test_bf16_autocast_gradients_close_to_float32(tok, one_thread):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    ref = _probe(model, tok, "exact")
    bf = _probe(model, tok, "exact", autocast="bf16")
    assert bf.spaces["gradients"].provenance["autocast"] == "bf16"
    assert np.nanmax(np.abs(ref.spaces["gradients"].matrix - bf.spaces["gradients"].matrix)) < 0.1
    # ḡ accumulates in float32 even under autocast
    for _, g in iter_task_gradients(model, tok, make_suite().by_task(), autocast="bf16", progress=False):
        assert all(v.dtype == torch.float32 for v in g.values() if v is not None)
        break


def test_gpu_check_cpu_smoke():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke"],
                       capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "restore bit-exact" in r.stdout


def test_sketch_mode_threshold_masks_and_store(tmp_path, tok, one_thread):
    """|ḡ| ≥ τ masks in sketch mode: bitsets in STORE/masks equal the exact masks, overlap too."""
    from taskspace.probes.gradient.bitsets import BitsetMask

    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    settings = dict(train_pairs=3, dev_pairs=0, eval_pairs=1, mask_threshold=1e-3)
    ex = run_gradient_probes(_Loaded(model, tok), make_suite(), ProbeSettings(gradient_mode="exact", **settings),
                             progress=False)
    sk = run_gradient_probes(_Loaded(model, tok), make_suite(), ProbeSettings(gradient_mode="sketch", **settings),
                             store=tmp_path / "store", progress=False)
    np.testing.assert_allclose(sk.spaces["overlap"].matrix, ex.spaces["overlap"].matrix, atol=1e-12)
    saved = BitsetMask.load(tmp_path / "store" / "masks" / "sv.npy")
    ref = ex.masks["sv"]
    assert all(torch.equal(saved[n], ref[n]) for n in ref)
    assert sk.spaces["overlap"].provenance["mask"]["threshold"] == 1e-3


def test_sketch_pass_split_over_threads_gives_the_same_results(tok):
    """The sketch mode splits each task's tensors over torch's threads (the scatter, histograms and bit
    packing are serial kernels): on the same gradient, masks are identical and sketches and
    statistics equal to float64 rounding whatever the number of threads."""
    from taskspace.probes.gradient.sketch_engine import StreamedStats, one_pass

    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    modules = param_modules(model)
    grads = [{n: v.clone() for n, v in g.items()}
             for _, g in iter_task_gradients(model, tok, make_suite().by_task(), progress=False)][:3]
    settings = ProbeSettings(mask_fraction=0.1)
    saved = torch.get_num_threads()
    out = {}
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            sk = SketchSet(list(shapes), shapes, modules, dim=512, seed=0, module_dim=128)
            res = []
            for i, g in enumerate(grads):
                st = StreamedStats(modules)
                bits = one_pass(str(i), {n: v.clone() for n, v in g.items()}, set(), sk, st, settings, shapes)
                res.append((bits.bits, st.row(str(i), "g", 1, bits)))
            assert torch.get_num_threads() == threads          # restored after each pass
            out[threads] = (res, sk)
    finally:
        torch.set_num_threads(saved)
    (r1, s1), (r3, s3) = out[1], out[3]
    for (b1, row1), (b3, row3), g in zip(r1, r3, grads):
        np.testing.assert_array_equal(b1, b3)
        exact = top_fraction_mask(g, 0.1)
        assert np.array_equal(b1, BitsetMask.from_mask(exact).bits)
        for c in ("grad_norm", "participation_ratio", "mask_size", "layer_centroid"):
            assert row1[c] == pytest.approx(row3[c], rel=1e-12)
    np.testing.assert_allclose(s1.vectors(), s3.vectors(), rtol=1e-6, atol=1e-12)
    for m in s1.order:
        np.testing.assert_allclose(s1.vectors(m), s3.vectors(m), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("kind", ["top", "threshold", "random", "nan"])
def test_compiled_pass_equals_torch_pass(tok, kind, one_thread):
    """The compiled sweeps (numba, probes/kernels.py) and the chunked torch operations give the same
    masks bit for bit, the same sketches (the same float32 slots summed in the same order) and the
    same statistics to float rounding — for top-fraction, threshold and random masks, and with NaN."""
    from taskspace.probes.gradient import kernels
    from taskspace.probes.gradient.sketch_engine import StreamedStats, one_pass

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install 'taskspace[fast]')")
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=2)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    modules = param_modules(model)
    g = next(iter(iter_task_gradients(model, tok, make_suite().by_task(), progress=False)))[1]
    g = {n: v.clone() for n, v in g.items()}
    if kind == "nan":
        big = max(g, key=lambda n: g[n].numel())
        g[big].view(-1)[:5] = float("nan")
    settings = {"top": ProbeSettings(mask_fraction=0.07), "nan": ProbeSettings(mask_fraction=0.07),
                "threshold": ProbeSettings(mask_threshold=1e-3),
                "random": ProbeSettings(mask_kind="random", mask_fraction=0.07)}[kind]
    out = {}
    for compiled in (False, True):
        sk = SketchSet(list(shapes), shapes, modules, dim=256, seed=0, module_dim=64)
        st = StreamedStats(modules)
        bits = one_pass("sv", {n: v.clone() for n, v in g.items()}, set(), sk, st, settings, shapes,
                         compiled=compiled)
        out[compiled] = (bits.bits, sk, st.row("sv", "agr", 1, bits))
    (b0, s0, r0), (b1, s1, r1) = out[False], out[True]
    np.testing.assert_array_equal(b0, b1)
    np.testing.assert_array_equal(s0.vectors(), s1.vectors())
    for m in s0.order:
        np.testing.assert_array_equal(s0.vectors(m), s1.vectors(m))
    for c in ("grad_norm", "participation_ratio", "mask_size", "layer_centroid"):
        if kind == "nan" and c != "mask_size":      # a NaN gradient has NaN norms on both paths
            assert math.isnan(r0[c]) and math.isnan(r1[c]), c
        else:
            assert r0[c] == pytest.approx(r1[c], rel=1e-5)
    if kind == "top":
        exact = top_fraction_mask(g, 0.07)
        np.testing.assert_array_equal(b1, BitsetMask.from_mask(exact).bits)
