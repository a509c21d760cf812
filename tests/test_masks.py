"""Masks, overlap, participation ratio, module shares, and TaskSpace round trips through the output layout."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer
from taskspace.errors import InputError
from taskspace.probes import (
    ProbeSettings,
    compute_masks,
    distributedness,
    jaccard,
    load_mask,
    mask_size,
    module_shares,
    overlap_space,
    participation_ratio,
    random_mask,
    save_mask,
    task_gradients,
    threshold_mask,
    top_fraction_mask,
)
from taskspace.probes.gradient.masks import overlap_matrix, pack
from taskspace.probes.output import read_spaces, write_gradient_spaces, write_space
from taskspace.spaces import TaskSpace
from taskspace.suites import Pair, Suite


def rand_grad(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(7, 5, generator=g), "b": torch.randn(5, generator=g),
            "s": torch.randn((), generator=g), "e": torch.randn(3, 4, generator=g)}


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.1, 0.333, 0.5, 0.99, 1.0])
def test_top_fraction_mask_has_exact_size_and_the_largest_entries(fraction):
    g = rand_grad(1)
    n = sum(v.numel() for v in g.values())
    m = top_fraction_mask(g, fraction)
    assert list(m) == list(g) and all(m[k].shape == g[k].shape and m[k].dtype == torch.bool for k in g)
    k = round(fraction * n)
    assert mask_size(m) == k
    inside = torch.cat([g[n_][m[n_]].abs().reshape(-1) for n_ in g])
    outside = torch.cat([g[n_][~m[n_]].abs().reshape(-1) for n_ in g])
    if 0 < k < n:
        assert float(inside.min()) > float(outside.max())
    # the reference: sort all |g| and take the k largest
    flat = torch.cat([v.reshape(-1).abs() for v in g.values()])
    ref = torch.zeros_like(flat, dtype=torch.bool)
    ref[flat.argsort(descending=True)[:k]] = True
    got = torch.cat([m[n_].reshape(-1) for n_ in g])
    assert torch.equal(got, ref)


def test_top_fraction_ties_are_broken_by_position_and_sign_does_not_matter():
    g = {"a": torch.tensor([1.0, -1.0, 1.0, 1.0, 0.5]), "b": torch.tensor([-1.0, 1.0, 3.0, 0.0, 1.0])}
    m = top_fraction_mask(g, 0.4)                # 4 of 10: the 3.0, then the first three ±1.0
    assert m["a"].tolist() == [True, True, True, False, False]
    assert m["b"].tolist() == [False, False, True, False, False]
    assert torch.equal(top_fraction_mask(g, 0.4)["a"], m["a"])    # deterministic
    neg = {k: -v for k, v in g.items()}
    assert all(torch.equal(top_fraction_mask(neg, 0.4)[k], m[k]) for k in g)


def test_the_cut_is_torchs_kthvalue_with_ties_nans_and_zeros():
    """The mask's cut (numpy's introselect on the CPU) is the element torch.kthvalue picks, for every k,
    on data with heavy ties, zeros and NaNs (which ``_flat_abs`` maps below every magnitude)."""
    from taskspace.probes.gradient.masks import _flat_abs, _kth_smallest

    rng = np.random.default_rng(5)
    x = torch.tensor(rng.choice([0.0, 0.5, 1.0, 2.0, float("nan")], size=101).astype(np.float32)
                     * rng.choice([-1, 1], size=101).astype(np.float32))
    a = _flat_abs({"w": x})
    for k in range(1, a.numel() + 1):
        got = _kth_smallest(a, k)
        assert got.dtype == a.dtype and torch.equal(got, torch.kthvalue(a, k).values), k
    g = torch.tensor(rng.standard_normal(5000).astype(np.float32))
    assert all(torch.equal(_kth_smallest(g, k), torch.kthvalue(g, k).values) for k in (1, 250, 4999, 5000))


def test_threshold_mask_keeps_magnitudes_at_or_above_tau():
    g = {"x": torch.tensor([-2e-3, 1e-3, 5e-4, -1e-3, 0.0, 0.9999e-3])}
    assert threshold_mask(g, 1e-3)["x"].tolist() == [True, True, False, True, False, False]
    assert mask_size(threshold_mask(g, 0.0)) == 6
    with pytest.raises(InputError):
        threshold_mask(g, -1.0)


def test_jaccard_on_hand_built_masks():
    a = {"p": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "q": torch.tensor([True, False])}
    b = {"p": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "q": torch.tensor([True, True])}
    empty = {"p": torch.zeros(4, dtype=torch.bool), "q": torch.zeros(2, dtype=torch.bool)}
    assert jaccard(a, b) == pytest.approx(2 / 5)       # ∩ = p0, q0; ∪ = p0 p1 p2 q0 q1
    assert jaccard(a, a) == 1.0
    assert jaccard(a, empty) == 0.0
    assert math.isnan(jaccard(empty, empty))
    mat = overlap_matrix([pack(a), pack(b), pack(empty)])
    assert mat[0, 1] == mat[1, 0] == pytest.approx(0.4)
    assert mat[0, 0] == mat[1, 1] == 1.0 and mat[0, 2] == 0.0 and math.isnan(mat[2, 2])
    # packing pads to whole bytes: a mask of 13 entries must not gain phantom bits
    odd = {"p": torch.ones(13, dtype=torch.bool)}
    half = {"p": torch.tensor([True] * 6 + [False] * 7)}
    assert overlap_matrix([pack(odd), pack(half)])[0, 1] == pytest.approx(6 / 13)


def test_random_mask_size_seed_and_shapes():
    shapes = {"w": (7, 5), "b": (5,), "s": ()}
    n = 41
    m = random_mask(shapes, 0.25, seed=3)
    assert mask_size(m) == round(0.25 * n)
    assert {k: tuple(v.shape) for k, v in m.items()} == {"w": (7, 5), "b": (5,), "s": ()}
    assert all(torch.equal(m[k], random_mask(shapes, 0.25, seed=3)[k]) for k in m)
    assert not all(torch.equal(m[k], random_mask(shapes, 0.25, seed=4)[k]) for k in m)
    assert mask_size(random_mask(shapes, 17, seed=0)) == 17          # an exact count
    assert mask_size(m, relative=True) == pytest.approx(round(0.25 * n) / n)


def test_participation_ratio_bounds():
    n = 40
    uniform = {"a": torch.tensor([1.0, -1.0] * 10), "b": torch.full((20,), -1.0)}
    one_hot = {"a": torch.zeros(20), "b": torch.zeros(20)}
    one_hot["b"][3] = -5.0
    assert participation_ratio(uniform) == pytest.approx(1.0)
    assert participation_ratio(one_hot) == pytest.approx(1 / n)
    pr = participation_ratio(rand_grad(2))
    assert 1 / 53 < pr < 1
    assert math.isnan(participation_ratio({"a": torch.zeros(3)}))
    # two equal entries out of n: (2x)² / (n · 2x²) = 2/n
    two = {"a": torch.zeros(n)}
    two["a"][[1, 7]] = torch.tensor([3.0, -3.0])
    assert participation_ratio(two) == pytest.approx(2 / n)


def test_module_shares_follow_the_module_map():
    g = {"transformer.wte.weight": torch.tensor([[1.0, -1.0]]), "transformer.h.0.mlp.c_fc.weight":
         torch.tensor([2.0, 0.0]), "transformer.h.0.attn.c_attn.bias": torch.tensor([-4.0]),
         "transformer.ln_f.weight": torch.tensor([0.0])}
    shares = module_shares(g, None)                  # by name patterns alone
    assert list(shares) == ["embed", "block0.attn", "block0.mlp", "final"]
    assert shares == pytest.approx({"embed": 0.25, "block0.attn": 0.5, "block0.mlp": 0.25, "final": 0.0})
    assert module_shares(g, {n: "x" for n in g}) == {"x": 1.0}


def test_save_and_load_mask(tmp_path):
    m = top_fraction_mask(rand_grad(4), 0.2)
    p = save_mask(m, tmp_path / "m" / "task.safetensors", {"task": "t"})
    back = load_mask(p)
    assert list(back) == list(m) and all(torch.equal(back[k], m[k]) for k in m)
    from safetensors.torch import save_file

    save_file({"w": torch.tensor([0, 1, 1], dtype=torch.uint8)}, str(tmp_path / "u8.safetensors"))
    assert load_mask(tmp_path / "u8.safetensors")["w"].tolist() == [False, True, True]
    save_file({"w": torch.tensor([0.5])}, str(tmp_path / "f.safetensors"))
    with pytest.raises(InputError, match="field 'w'"):
        load_mask(tmp_path / "f.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="junk.safetensors"):
        load_mask(tmp_path / "junk.safetensors")


# -- masks of real gradient differentials ----------------------------------------------------------------

@pytest.fixture(scope="module")
def grads():
    tok = make_word_tokenizer()
    model = make_tiny_model("gpt2", vocab_size=len(tok), seed=8)
    rows = [("sv", "agr", "the cat sleeps .", "the cat sleep ."), ("sv", "agr", "these girls sleep .", "these girls sleeps ."),
            ("det", "agr", "this dog ran .", "these dog ran ."), ("refl", "ana", "the girl saw herself .", "the girl saw himself .")]
    suite = Suite([Pair(t, g, str(i), a, b) for i, (t, g, a, b) in enumerate(rows)])
    return task_gradients(model, tok, suite, progress=False), model


def test_overlap_space_and_masks_from_settings(grads):
    gr, model = grads
    masks = compute_masks(gr, ProbeSettings(mask_fraction=0.1), model)
    n = gr.n_parameters
    for t in gr.tasks:
        assert mask_size(masks[t]) == round(0.1 * n)
    space = overlap_space(gr, fraction=0.1)
    assert space.kind == "overlap" and np.allclose(np.diag(space.matrix), 1.0)
    for i, a in enumerate(gr.tasks):
        for j, b in enumerate(gr.tasks):
            assert space.matrix[i, j] == pytest.approx(jaccard(masks[a], masks[b]))
    assert space.provenance["mask"] == {"kind": "gradient", "fraction": 0.1, "threshold": None, "seed": None}
    # the random-mask control: same sizes, different parameters, seeded
    rnd = compute_masks(gr, ProbeSettings(mask_fraction=0.1, mask_kind="random", seed=1))
    for t in gr.tasks:
        assert mask_size(rnd[t]) == mask_size(masks[t])
    assert 0.0 < jaccard(rnd["sv"], rnd["det"]) < 0.2    # independent 10% masks: ≈ 0.05
    # threshold masks, and random masks of the same (per-task) size
    thr = compute_masks(gr, ProbeSettings(mask_threshold=1e-3))
    rthr = compute_masks(gr, ProbeSettings(mask_threshold=1e-3, mask_kind="random"))
    for t in gr.tasks:
        g = gr.get(t)
        expect = sum(int((v.abs() >= 1e-3).sum()) for v in g.values())
        assert mask_size(thr[t]) == expect == mask_size(rthr[t])


def test_distributedness_table(grads):
    gr, model = grads
    masks = compute_masks(gr, ProbeSettings(mask_fraction=0.05))
    df = distributedness(gr, masks, model)
    assert list(df["task"]) == gr.tasks and list(df["group"]) == gr.groups
    share_cols = [c for c in df.columns if c.startswith("share:")]
    assert share_cols[0] == "share:embed" and share_cols[-1] == "share:final"
    np.testing.assert_allclose(df[share_cols].sum(axis=1), 1.0)
    np.testing.assert_allclose(df["mask_size"], round(0.05 * gr.n_parameters) / gr.n_parameters)
    norms = gr.norms()
    np.testing.assert_allclose(df["grad_norm"], [norms[t] for t in gr.tasks], rtol=1e-6)
    assert ((df["participation_ratio"] > 1 / gr.n_parameters) & (df["participation_ratio"] < 1)).all()
    assert ((df["layer_centroid"] >= 0) & (df["layer_centroid"] <= 1)).all()


# -- TaskSpace round trips through the output layout -------------------------------------------------------

def test_taskspace_round_trip_with_ci_and_module_spaces(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 3)) / 3
    lo, hi = m - 0.1, m + 0.1
    lo[0, 1] = np.nan
    prov = {"probe": "gradients", "settings": {"seed": 1, "tasks": None}, "x": [1, 2.5]}
    s = TaskSpace(m, ["a", "b", "c"], ["g", "g", "h"], "transfer_margin", prov, lo, hi)
    mods = {"block0.attn": TaskSpace(m * 2, s.tasks, s.groups, "gradients", dict(prov, module="block0.attn")),
            "embed": TaskSpace(-m, s.tasks, s.groups, "gradients", dict(prov, module="embed"))}
    write_gradient_spaces(tmp_path, s, mods, name="gradients")
    write_space(tmp_path, "transfer_margin", s)
    assert (tmp_path / "spaces" / "gradients_by_module" / "block0.attn.csv").exists()
    assert (tmp_path / "spaces" / "gradients_by_module" / "block0.attn.json").exists()
    back = read_spaces(tmp_path)
    assert set(back) == {"gradients", "transfer_margin", "gradients_by_module/block0.attn",
                         "gradients_by_module/embed"}
    for key, orig in [("transfer_margin", s), ("gradients", s), ("gradients_by_module/block0.attn", mods["block0.attn"]),
                      ("gradients_by_module/embed", mods["embed"])]:
        b = back[key]
        assert np.array_equal(b.matrix, orig.matrix)               # bit-exact
        assert b.tasks == orig.tasks and b.groups == orig.groups and b.kind == orig.kind
        assert b.provenance == orig.provenance
    t = back["transfer_margin"]
    assert np.array_equal(t.ci_low, lo, equal_nan=True) and np.array_equal(t.ci_high, hi)


def test_random_mask_is_uniform_and_bitset_equal():
    """Every position is equally likely (no bias to early positions or to one tensor), the size is
    exact, and the bitset built one tensor at a time is the same mask."""
    from taskspace.probes.gradient.bitsets import random_bitset

    shapes = {"a": (6, 5), "b": (10,), "c": (2, 2, 5)}
    n = 60
    counts = np.zeros(n)
    for seed in range(3000):
        m = random_mask(shapes, 0.2, seed=seed)
        flat = torch.cat([m[k].reshape(-1) for k in shapes]).numpy()
        assert flat.sum() == 12
        counts += flat
    # each position is chosen with probability 0.2: 600 ± 22 expected per position
    assert np.abs(counts - 600).max() < 5 * np.sqrt(3000 * 0.2 * 0.8)
    # no trend with position (ties broken by position would favour early entries)
    assert abs(np.corrcoef(np.arange(n), counts)[0, 1]) < 0.4
    bits = random_bitset(shapes, 0.2, seed=7)
    ref = random_mask(shapes, 0.2, seed=7)
    assert all(torch.equal(bits[k], ref[k]) for k in shapes)
