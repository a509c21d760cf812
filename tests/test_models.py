"""Model loading: local folders with stepN revisions, clear errors, the fresh-init control, options."""
from __future__ import annotations

import pytest
import torch

from conftest import BLIMP, run_cli
from taskspace.errors import ModelLoadError
from taskspace.models.loading import list_revisions, load_model


def params(lm) -> dict[str, torch.Tensor]:
    return dict(lm.model.named_parameters())


def test_revision_is_a_sub_folder(tiny_model_dir):
    a = load_model(str(tiny_model_dir), "step0")
    b = load_model(str(tiny_model_dir), "step10")
    assert a.path == str(tiny_model_dir / "step0") and b.path == str(tiny_model_dir / "step10")
    assert a.revision == "step0" and b.describe()["revision"] == "step10"
    assert not a.model.training and a.device == "cpu" and a.dtype == "float32"
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    assert not all(torch.equal(pa[k], pb[k]) for k in pa)  # really two different checkpoints
    assert a.tokenizer.bos_token == "<s>"


def test_list_revisions_in_training_order(tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir / "step0", tiny_model_dir / "step2")
    assert list_revisions(str(tiny_model_dir)) == ["step0", "step2", "step10"]
    assert list_revisions(str(tiny_model_dir / "missing")) == []


def test_missing_revision_lists_the_available_ones(tiny_model_dir):
    with pytest.raises(ModelLoadError, match=r"no revision 'step99' \(it has: step0, step10\)"):
        load_model(str(tiny_model_dir), "step99")


def test_folder_of_checkpoints_without_revision_asks_for_one(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="pass --revision, one of: step0, step10"):
        load_model(str(tiny_model_dir))


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"))


def test_hub_name_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_model("taskspace-test-org/no-such-model", "step1000")
    msg = str(err.value)
    assert "Hugging Face hub" in msg and "revision step1000" in msg and "\n" not in msg


def test_cli_reports_a_bad_revision_in_one_line(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    suite = str(BLIMP) if BLIMP.exists() else "toy"
    proc = run_cli("score", "--model", tiny_model_dir, "--revision", "step99", "--suite", suite, "--out", out)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "step0, step10" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_init_revision_is_a_fresh_seeded_control(tiny_model_dir):
    # the fixture's checkpoints are fresh inits with seeds 0 and 1, so the control uses seeds 5 and 6
    trained = load_model(str(tiny_model_dir), "step10")
    state = torch.random.get_rng_state()
    a = load_model(str(tiny_model_dir), "init:5")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    b = load_model(str(tiny_model_dir), "init:5")
    c = load_model(str(tiny_model_dir), "init:6")
    pt, pa, pb, pc = params(trained), params(a), params(b), params(c)
    assert type(a.model) is type(trained.model)
    assert {k: v.shape for k, v in pa.items()} == {k: v.shape for k, v in pt.items()}
    assert all(torch.equal(pa[k], pb[k]) for k in pa)  # deterministic for a seed
    weights = [k for k in pa if pa[k].dim() == 2]
    assert not any(torch.equal(pa[k], pc[k]) for k in weights)  # another seed, other weights
    assert not any(torch.equal(pa[k], pt[k]) for k in weights)  # not the checkpoint's weights
    assert a.revision == "init:5" and a.describe()["init_seed"] == 5
    assert a.tokenizer.get_vocab() == trained.tokenizer.get_vocab()
    default = load_model(str(tiny_model_dir), "init")
    assert default.describe()["init_seed"] == 0
    assert all(torch.equal(p, q) for p, q in zip(default.model.parameters(),
                                                 load_model(str(tiny_model_dir), "init:0").model.parameters()))
    with pytest.raises(ModelLoadError, match="integer"):
        load_model(str(tiny_model_dir), "init:x")


def test_dtype_and_device_options(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), "step0", dtype="float64")
    assert lm.dtype == "float64" and all(p.dtype == torch.float64 for p in lm.model.parameters())
    assert load_model(str(tiny_model_dir), "step0", dtype="bf16").dtype == "bfloat16"
    init64 = load_model(str(tiny_model_dir), "init:2", dtype="float64")
    init32 = load_model(str(tiny_model_dir), "init:2")
    assert all(torch.equal(p.double(), q) for p, q in zip(init32.model.parameters(), init64.model.parameters()))
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tiny_model_dir), "step0", dtype="int3")
    if not torch.cuda.is_available():
        assert load_model(str(tiny_model_dir), "step0", device="auto").device == "cpu"
        with pytest.raises(ModelLoadError, match="no CUDA device"):
            load_model(str(tiny_model_dir), "step0", device="cuda")


def test_trust_remote_code_is_off_by_default(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        orig = cls.from_pretrained.__func__

        def spy(klass, *args, _orig=orig, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _orig(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    lm = load_model(str(tiny_model_dir), "step0")
    assert seen == [False, False] and lm.describe()["trust_remote_code"] is False
    load_model(str(tiny_model_dir), "step0", trust_remote_code=True)
    assert seen[2:] == [True, True]


def test_loading_prints_no_progress_bars(tiny_model_dir, capfd):
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    load_model(str(tiny_model_dir), "step0")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err
    assert hf_logging.is_progress_bar_enabled() == was  # the user's setting is restored
