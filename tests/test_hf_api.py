"""The Python API for a model you already have, and the loading options every command shares.

``LoadedModel.from_hf`` and ``(model, tokenizer)`` pairs in ``taskspace.score`` / ``taskspace.probe``;
``taskspace.ProbeSettings`` at top level with ``import taskspace`` free of torch; ``--device auto`` (the
CLI default: CUDA, then MPS, then cpu), ``--threads``, ``--attn-implementation``; ``device_map`` in
``load_model``. Real tiny models saved and loaded, the real CLI.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import taskspace
from conftest import make_tiny_model, mini_suite
from taskspace.errors import ModelLoadError
from taskspace.models.loading import LoadedModel, load_model, resolve_device


@pytest.fixture
def threads_restored():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def expected_auto() -> str:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


# -- a model you already have ------------------------------------------------------------------------
def test_from_hf_wraps_a_loaded_model_with_its_provenance(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir / "step10")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "step10")
    lm = LoadedModel.from_hf(model, tok, name="tiny", revision="step10")
    assert lm.model is model and lm.tokenizer is tok
    assert (lm.name, lm.revision, lm.device, lm.dtype) == ("tiny", "step10", "cpu", "float32")
    d = lm.describe()
    assert d["architecture"] == "GPT2LMHeadModel" and d["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert d["path"] == str(tiny_model_dir / "step10")            # where transformers loaded it from
    assert LoadedModel.from_hf(model, tok).name == str(tiny_model_dir / "step10")
    bare = make_tiny_model("gpt2", vocab_size=len(tok), dtype=torch.float64)
    lm64 = LoadedModel.from_hf(bare, tok)
    assert (lm64.dtype, lm64.name, lm64.path) == ("float64", "GPT2LMHeadModel", "memory")
    with pytest.raises(TypeError, match="tokenizer"):
        LoadedModel.from_hf(model, None)


def test_score_and_probe_take_a_model_and_tokenizer_pair(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir / "step10")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "step10")
    suite = mini_suite()
    by_pair = taskspace.score((model, tok), suite)
    by_name = taskspace.score(str(tiny_model_dir), suite, revision="step10")
    assert by_pair.pairs["logp_good"].tolist() == by_name.pairs["logp_good"].tolist()
    assert by_pair.provenance["model"]["model"] == str(tiny_model_dir / "step10")
    settings = taskspace.ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2)
    a = taskspace.probe((model, tok), suite, "gradients", settings, progress=False).spaces["gradients"]
    b = taskspace.probe(load_model(str(tiny_model_dir), "step10"), suite, "gradients", settings,
                        progress=False).spaces["gradients"]
    assert a.to_pandas().equals(b.to_pandas())
    with pytest.raises(TypeError, match=r"\(model, tokenizer\) pair"):
        taskspace.probe(model, suite, "gradients", settings)


def test_probe_settings_at_top_level_and_import_stays_torch_free():
    from taskspace.probes.settings import ProbeSettings

    assert taskspace.ProbeSettings is ProbeSettings and "ProbeSettings" in taskspace.__all__
    code = "import sys, taskspace; taskspace.ProbeSettings(); print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- devices, threads, attention ---------------------------------------------------------------------
def test_device_auto_is_cuda_then_mps_then_cpu(tiny_model_dir):
    assert resolve_device("auto") == resolve_device(None) == expected_auto()
    assert load_model(str(tiny_model_dir), "step0").device == expected_auto()      # the default is auto
    if expected_auto() == "cpu":
        with pytest.raises(ModelLoadError, match="no MPS device"):
            load_model(str(tiny_model_dir), "step0", device="mps")


def test_cli_defaults_to_device_auto_and_passes_threads_and_attention(tiny_model_dir, tmp_path, threads_restored):
    from taskspace.cli import app

    suite = tmp_path / "s.jsonl"
    suite.write_text("\n".join(json.dumps({"good": p.good, "bad": p.bad, "task": p.task, "group": p.group})
                               for p in mini_suite().pairs) + "\n")
    target = 1 if torch.get_num_threads() != 1 else 2
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["score", "--model", str(tiny_model_dir), "--revision", "step10", "--suite",
                                 str(suite), "--out", str(out), "--threads", str(target),
                                 "--attn-implementation", "eager"])
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["device"] == expected_auto()
    assert run["torch_threads"] == target == torch.get_num_threads()
    assert run["model"]["attn_implementation"] == "eager"
    # the probe commands share the options
    out2 = tmp_path / "probe"
    r = CliRunner().invoke(app, ["probe", "activations", "--model", str(tiny_model_dir), "--revision", "step10",
                                 "--suite", str(suite), "--out", str(out2), "--attn-implementation", "eager",
                                 "--threads", "1", "--train-pairs", "3"])
    assert r.exit_code == 0, r.output
    side = json.loads((out2 / "spaces" / "activations.json").read_text())
    assert side["provenance"]["model"]["attn_implementation"] == "eager" and torch.get_num_threads() == 1


def test_load_model_threads_and_attn_implementation_reach_torch_and_the_config(tiny_model_dir, threads_restored):
    target = 1 if torch.get_num_threads() != 1 else 2
    lm = load_model(str(tiny_model_dir), "step0", threads=target, attn_implementation="eager")
    assert torch.get_num_threads() == target
    assert lm.model.config._attn_implementation == "eager" and lm.describe()["attn_implementation"] == "eager"
    init = load_model(str(tiny_model_dir), "init", attn_implementation="eager")
    assert init.model.config._attn_implementation == "eager"
    assert load_model(str(tiny_model_dir), "step0", attn_implementation="sdpa").model.config._attn_implementation == "sdpa"
    with pytest.raises(ModelLoadError, match="bogus") as e:
        load_model(str(tiny_model_dir), "step0", attn_implementation="bogus")
    assert "\n" not in str(e.value)
    with pytest.raises(ModelLoadError, match="threads"):
        load_model(str(tiny_model_dir), "step0", threads=0)


def test_device_map_loads_for_forward_only_use(tiny_model_dir):
    suite = mini_suite()
    try:
        import accelerate  # noqa: F401
    except ImportError:
        # transformers needs accelerate for any device map: one line that says so
        with pytest.raises(ModelLoadError, match="accelerate") as e:
            load_model(str(tiny_model_dir), "step10", device_map="auto")
        assert "\n" not in str(e.value)
        pytest.skip("accelerate is not installed (pip install 'taskspace[large]')")
    lm = load_model(str(tiny_model_dir), "step10", device_map="auto")
    ref = load_model(str(tiny_model_dir), "step10", device="cpu")
    if lm.device == "cpu":
        assert taskspace.score(lm, suite).pairs["logp_good"].tolist() == \
            taskspace.score(ref, suite).pairs["logp_good"].tolist()
    settings = taskspace.ProbeSettings(train_pairs=3, dev_pairs=0, eval_pairs=2)
    assert "activations" in taskspace.probe(lm, suite, "activations", settings, progress=False).spaces
