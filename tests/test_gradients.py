"""Gradient differentials ḡ_t, module names, the Gram matrix and the gradient space."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer
from taskspace.probes import TaskGradients, gradient_space, layer_index, module_of, param_modules, task_gradients
from taskspace.probes.gradient import differentials as gradients_mod
from taskspace.scoring import Scorer, batch_logprobs
from taskspace.suites import Pair, Suite

F64 = torch.float64
PAIRS = [
    ("sv", "agr", "the cat sleeps .", "the cat sleep ."),
    ("sv", "agr", "the teachers who see the dog sleep .", "the teachers who see the dog sleeps ."),
    ("sv", "agr", "these girls sleep .", "these girls sleeps ."),
    ("det", "agr", "this dog ran .", "these dog ran ."),
    ("det", "agr", "those boys never sleep .", "that boys never sleep ."),
    ("refl", "ana", "the girl saw herself .", "the girl saw himself ."),
    ("refl", "ana", "the boys who ran saw themselves !", "the boys who ran saw itself !"),
]


def make_suite(rows=PAIRS) -> Suite:
    return Suite([Pair(t, g, str(i), good, bad) for i, (t, g, good, bad) in enumerate(rows)], name="mini")


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


@pytest.fixture(scope="module")
def model64(tok):
    return make_tiny_model("gpt2", vocab_size=len(tok), seed=3, dtype=torch.float64)


def mean_margin(model, tok, pairs) -> float:
    """The task's mean margin under the scorer's convention (sum of log-probs given BOS)."""
    scorer = Scorer(model, tok)
    ids = scorer.encode([s for p in pairs for s in (p.good, p.bad)])
    with torch.no_grad():
        lp = batch_logprobs(model, ids, pad_id=0)
    return float((lp[0::2] - lp[1::2]).mean())


# -- the sign and the value: central finite differences in float64 ---------------------------------

@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_gradient_equals_negative_finite_difference_of_mean_margin(tok, arch):
    model = make_tiny_model(arch, vocab_size=len(tok), seed=1, dtype=torch.float64)
    suite = make_suite()
    grads = task_gradients(model, tok, suite, progress=False, storage_dtype=F64)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    eps = 1e-6
    for task in ("sv", "refl") if arch == "gpt2" else ("refl",):
        pairs = suite.pairs_of(task)
        g = grads.get(task)
        # several coordinates: the largest |ḡ| entries and random ones from different tensors
        flat = grads.flat(task)
        coords = [int(i) for i in flat.abs().topk(2).indices]
        coords += [int(torch.randint(flat.numel(), (1,), generator=gen)) for _ in range(2)]
        offsets = np.cumsum([0] + [p.numel() for p in params.values()])
        names = list(params)
        for c in coords:
            k = int(np.searchsorted(offsets, c, side="right") - 1)
            name, j = names[k], c - offsets[k]
            p = params[name]
            with torch.no_grad():
                old = p.view(-1)[j].item()
                p.view(-1)[j] = old + eps
                up = mean_margin(model, tok, pairs)
                p.view(-1)[j] = old - eps
                down = mean_margin(model, tok, pairs)
                p.view(-1)[j] = old
            fd = (up - down) / (2 * eps)
            # ḡ = −∇ mean margin; abs: the rounding noise of a central difference, |margin|·2⁻⁵²/eps ≈ 1e-9
            assert g[name].view(-1)[j].item() == pytest.approx(-fd, rel=1e-6, abs=5e-9), (task, name, j)
        # a directional derivative along a random direction over all parameters
        d = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
        h = 1e-6
        with torch.no_grad():
            for n, p in params.items():
                p.add_(h * d[n])
            up = mean_margin(model, tok, pairs)
            for n, p in params.items():
                p.sub_(2 * h * d[n])
            down = mean_margin(model, tok, pairs)
            for n, p in params.items():
                p.add_(h * d[n])
        directional = sum(float((g[n].double() * d[n]).sum()) for n in params)
        assert directional == pytest.approx(-(up - down) / (2 * h), rel=1e-5)
        assert abs(directional) > 1e-3          # a real, non-trivial check


def test_swapped_pairs_give_exactly_the_negated_gradient(tok, model64):
    rows = [r for r in PAIRS if r[0] == "sv"]
    swapped = [("sv_swapped", "agr", bad, good) for _, _, good, bad in rows]
    grads = task_gradients(model64, tok, make_suite(rows + swapped), progress=False, storage_dtype=F64)
    a, b = grads.flat("sv"), grads.flat("sv_swapped")
    assert torch.allclose(a, -b, atol=1e-12)
    space, _ = gradient_space(grads)
    assert space.matrix[0, 1] == pytest.approx(-1.0, abs=1e-9)


# -- batching, padding, one pair at a time ------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_batched_equals_one_at_a_time_and_padding_is_inert(tok, arch):
    model = make_tiny_model(arch, vocab_size=len(tok), seed=2, dtype=torch.float64)
    suite = make_suite()
    # batch_tokens=1: one sentence per batch, so no padding at all
    batched = task_gradients(model, tok, suite, batch_tokens=4096, progress=False, storage_dtype=F64)
    unpadded = task_gradients(model, tok, suite, batch_tokens=1, progress=False, storage_dtype=F64)
    for t in suite.tasks:
        assert torch.allclose(batched.flat(t), unpadded.flat(t), atol=1e-11, rtol=1e-9)
        # ḡ_t is the mean of the single-pair gradients
        singles = [task_gradients(model, tok, Suite([p]), progress=False, storage_dtype=F64).flat(t) for p in suite.pairs_of(t)]
        assert torch.allclose(batched.flat(t), torch.stack(singles).mean(0), atol=1e-11, rtol=1e-9)


def test_identical_pairs_count_but_contribute_nothing(tok, model64):
    rows = [PAIRS[0], ("sv", "agr", "the dog sleeps .", "the dog sleeps .")]
    both = task_gradients(model64, tok, make_suite(rows), progress=False, storage_dtype=F64)
    one = task_gradients(model64, tok, make_suite(rows[:1]), progress=False, storage_dtype=F64)
    assert both.n_pairs["sv"] == 2
    assert torch.allclose(both.flat("sv"), one.flat("sv") / 2, atol=1e-13)
    only_identical = task_gradients(model64, tok, make_suite(rows[1:]), progress=False, storage_dtype=F64)
    assert float(only_identical.flat("sv").abs().max()) == 0.0
    space, _ = gradient_space(only_identical)
    assert np.isnan(space.matrix[0, 0])


def test_model_state_is_restored(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=4)
    model.train()
    frozen = "transformer.wpe.weight"
    model.get_parameter(frozen).requires_grad_(False)
    old_grad = torch.full_like(model.get_parameter("transformer.ln_f.bias"), 7.0)
    model.get_parameter("transformer.ln_f.bias").grad = old_grad
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = task_gradients(model, tok, make_suite(), progress=False)
    assert model.training
    for n, p in model.named_parameters():
        assert p.requires_grad == (n != frozen)
        assert torch.equal(p, before[n])
        if n == "transformer.ln_f.bias":
            assert p.grad is old_grad
        else:
            assert p.grad is None
    # the frozen tensor still gets its differential (all parameters are probed)
    assert float(grads.get("sv")[frozen].abs().sum()) > 0


# -- module names ------------------------------------------------------------------------------------

def test_module_mapping_gpt2_covers_every_parameter_once(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok))
    mods = param_modules(model)
    assert sum(model.get_parameter(n).numel() for n in mods) == sum(p.numel() for p in model.parameters())
    assert "lm_head.weight" not in mods                 # tied to wte: counted once, as embed
    assert mods["transformer.wte.weight"] == "embed"
    assert mods["transformer.wpe.weight"] == "embed"
    assert mods["transformer.h.0.ln_1.weight"] == "block0.norm"
    assert mods["transformer.h.1.ln_2.bias"] == "block1.norm"
    assert mods["transformer.h.1.attn.c_attn.weight"] == "block1.attn"
    assert mods["transformer.h.0.mlp.c_proj.bias"] == "block0.mlp"
    assert mods["transformer.ln_f.weight"] == "final"
    assert set(mods.values()) == {"embed", "final"} | {f"block{i}.{k}" for i in (0, 1)
                                                       for k in ("norm", "attn", "mlp")}
    assert module_of("transformer.h.1.mlp.c_fc.weight", model) == "block1.mlp"


def test_module_mapping_gpt_neox_and_llama_names(tok):
    model = make_tiny_model("gpt_neox", vocab_size=len(tok))
    mods = param_modules(model)
    assert len(mods) == len(list(model.parameters()))
    assert mods["gpt_neox.embed_in.weight"] == "embed"
    assert mods["gpt_neox.layers.0.input_layernorm.weight"] == "block0.norm"
    assert mods["gpt_neox.layers.0.post_attention_layernorm.bias"] == "block0.norm"
    assert mods["gpt_neox.layers.1.attention.query_key_value.weight"] == "block1.attn"
    assert mods["gpt_neox.layers.1.attention.dense.bias"] == "block1.attn"
    assert mods["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"] == "block0.mlp"
    assert mods["gpt_neox.final_layer_norm.weight"] == "final"
    head = [n for n in mods if model.get_parameter(n) is model.get_output_embeddings().weight]
    assert head and mods[head[0]] == "final"              # untied head
    assert "other" not in mods.values() and not any(m.endswith(".other") for m in mods.values())
    # Llama-style names, by pattern alone
    assert module_of("model.embed_tokens.weight") == "embed"
    assert module_of("model.layers.3.self_attn.q_proj.weight") == "block3.attn"
    assert module_of("model.layers.3.post_attention_layernorm.weight") == "block3.norm"
    assert module_of("model.layers.12.mlp.gate_proj.weight") == "block12.mlp"
    assert module_of("model.norm.weight") == "final"
    assert module_of("lm_head.weight") == "final"
    assert layer_index("block12.mlp") == 12 and layer_index("embed") is None and layer_index("final") is None


# -- Gram matrix, storage ------------------------------------------------------------------------------

def _dense(grads: TaskGradients):
    """The Gram matrices computed the obvious way: whole flattened gradients in float64."""
    def stack(names):
        return torch.stack([torch.cat([grads.get(t)[n].double().reshape(-1) for n in names])
                            for t in grads.tasks])

    flat = stack(grads.param_names)
    per = {}
    for m in set(grads.modules.values()):
        r = stack([n for n in grads.param_names if grads.modules[n] == m])
        per[m] = (r @ r.T).numpy()
    return (flat @ flat.T).numpy(), per


@pytest.mark.parametrize("block", [1 << 24, 97])      # 97 elements: forces many row chunks per tensor
def test_streamed_gram_equals_dense(tok, monkeypatch, block):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=5)
    grads = task_gradients(model, tok, make_suite(), progress=False)
    monkeypatch.setattr(gradients_mod, "_GRAM_BLOCK", block)
    total, per = grads.gram(per_module=True)
    dense_total, dense_per = _dense(grads)
    np.testing.assert_allclose(total, dense_total, rtol=1e-5, atol=1e-6 * float(np.abs(dense_total).max()))
    assert set(per) == set(dense_per)
    for m in per:
        np.testing.assert_allclose(per[m], dense_per[m], rtol=1e-4, atol=1e-6 * float(np.abs(dense_total).max()))
    np.testing.assert_allclose(sum(per.values()), total, rtol=1e-12)
    norms = grads.norms()
    np.testing.assert_allclose(np.sqrt(np.diag(total)), [norms[t] for t in grads.tasks], rtol=1e-5)


def test_store_on_disk_equals_memory(tok, tmp_path, monkeypatch):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=6)
    suite = make_suite()
    mem = task_gradients(model, tok, suite, progress=False)
    disk = task_gradients(model, tok, suite, progress=False, store=tmp_path / "g")
    assert disk.tasks == mem.tasks
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(
        ["index.json"] + [f"{t}.safetensors" for t in suite.tasks])
    reopened = TaskGradients.open(tmp_path / "g")
    assert reopened.tasks == mem.tasks and reopened.groups == mem.groups and reopened.modules == mem.modules
    for t in suite.tasks:
        a, b = mem.get(t), reopened.get(t)
        assert list(a) == list(b)
        assert all(torch.equal(a[n], b[n]) for n in a)
    monkeypatch.setattr(gradients_mod, "_GRAM_BLOCK", 200)
    np.testing.assert_array_equal(mem.gram()[0], reopened.gram()[0])
    half = task_gradients(model, tok, suite, progress=False, store=tmp_path / "h", storage_dtype="bfloat16")
    assert half.get("sv")["transformer.wte.weight"].dtype == torch.float32   # returned as float32
    for t in suite.tasks:
        assert torch.allclose(half.flat(t), mem.flat(t), rtol=1e-2, atol=1e-2 * float(mem.flat(t).abs().max()))
    s_mem, _ = gradient_space(mem)
    s_half, _ = gradient_space(half)
    np.testing.assert_allclose(s_half.matrix, s_mem.matrix, atol=1e-2)


def test_unsafe_task_ids_get_distinct_files(tok, tmp_path):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=6)
    rows = [("a/b", "g", *PAIRS[0][2:]), ("a_b", "g", *PAIRS[1][2:]), ("../x", "g", *PAIRS[2][2:])]
    grads = task_gradients(model, tok, make_suite(rows), progress=False, store=tmp_path / "g")
    files = [p for p in (tmp_path / "g").iterdir() if p.suffix == ".safetensors"]
    assert len(files) == 3 and all(p.parent == tmp_path / "g" for p in files)
    assert not torch.equal(grads.flat("a/b"), grads.flat("a_b"))


# -- the gradient space -----------------------------------------------------------------------------

def test_gradient_space_is_the_cosine_overall_and_per_module(tok):
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=7)
    grads = task_gradients(model, tok, make_suite(), progress=False)
    space, by_module = gradient_space(grads)
    assert space.kind == "gradients" and space.tasks == ["sv", "det", "refl"]
    assert space.groups == ["agr", "agr", "ana"]
    for i, a in enumerate(space.tasks):
        for j, b in enumerate(space.tasks):
            ga, gb = grads.flat(a).double(), grads.flat(b).double()
            cos = float(ga @ gb / (ga.norm() * gb.norm()))
            assert space.matrix[i, j] == pytest.approx(cos, abs=1e-5)
    assert list(by_module) == ["embed", "block0.norm", "block0.attn", "block0.mlp", "block1.norm",
                               "block1.attn", "block1.mlp", "final"]
    emb = by_module["embed"]
    ga, gb = (grads.get(t)["transformer.wte.weight"].double().reshape(-1) for t in ("sv", "refl"))
    pa, pb = (grads.get(t)["transformer.wpe.weight"].double().reshape(-1) for t in ("sv", "refl"))
    va, vb = torch.cat([ga, pa]), torch.cat([gb, pb])
    assert emb.matrix[0, 2] == pytest.approx(float(va @ vb / (va.norm() * vb.norm())), abs=1e-5)
    assert emb.provenance["module"] == "embed"
    for key in ("model", "convention", "suite", "versions", "created", "probe", "n_train_pairs"):
        assert key in space.provenance
    assert space.provenance["convention"]["prefix_token"] == "<s>"
    assert np.allclose(space.matrix, space.matrix.T) and np.allclose(np.diag(space.matrix), 1.0)
    assert math.isfinite(space.within_between()["difference"])
