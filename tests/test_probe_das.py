"""The trained-subspace probes (``das``, ``mdas``) on tiny GPT-2, GPT-NeoX and Llama models: alignment of
hand-written pairs, the interchange against a hand-edited forward pass, the full subspace and k = 0, the
learned R orthonormal, a planted residual feature found (and missed by random subspaces), the model left
bit for bit, and the CLI on a small toy suite with a control, compare and report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, make_word_tokenizer
from taskspace.models.loading import LoadedModel
from taskspace.probes import probe
from taskspace.probes.causal import frozen
from taskspace.probes.interchange import align_ids, align_pairs, intervened_outcomes, run_outcomes
from taskspace.probes.settings import ProbeSettings
from taskspace.probes.subspaces import intervened, plain_runs, recovery, train_subspace
from taskspace.scoring import Head, encode
from taskspace.suites import Pair, Suite

pytestmark = pytest.mark.usefixtures("one_thread")

NOUNS = ["cat", "dog", "girl", "boy", "teacher"]
VERBS = [("sleep", "sleeps"), ("see", "sees"), ("run", "ran"), ("gone", "went"), ("seen", "saw")]


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


def loaded(model, tok):
    return LoadedModel(model, tok, "tiny", "step1", "memory", "cpu", str(next(model.parameters()).dtype)[6:])


def counterfactuals(tok, rows):
    pairs = [Pair("t", "g", str(i), good, bad) for i, (good, bad) in enumerate(rows)]
    return align_pairs(pairs, lambda s: encode(tok, s, tok.bos_token_id))


# -- alignment -------------------------------------------------------------------------------------------------

def test_alignment_of_hand_written_pairs(tok):
    cfs, skipped = counterfactuals(tok, [
        ("the cat sleeps .", "the cat sleep ."),                   # substitution, shared "."
        ("the cats sleep .", "the cat who ran sleep ."),           # regions of different lengths, shared "sleep ."
        ("who saw the cat ?", "the cat saw who ."),                # word order up to the end, same length
        ("the dog ran .", "the dog ran ."),                        # identical
        ("the dog ran .", "the dog ran !"),                        # only the last token differs
    ])
    assert [cf.pair.pair_id for cf in cfs] == ["0", "1", "2"]
    sub, cont, order = cfs
    ids = lambda s: [tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]   # noqa: E731
    assert (sub.kind, sub.region, sub.n_continuation) == ("continuation", (1, 1), 1)
    assert sub.base == tuple(ids("the cat sleep .")) and sub.source == tuple(ids("the cat sleeps ."))
    assert sub.base_site == sub.source_site == 3
    assert sub.base_terms == ((3, tok.convert_tokens_to_ids("."), 1),)
    # aligned by the region's last token and the continuation after it, not by absolute position
    assert (cont.region, cont.n_continuation, cont.base_site, cont.source_site) == ((1, 3), 2, 4, 2)
    assert [t[1] for t in cont.base_terms] == [t[1] for t in cont.source_terms] == tok.convert_tokens_to_ids(["sleep", "."])
    assert [t[0] for t in cont.base_terms] == [4, 5] and [t[0] for t in cont.source_terms] == [2, 3]
    # the final-token rule: log-odds of "?" against "." at the token before the last
    q, dot = tok.convert_tokens_to_ids(["?", "."])
    assert order.kind == "final" and order.base_site == order.source_site == 4
    assert order.base_terms == order.source_terms == ((4, q, 1), (4, dot, -1))
    assert skipped == {"3": "identical sentences", "4": "only the last token differs (nothing after the site is scored)"}
    # a word-order change whose tokenisation changes length and reaches the end (BLiMP's "Had Bruce ever
    # played?" / "Bruce had ever played." under a BPE tokenizer) has no shared continuation
    why = align_ids(Pair("t", "g", "x", "a", "b"), [0, 11, 12, 13, 14, 15], [0, 12, 16, 11, 13, 14, 17])
    assert why.startswith("the region runs to the end and its two sides differ in length")


# -- the interchange -----------------------------------------------------------------------------------------

BLOCKS = {"gpt2": lambda m: m.transformer.h, "gpt_neox": lambda m: m.gpt_neox.layers, "llama": lambda m: m.model.layers}
FINAL_NORM = {"gpt2": lambda m: m.transformer.ln_f, "gpt_neox": lambda m: m.gpt_neox.final_layer_norm,
              "llama": lambda m: m.model.norm}


def hand_interchange(model, arch, layer, base, source, b_site, s_site, R, targets):
    """Σ log p(target | position) of the base run with h ← h + (h_s − h)RᵀR at (layer, b_site), by hooking
    the module whose output is that layer's residual stream (a block, or the final norm for the last)."""
    blocks = BLOCKS[arch](model)
    mod = blocks[layer] if layer < len(blocks) - 1 else FINAL_NORM[arch](model)
    grab = {}

    def state(out):
        return out[0] if isinstance(out, tuple) else out

    h = mod.register_forward_hook(lambda m, a, o: grab.__setitem__("h", state(o)[0, s_site].clone()))
    with torch.no_grad():
        model(input_ids=torch.tensor([source]))
    h.remove()

    def patch(m, a, o):
        x = state(o).clone()
        x[0, b_site] = x[0, b_site] + (grab["h"] - x[0, b_site]) @ R.T @ R
        return (x,) + tuple(o[1:]) if isinstance(o, tuple) else x

    h = mod.register_forward_hook(patch)
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([base])).logits[0].double(), -1)
    h.remove()
    return float(sum(c * lp[p, t] for p, t, c in targets))


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_interchange_matches_a_hand_edited_forward_pass(tok, arch):
    model = make_model(arch, tok)
    head = Head(model)
    cfs, _ = counterfactuals(tok, [("the cats sleep .", "the cat who ran sleep ."),
                                   ("who saw the cat ?", "the cat saw who ."),
                                   ("the girl saw herself .", "the girl saw himself .")])
    R = torch.as_tensor(np.linalg.qr(np.random.default_rng(0).standard_normal((32, 2)))[0].T)
    for layer in (0, 1):
        _, src = run_outcomes(head, cfs, side="source", pad_id=0, layers=[layer])
        with torch.no_grad():
            got = intervened_outcomes(head, cfs, layer, src[layer], R, pad_id=0).numpy()
        want = [hand_interchange(model, arch, layer, list(cf.base), list(cf.source), cf.base_site, cf.source_site,
                                 R, cf.base_terms) for cf in cfs]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_full_subspace_gives_the_source_and_rank_zero_the_base(tok, arch):
    model = make_model(arch, tok)
    head = Head(model)
    # one-token regions and one-token continuations: every position the outcome reads is shared or the site
    # itself, so the full patch is the source run there (with a longer continuation the later positions
    # still read the base's region below the layer)
    cfs, _ = counterfactuals(tok, [("the cat sleeps .", "the cat sleep ."), ("the girl saw herself .", "the girl saw himself ."),
                                   ("the boys saw themselves !", "the boys saw itself !")])
    for layer in (0, 1):
        runs = plain_runs(head, cfs, [layer], pad_id=0, batch_tokens=64)
        full = intervened(head, runs, layer, np.eye(32), pad_id=0, batch_tokens=64)
        np.testing.assert_allclose(full, runs.m_source, rtol=0, atol=1e-9)
        assert recovery(full, runs) == pytest.approx(1.0, abs=1e-9)
        none = intervened(head, runs, layer, np.zeros((0, 32)), pad_id=0, batch_tokens=64)
        np.testing.assert_array_equal(none, runs.m_base)
    # the outcome of a plain run is the continuation's log-probability, as the scorer sums it
    lp = lambda s: float(torch.log_softmax(model(input_ids=torch.tensor([s])).logits[0].double(), -1)[-2, s[-1]])  # noqa: E731
    with torch.no_grad():
        assert runs.m_base[0] == pytest.approx(lp(list(cfs[0].base)), abs=1e-10)
        assert runs.m_source[0] == pytest.approx(lp(list(cfs[0].source)), abs=1e-10)


def test_trained_subspace_stays_orthonormal_and_lowers_the_loss(tok):
    model = make_model("gpt2", tok, dtype=torch.float32)
    head = Head(model)
    cfs, _ = counterfactuals(tok, [(f"the {n} {g} .", f"the {n} {b} .") for n in NOUNS for b, g in VERBS])
    runs = plain_runs(head, cfs, [1], pad_id=0, batch_tokens=256)
    with frozen(model):
        R, losses = train_subspace(head, 1, 3, runs, steps=40, lr=0.02, batch_pairs=8, seed=0, pad_id=0)
    assert R.shape == (3, 32)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all(p.requires_grad for p in model.parameters())        # frozen() restored the flags
    # the seed alone decides the result: the global torch RNG (which the orthogonal parametrisation would
    # otherwise draw its basis from) does not
    with frozen(model):
        torch.manual_seed(12345)
        R2, losses2 = train_subspace(head, 1, 3, runs, steps=40, lr=0.02, batch_pairs=8, seed=0, pad_id=0)
    np.testing.assert_array_equal(R2, R)
    assert losses2 == losses


# -- a planted feature ---------------------------------------------------------------------------------------

def planted_model(tok, c=0.1, nuisance=0.1, a=0.3, width=64):
    """A tiny GPT-2 whose blocks write nothing (the residual stream is the embedding), in which each good verb
    is its bad verb + c·u + a nuisance of its own (orthogonal to u), and the "." continuation is read along u:
    u, and only u, decides the continuation."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=width, n_layer=2, n_head=2,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).double().eval()
    g = torch.Generator().manual_seed(1)
    ids = tok.convert_tokens_to_ids
    with torch.no_grad():
        for block in model.transformer.h:
            for lin in (block.attn.c_proj, block.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
        wte = model.transformer.wte.weight
        u = torch.randn(width, generator=g, dtype=torch.float64)
        u = (u - u.mean()) / (u - u.mean()).norm()
        for bad, good in VERBS:
            n = torch.randn(width, generator=g, dtype=torch.float64)
            n -= n.mean() + ((n - n.mean()) @ u) * u
            wte[ids(good)] = wte[ids(bad)] + c * u + nuisance * n / n.norm()
        wte[ids(".")] += a * u
    return model, u.numpy()


def test_das_finds_a_planted_direction_and_random_subspaces_do_not(tok):
    model, u = planted_model(tok)
    suite = Suite([Pair("planted", "p", f"{i}{j}", f"the {n} {g} .", f"the {n} {b} .")
                   for i, n in enumerate(NOUNS) for j, (b, g) in enumerate(VERBS)], name="planted")
    res = probe(loaded(model, tok), suite, "das", ProbeSettings(train_pairs=12, dev_pairs=3, eval_pairs=10, bootstrap=50),
                progress=False, layer=0)
    row = res.tables["stats/das_tasks.csv"][0].iloc[0]
    assert row["cause"] > 0.95 and row["iia"] == 1.0 and row["cause_low"] > 0.9
    assert row["random"] < 0.2 and row["random_max"] < 0.5
    assert row["random_p"] == pytest.approx(1 / 20)                  # above all 19 random subspaces
    assert row["full_patch"] == pytest.approx(1.0, abs=1e-9)
    R = res.extra["subspaces"]["planted"]
    assert abs(float(R[0] @ u)) > 0.6                                  # a random unit vector: about 1/8
    assert res.spaces["das"].matrix[0, 0] == pytest.approx(row["cause"])


# -- the probe as a whole ------------------------------------------------------------------------------------

def two_group_suite():
    pairs = []
    for i, n in enumerate(NOUNS):
        for d in ("the", "this"):
            pairs += [Pair("verb", "agr", f"{d}{i}", f"{d} {n} sleeps .", f"{d} {n} sleep ."),
                      Pair("det", "agr", f"{d}{i}", f"{d} {n} ran .", f"these {n} ran ."),
                      Pair("refl", "ana", f"{d}{i}", f"{d} {n} saw itself .", f"{d} {n} saw themselves .")]
    return Suite(pairs, name="two-groups")


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_das_and_mdas_leave_the_model_bit_for_bit(tok, arch):
    model = make_model(arch, tok, dtype=torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = ProbeSettings(train_pairs=4, dev_pairs=2, eval_pairs=4, bootstrap=0)
    res = probe(loaded(model, tok), two_group_suite(), ("das", "mdas"), settings, progress=False,
                rotation_steps=15, random_subspaces=3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    das, mdas = res.spaces["das"], res.spaces["mdas"]
    assert das.tasks == mdas.tasks == ["verb", "det", "refl"] and np.isfinite(das.matrix).all()
    np.testing.assert_array_equal(mdas.matrix[0], mdas.matrix[1])       # rows of one group: one subspace
    assert not np.allclose(das.matrix[0], das.matrix[1])
    rnd = res.spaces["das_random"].matrix
    np.testing.assert_array_equal(rnd, np.broadcast_to(rnd[0], rnd.shape))   # one pool for every row
    groups = res.tables["stats/mdas_groups.csv"][0]
    assert list(groups["group"]) == ["agr", "ana"] and {"cause", "isolate", "das_cause", "random_cause"} <= set(groups)
    layers = res.tables["stats/das_layers.csv"][0]
    assert layers["chosen"].sum() == 1 and len(layers) == 2


def test_tasks_without_enough_alignable_pairs_are_skipped_with_the_reason(tok):
    model = make_model("gpt2", tok, dtype=torch.float32)
    suite = Suite(two_group_suite().pairs + [Pair("same", "ana", str(i), "the dog ran .", "the dog ran .")
                                             for i in range(10)], name="with-ties")
    res = probe(loaded(model, tok), suite, "das", ProbeSettings(train_pairs=4, dev_pairs=2, eval_pairs=4, bootstrap=0),
                progress=False, layer=1, rotation_steps=5, random_subspaces=2)
    table = res.tables["stats/das_tasks.csv"][0].set_index("task")
    assert table.loc["same", "status"].startswith("skipped: 0 alignable train pairs")
    assert table.loc["same", "not_aligned"] == "identical sentences: 8"       # train + eval (fixed layer: no dev)
    assert np.isnan(res.spaces["das"].matrix[3]).all() and np.isnan(res.spaces["das"].matrix[:, 3]).all()
    assert any("same" in n for n in res.extra["notes"])


def test_cli_on_a_toy_suite_with_a_control_then_compare_and_report(tmp_path):
    from typer.testing import CliRunner

    from taskspace.cli import app
    from taskspace.models.tokenizer_training import word_level_tokenizer
    from taskspace.suites.toy import toy_suite, toy_vocabulary
    from taskspace.suites.write import write_suite

    tok = word_level_tokenizer(toy_vocabulary())
    root = tmp_path / "toy-lm"
    for step, seed in (("step0", 0), ("step10", 1)):
        m = make_tiny_model("gpt2", vocab_size=len(tok), seed=seed)
        m.save_pretrained(root / step)
        tok.save_pretrained(root / step)
    tasks = ["sva_simple", "dna_noun_swap", "npi_ever_in_question", "anaphor_number_agreement"]
    suite = write_suite(toy_suite(0, pairs_per_task=12).select(tasks), tmp_path / "toy.jsonl")
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(app, ["probe", "das", "--model", str(root), "--revision", "step10", "--suite", str(suite),
                            "--out", str(out), "--train-pairs", "5", "--dev-pairs", "2", "--eval-pairs", "5",
                            "--rotation-steps", "10", "--random-subspaces", "4", "--bootstrap", "20",
                            "--control", "first"])
    assert r.exit_code == 0, r.output
    for d in (out, out / "control"):
        for f in ("spaces/das.csv", "spaces/das.json", "spaces/das_random.csv", "spaces/das_mean_difference.csv",
                  "stats/das_tasks.csv", "stats/das_layers.csv", "subspaces/das.safetensors"):
            assert (d / f).exists(), d / f
    import pandas as pd

    table = pd.read_csv(out / "stats" / "das_tasks.csv")
    assert list(table["task"]) == tasks and (table["status"] == "ok").all()
    assert table.set_index("task").loc["npi_ever_in_question", "aligned_final_token"] == 12   # 5 + 2 + 5
    prov = json.loads((out / "spaces" / "das.json").read_text())["provenance"]
    assert prov["probe"] == "das" and prov["rank"] == 1 and prov["rotation_steps"] == 10
    assert json.loads((out / "control" / "spaces" / "das.json").read_text())["provenance"]["revision"] == "step0"
    assert (out / "stats" / "das_summary.json").exists()
    r = runner.invoke(app, ["compare", str(out), "--permutations", "99", "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    cmp = json.loads((out / "comparison.json").read_text())
    assert "das" in cmp["probes"]
    r = runner.invoke(app, ["report", str(out), "--permutations", "99", "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "DAS recovery D (fraction of margin)" in html and "stats/das_tasks.csv" in html
