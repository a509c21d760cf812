"""The causal probes (``steering``, ``erasure``, ``steering-estimate``) against independent computations on
tiny GPT-2, GPT-NeoX and Llama models: a hand-edited block forward, bit-exact no-ops, the projection
removed, a finite difference in α, the model restored, and the CLI / plan paths."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer, mini_suite
from taskspace.models.loading import LoadedModel
from taskspace.probes import probe, registry
from taskspace.probes.causal import block_list, intervene, residual_sites
from taskspace.probes.settings import ProbeSettings
from taskspace.scoring import Scorer

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ProbeSettings(train_pairs=2, dev_pairs=1, eval_pairs=2, bootstrap=0)


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer()


def make_model(arch: str, tok, dtype=torch.float64, seed: int = 3):
    if arch != "llama":
        return make_tiny_model(arch, vocab_size=len(tok), seed=seed, dtype=dtype)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg).to(dtype).eval()


#: the final norm per architecture, by hand (the code under test finds sites without such a table)
FINAL_NORM = {"gpt2": lambda m: m.transformer.ln_f, "gpt_neox": lambda m: m.gpt_neox.final_layer_norm,
              "llama": lambda m: m.model.norm}
BLOCKS = {"gpt2": lambda m: m.transformer.h, "gpt_neox": lambda m: m.gpt_neox.layers, "llama": lambda m: m.model.layers}


def hand_margins(model, tok, pairs) -> np.ndarray:
    """m_i = log p(good_i) − log p(bad_i), one sentence at a time, BOS prefix, no batching or padding."""
    def logp(sentence):
        ids = [tok.bos_token_id] + tok(sentence, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        return float(sum(lp[t, ids[t + 1]] for t in range(len(ids) - 1)))
    return np.array([logp(p.good) - logp(p.bad) for p in pairs])


def hand_edited(model, arch: str, layer: int, vec: torch.Tensor):
    """Monkeypatch the forward of the module whose output is the residual stream after ``layer`` (block
    ``layer``, or the final norm for the last layer) so that it adds ``vec`` at positions 1…; returns undo."""
    blocks = BLOCKS[arch](model)
    mod = blocks[layer] if layer < len(blocks) - 1 else FINAL_NORM[arch](model)
    orig = mod.forward

    def forward(*args, **kwargs):
        out = orig(*args, **kwargs)
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[:, 1:] += vec.to(h.dtype)
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    mod.forward = forward
    return lambda: delattr(mod, "forward")


def loaded(model, tok):
    return LoadedModel(model, tok, "tiny", "step1", "memory", "cpu", str(next(model.parameters()).dtype)[6:])


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_sites_are_the_activation_probes_hidden_states(tok, arch):
    model = make_model(arch, tok)
    assert block_list(model) is BLOCKS[arch](model)
    seen = {}
    hooks = [s.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
             for i, s in enumerate(residual_sites(model))]
    try:
        with torch.no_grad():
            hs = model.base_model(input_ids=torch.tensor([[2, 5, 7, 9]]), output_hidden_states=True).hidden_states
    finally:
        for h in hooks:
            h.remove()
    for i in range(2):
        o = seen[i]
        o = o[0] if isinstance(o, tuple) else getattr(o, "last_hidden_state", o)
        assert torch.equal(o, hs[i + 1])


@pytest.mark.parametrize("arch,layer", [("gpt2", 0), ("gpt2", 1), ("gpt_neox", 1), ("llama", 0), ("llama", 1)])
def test_steering_equals_scoring_a_hand_edited_model(tok, arch, layer):
    model = make_model(arch, tok)
    suite = mini_suite()
    res = probe(loaded(model, tok), suite, "steering", SETTINGS, progress=False, layer=layer, alpha=0.7,
                random_directions=1)
    sp = res.spaces["steering"]
    assert res.provenance["layer"] == layer and f"steering_by_layer/layer{layer}" in res.spaces
    test = SETTINGS.splits(suite)["test"]
    scale, dirs = res.extra["scale"], res.extra["directions"]
    # s_ℓ by hand: the RMS of the sentence positions' states over the eval sentences
    sents = list(dict.fromkeys(s for p in test.pairs for s in (p.good, p.bad)))
    sq, n = 0.0, 0
    for s in sents:
        ids = [tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1][0, 1:]
        sq, n = sq + float(h.pow(2).sum()), n + h.shape[0]
    assert scale[layer] == pytest.approx(np.sqrt(sq / n), rel=1e-10)
    i = sp.tasks.index("sv_sing")
    vec = torch.tensor(0.7 * scale[layer] * dirs[layer, i])
    undo = hand_edited(model, arch, layer, vec)
    try:
        steered = {b: hand_margins(model, tok, test.pairs_of(b)) for b in sp.tasks}
    finally:
        undo()
    for j, b in enumerate(sp.tasks):
        want = np.mean(steered[b] - hand_margins(model, tok, test.pairs_of(b)))
        assert sp.matrix[i, j] == pytest.approx(want, rel=1e-8, abs=1e-10)
    # S̃ = S / |S[a, a]|
    np.testing.assert_allclose(res.spaces["steering_normalized"].matrix[i], sp.matrix[i] / abs(sp.matrix[i, i]))


def test_alpha_zero_changes_nothing_bit_for_bit(tok):
    model = make_model("gpt2", tok, dtype=torch.float32)
    res = probe(loaded(model, tok), mini_suite(), "steering", SETTINGS, progress=False, layer=1, alpha=0.0,
                random_directions=1)
    assert np.count_nonzero(res.spaces["steering"].matrix) == 0
    assert np.count_nonzero(res.spaces["steering_random"].matrix) == 0


def dead_coordinate_gpt2(tok, k: int = 5):
    """A tiny GPT-2 whose residual stream has coordinate k = 0 at every layer (nothing writes to it)."""
    model = make_model("gpt2", tok, dtype=torch.float32)
    t = model.transformer
    with torch.no_grad():
        t.wte.weight[:, k] = 0
        t.wpe.weight[:, k] = 0
        for b in t.h:
            for proj in (b.attn.c_proj, b.mlp.c_proj):       # Conv1D: weight [in, out]
                proj.weight[:, k] = 0
                proj.bias[k] = 0
        t.ln_f.weight[k] = 0
        t.ln_f.bias[k] = 0
    return model


def test_erasing_a_direction_orthogonal_to_every_state_changes_nothing(tok):
    model = dead_coordinate_gpt2(tok)
    pairs = SETTINGS.splits(mini_suite())["test"].pairs
    scorer = Scorer(model, tok, share_prefix=False)
    base = scorer.score_pairs(pairs)
    u = np.zeros(32)
    u[5] = 1.0
    for layer in (0, 1):
        with intervene(model, layer, erase=u):
            got = scorer.score_pairs(pairs)
        assert np.array_equal(got["margin"].to_numpy(), base["margin"].to_numpy())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_erasure_removes_the_component_and_leaves_the_prefix(tok, arch):
    model = make_model(arch, tok)
    rng = np.random.default_rng(0)
    u = rng.standard_normal(32)
    u /= np.linalg.norm(u)
    ids = torch.tensor([[2, 8, 9, 10, 11], [2, 12, 13, 14, 15]])
    def grab(out: list):
        return lambda m, a, o: out.append(o[0] if isinstance(o, tuple) else getattr(o, "last_hidden_state", o))

    for layer in (0, 1):
        site = residual_sites(model)[layer]
        seen: list = []
        for erase in (False, True):
            # hooks run in registration order: the capture registered after the erasure sees its result
            with intervene(model, layer, erase=u) if erase else contextlib.nullcontext():
                h = site.register_forward_hook(grab(seen))
                try:
                    with torch.no_grad():
                        model(input_ids=ids)
                finally:
                    h.remove()
        before = seen[0]
        after = seen[1]
        ut = torch.tensor(u)
        assert float((before[:, 1:] @ ut).abs().max()) > 1e-3            # there was a component
        assert float((after[:, 1:] @ ut).abs().max()) < 1e-12            # erased
        assert torch.equal(after[:, 0], before[:, 0])                      # the prefix position untouched
        torch.testing.assert_close(after[:, 1:], before[:, 1:] - (before[:, 1:] @ ut)[..., None] * ut)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_estimate_equals_a_finite_difference_in_alpha(tok, arch):
    model = make_model(arch, tok)
    suite = mini_suite()
    lm = loaded(model, tok)
    est = probe(lm, suite, "steering-estimate", SETTINGS, progress=False, layer=1, random_directions=2)
    tasks = est.spaces["steering_estimate"].tasks
    test = SETTINGS.splits(suite)["test"]
    scale, dirs = est.extra["scale"], est.extra["directions"]
    scorer = Scorer(model, tok, share_prefix=False)
    # Llama's RMSNorm computes in float32 even in a float64 model: a wider step keeps rounding out of the
    # difference quotient (central differences: the step's own error is O(eps²))
    eps = 1e-3 if arch == "llama" else 1e-5
    for layer in (0, 1):
        got = est.spaces[f"steering_estimate_by_layer/layer{layer}"].matrix
        for i in range(len(tasks)):
            m = {}
            for sgn in (1, -1):
                with intervene(model, layer, add=sgn * eps * scale[layer] * dirs[layer, i]):
                    m[sgn] = scorer.score_pairs(test.pairs)
            fd = (m[1]["margin"].to_numpy() - m[-1]["margin"].to_numpy()) / (2 * eps)
            want = [fd[(m[1]["task"] == b).to_numpy()].mean() for b in tasks]
            np.testing.assert_allclose(got[i], want, rtol=1e-3 if arch == "llama" else 1e-6,
                                       atol=1e-5 if arch == "llama" else 1e-8)
    # the chosen layer's space is that layer's, and the random control uses the same seeded directions
    assert np.array_equal(est.spaces["steering_estimate"].matrix,
                          est.spaces["steering_estimate_by_layer/layer1"].matrix)
    assert np.isfinite(est.spaces["steering_estimate_random"].matrix).all()


def test_estimate_gradients_do_not_depend_on_how_sentences_are_batched(tok):
    """The backward passes run in batches capped at BACKWARD_TOKENS (memory); rows are independent, so
    one sentence per batch gives the same per-sentence gradients as everything in one batch."""
    from dataclasses import replace

    from taskspace.probes.kinds.steering_estimate import shift_gradients

    model = make_model("gpt2", tok)
    sents = [s for p in mini_suite().pairs[:6] for s in (p.good, p.bad)]
    together = shift_gradients(model, tok, sents, SETTINGS)
    apart = shift_gradients(model, tok, sents, replace(SETTINGS, batch_tokens=1))
    for ell in together:
        assert np.abs(together[ell]).max() > 0
        np.testing.assert_allclose(apart[ell], together[ell], rtol=1e-10, atol=1e-12)


def test_probes_restore_the_model_exactly(tok):
    model = make_model("gpt2", tok, dtype=torch.float32)
    model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)      # a frozen parameter stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    ids = torch.tensor([[2, 8, 9, 10]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        # transformers (v5) installs its own output-capturing hooks the first time hidden states are asked for
        model(input_ids=ids, output_hidden_states=True)
    hooks = {n: list(m._forward_hooks) for n, m in model.named_modules()}
    model.train()
    lm = loaded(model, tok)
    for name in ("steering", "erasure", "steering-estimate"):
        probe(lm, mini_suite(), name, SETTINGS, progress=False)
    assert model.training
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert hooks == {n: list(m._forward_hooks) for n, m in model.named_modules()}     # ours are gone
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, logits)


def test_layer_chosen_on_dev_and_the_cause_isolate_table(tok):
    model = make_model("gpt2", tok, dtype=torch.float32)
    res = probe(loaded(model, tok), mini_suite(), "erasure",
                ProbeSettings(train_pairs=2, dev_pairs=1, eval_pairs=2, bootstrap=20), progress=False,
                random_directions=2, layers="all")
    prov = res.provenance
    sel = {int(k): v for k, v in prov["layer_selectivity"].items()}
    assert prov["layer"] == max(sel, key=sel.get)
    assert {"erasure_by_layer/layer0", "erasure_by_layer/layer1", "erasure_random_by_layer/layer1"} <= set(res.spaces)
    np.testing.assert_array_equal(res.spaces["erasure"].matrix,
                                  res.spaces[f"erasure_by_layer/layer{prov['layer']}"].matrix)
    table, _ = res.tables["stats/causal_erasure.csv"]
    assert list(table["task"]) == ["sv_sing", "sv_plur", "refl"]
    for col in ("cause", "within", "isolate"):
        for c in (col, f"{col}_random"):
            ok = table[c].notna()
            assert ((table.loc[ok, f"{c}_low"] <= table.loc[ok, c] + 1e-12)
                    & (table.loc[ok, c] <= table.loc[ok, f"{c}_high"] + 1e-12)).all()
    assert table.loc[table.task == "refl", "within"].isna().all()       # refl is alone in its group
    assert table["isolate"].between(0, 1).all()
    assert res.spaces["erasure"].ci_low is not None
    spec = registry.get("erasure")
    assert spec.file("table") == "stats/causal_erasure.csv"


def test_bad_layer_is_one_line_naming_the_field(tok):
    from taskspace.errors import InputError

    model = make_model("gpt2", tok, dtype=torch.float32)
    with pytest.raises(InputError, match="layer must be between 0 and 1") as e:
        probe(loaded(model, tok), mini_suite(), "steering", SETTINGS, progress=False, layer=2)
    assert e.value.field == "layer"
    with pytest.raises(InputError, match="layers"):
        probe(loaded(model, tok), mini_suite(), "steering", SETTINGS, progress=False, layers="some")


def test_cli_and_plan(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from taskspace.cli import app
    from taskspace.runs import load_plan, run_plan
    from taskspace.spaces import TaskSpace
    from test_runs import write_plan, write_suite

    suite = write_suite(tmp_path / "s.jsonl", per_task=6)
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["probe", "steering", "--model", str(tiny_model_dir), "--revision", "step10",
                                 "--suite", str(suite), "--out", str(out), "--tasks", "sva_singular,npi_never",
                                 "--train-pairs", "2", "--dev-pairs", "1", "--eval-pairs", "2", "--bootstrap", "0",
                                 "--alpha", "0.5", "--random-directions", "2", "--layer", "1"])
    assert r.exit_code == 0, r.output
    sp = TaskSpace.load(out / "spaces" / "steering.csv")
    assert sp.tasks == ["sva_singular", "npi_never"] and sp.provenance["alpha"] == 0.5
    assert sp.provenance["layer"] == 1 and (out / "spaces" / "steering_by_layer" / "layer1.csv").exists()
    assert (out / "stats" / "causal_steering.csv").exists() and (out / "stats" / "steering_layers.csv").exists()
    r = CliRunner().invoke(app, ["probe", "erasure", "--model", str(tiny_model_dir), "--suite", str(suite),
                                 "--out", str(tmp_path / "bad"), "--layers", "most"])
    assert r.exit_code != 0 and "layers" in str(r.exception) + r.output

    # a plan: the probe options reach the runners; the declared cause / isolate table reaches compare and the report
    plan = write_plan(tmp_path / "plan.toml", tiny_model_dir, suite, probes=("steering-estimate", "erasure"),
                      control="none", train_pairs=2,
                      extra='[probe_options."steering-estimate"]\nlayer = 0\n'
                            "[probe_options.erasure]\nlayer = 1\nrandom_directions = 1\n")
    plan.write_text(plan.read_text().replace("eval_pairs = 4", "eval_pairs = 2")
                    .replace("report = false", "report = true")
                    .replace('spec = "', 'tasks = ["sva_singular", "anaphor_singular"]\nspec = "'))
    result = run_plan(load_plan(plan), tmp_path / "run")
    assert not result.failed, [o.error for o in result.failed]
    cell = tmp_path / "run" / "tiny-lm" / "step10"
    est = TaskSpace.load(cell / "spaces" / "steering_estimate.csv")
    assert est.provenance["layer"] == 0 and est.tasks == ["sva_singular", "anaphor_singular"]
    assert TaskSpace.load(cell / "spaces" / "erasure.csv").provenance["random_directions"] == 1
    cmp = json.loads((tmp_path / "run" / "comparison.json").read_text())
    entry = next(c for c in cmp["cells"] if c["revision"] == "step10")
    rows = entry["tables"]["stats/causal_erasure.csv"]
    assert [r["task"] for r in rows] == ["sva_singular", "anaphor_singular"] and "isolate_random" in rows[0]
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'id="tables"' in html and "stats/causal_erasure.csv" in html
