"""The hub path, offline, for real: a Hugging Face cache built here in the hub's own on-disk layout, then
the real console script ``taskspace score --model org/name --revision step1 --suite blimp`` with
``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` and nothing else.

- The model: a tiny GPT-NeoX saved with branches ``step0``, ``step1`` (and ``main``) like Pythia's, as
  ``HF_HUB_CACHE/models--org--name/{refs/<branch>, snapshots/<commit>/<file> -> ../../blobs/<etag>}``
  (a blob is named by its etag: sha256 for LFS files, the git blob sha1 for the others).
  ``transformers`` reads it through ``huggingface_hub``'s cache lookup, as after a real download.
- BLiMP: ``datasets`` does not read the hub cache offline. ``load_dataset("nyu-mll/blimp", UID)`` with
  ``HF_HUB_OFFLINE=1`` raises before any hub lookup (``_raise_if_offline_mode_is_enabled`` in
  ``datasets.load.dataset_module_factory``) and falls back to ``CachedDatasetModuleFactory``: the
  prepared Arrow cache ``HF_DATASETS_CACHE/nyu-mll___blimp/<UID>/0.0.0/<hash>/`` (``dataset_info.json``
  + ``blimp-train.arrow``) that an online load leaves behind. So the test builds both halves of what a
  real online load leaves: the hub snapshot (``datasets--nyu-mll--blimp``: README.md whose ``configs``
  name ``<UID>/train-*``, and ``<UID>/train-00000-of-00001.parquet`` per paradigm, the layout of the
  hub repo since its Parquet conversion) and, from those very parquet files, the Arrow cache, prepared
  by the packaged Parquet builder with the builder configs from the card, as the online path prepares
  it (see the fixture for the one step that differs: where the prepared folder is put). The offline
  CLI then reads the Arrow cache, through datasets' own offline fallback.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_bpe_tokenizer, make_tiny_model
from taskspace.suites.blimp import BLIMP_UIDS

ORG_NAME = "org/name"
N_ROWS = 6
REPO = Path(__file__).resolve().parents[1]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(cache: Path, repo_id: str, repo_type: str, files: dict[str, bytes], commit: str,
                 refs: list[str]) -> Path:
    """Put ``files`` into ``cache`` as the hub's download code does: blobs named by etag, the snapshot
    of ``commit`` as relative symlinks to them, each ref a file holding the commit. Returns the snapshot."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    snap = repo / "snapshots" / commit
    for name, data in files.items():
        lfs = name.endswith((".safetensors", ".parquet"))
        etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snap


def folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def blimp_rows(uid: str) -> list[dict]:
    """Rows with every column of the hub's BLiMP (in its order); sentences tell the paradigms apart."""
    words = uid.split("_")
    return [{"sentence_good": f"The {words[0]} cat {i} sleeps.", "sentence_bad": f"The {words[0]} cat {i} sleep.",
             "field": "syntax", "linguistics_term": f"term_{len(words) % 3}", "UID": uid,
             "simple_LM_method": True, "one_prefix_method": False, "two_prefix_method": False,
             "lexically_identical": False, "pairID": str(i)} for i in range(N_ROWS)]


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    import datasets
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    datasets.disable_progress_bars()
    home = tmp_path_factory.mktemp("hf-home")
    hub, ds_cache = home / "hub", home / "datasets"
    work = tmp_path_factory.mktemp("hf-work")
    # -- the model: branches step0, step1 (= main), as Pythia's -----------------------------------
    tok = make_bpe_tokenizer()
    commits = {"step0": "a" * 40, "step1": "b" * 40}
    for seed, (branch, commit) in enumerate(commits.items()):
        out = work / branch
        model = make_tiny_model("gpt_neox", vocab_size=len(tok), seed=seed)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        add_snapshot(hub, ORG_NAME, "model", folder_files(out), commit,
                     [branch] + (["main"] if branch == "step1" else []))
    for branch, commit in commits.items():
        path = try_to_load_from_cache(ORG_NAME, "model.safetensors", cache_dir=hub, revision=branch)
        assert isinstance(path, str) and Path(path).parent.name == commit, path
        assert Path(path).read_bytes() == (work / branch / "model.safetensors").read_bytes()

    # -- BLiMP: the hub snapshot (card + one parquet file per paradigm) ----------------------------
    files: dict[str, bytes] = {}
    card = ["---", "configs:"]
    for uid in BLIMP_UIDS:
        pq = work / "parquet" / uid / "train-00000-of-00001.parquet"
        pq.parent.mkdir(parents=True)
        datasets.Dataset.from_list(blimp_rows(uid)).to_parquet(str(pq))
        files[f"{uid}/train-00000-of-00001.parquet"] = pq.read_bytes()
        card += [f"- config_name: {uid}", "  data_files:", "  - split: train", f"    path: {uid}/train-*"]
    files["README.md"] = ("\n".join(card + ["---", "", "# BLiMP (test copy)", ""])).encode()
    snap = add_snapshot(hub, "nyu-mll/blimp", "dataset", files, "c" * 40, ["main"])
    assert try_to_load_from_cache("nyu-mll/blimp", f"{BLIMP_UIDS[0]}/train-00000-of-00001.parquet",
                                  cache_dir=hub, repo_type="dataset") == str(snap / BLIMP_UIDS[0] /
                                                                           "train-00000-of-00001.parquet")
    info = scan_cache_dir(hub)                           # the cache scanner accepts both repos as they are
    assert not info.warnings, info.warnings
    assert {(r.repo_id, r.repo_type) for r in info.repos} == {(ORG_NAME, "model"), ("nyu-mll/blimp", "dataset")}
    assert {ref for r in info.repos if r.repo_type == "model" for rev in r.revisions for ref in rev.refs} == \
        {"step0", "step1", "main"}

    # -- BLiMP: the Arrow cache an online load prepares from those files ---------------------------
    # The packaged Parquet builder with the card's configs prepares each paradigm from the snapshot's
    # files. Online, the builder gets repo_id="nyu-mll/blimp" and its data files as hf:// URLs, which it
    # resolves through the hub's API (HfFileSystem.resolve_path): that cannot run offline, and with a
    # repo_id the builder refuses local data files. So it runs on the snapshot as a local folder,
    # reached through a link named like the repo, so its dataset name is "blimp" (the arrow file is
    # blimp-train.arrow, as the offline reader expects), and the prepared folder blimp/ is then put
    # where a builder with repo_id "nyu-mll/blimp" writes it: nyu-mll___blimp/ (datasets'
    # DatasetBuilder._relative_data_dir: "namespace___dataset_name").
    named = work / "blimp"
    named.symlink_to(snap, target_is_directory=True)
    for uid in BLIMP_UIDS:
        builder = datasets.load_dataset_builder(str(named), uid, cache_dir=str(ds_cache))
        builder.download_and_prepare()
    (ds_cache / "blimp").rename(ds_cache / "nyu-mll___blimp")
    prepared = sorted((ds_cache / "nyu-mll___blimp").glob("*/*/*/dataset_info.json"))
    assert sorted(p.parts[-4] for p in prepared) == sorted(BLIMP_UIDS)
    assert all(json.loads(p.read_text())["config_name"] == p.parts[-4] for p in prepared)
    assert all((p.parent / "blimp-train.arrow").is_file() for p in prepared)
    datasets.enable_progress_bars()
    return home


def offline_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")):
            del env[key]
    env.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_DATASETS_CACHE=str(home / "datasets"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TASKSPACE_NO_PROGRESS="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def run_cli(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taskspace", *args], capture_output=True, text=True,
                          timeout=600, env=offline_env(home), cwd=cwd)


def test_score_from_the_hub_cache_offline_end_to_end(hf_home, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(hf_home, tmp_path, "score", "--model", ORG_NAME, "--revision", "step1", "--suite", "blimp",
                   "--limit-per-task", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["model"] == ORG_NAME and run["model"]["revision"] == "step1"
    assert run["model"]["architecture"] == "GPTNeoXForCausalLM"
    assert run["suite"]["source"] == "hf://datasets/nyu-mll/blimp"
    assert run["suite"]["n_tasks"] == 67 and run["suite"]["n_pairs"] == 67 * 5
    pairs = pd.read_parquet(out / "pairs.parquet")
    want = [r for uid in BLIMP_UIDS for r in blimp_rows(uid)[:5]]
    assert pairs["good"].tolist() == [r["sentence_good"] for r in want]
    assert pairs["pair_id"].tolist() == [r["pairID"] for r in want]

    # the scores are those of the step1 weights (a local folder of the same files gives the same numbers)
    snap = hf_home / "hub" / "models--org--name" / "snapshots" / ("b" * 40)
    local = tmp_path / "local"
    proc = run_cli(hf_home, tmp_path, "score", "--model", str(snap), "--suite", "blimp", "--limit-per-task", "5",
                   "--out", str(local))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_parquet(local / "pairs.parquet")["logp_good"].tolist() == pairs["logp_good"].tolist()
    step0 = tmp_path / "step0"
    proc = run_cli(hf_home, tmp_path, "score", "--model", ORG_NAME, "--revision", "step0", "--suite", "blimp",
                   "--limit-per-task", "5", "--out", str(step0), "--tasks", BLIMP_UIDS[0])
    assert proc.returncode == 0, proc.stderr
    assert pd.read_parquet(step0 / "pairs.parquet")["logp_good"].tolist() != pairs["logp_good"].tolist()[:5]


def test_a_branch_not_in_the_cache_is_one_line_offline(hf_home, tmp_path):
    proc = run_cli(hf_home, tmp_path, "score", "--model", ORG_NAME, "--revision", "step7", "--suite", "blimp",
                   "--limit-per-task", "5", "--out", str(tmp_path / "o"), "--tasks", BLIMP_UIDS[0])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "org/name (revision step7)" in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


def test_dry_run_checks_hub_models_and_blimp_in_the_local_caches(hf_home, tmp_path):
    """With the caches there, a dry run checks what they hold (offline, no network): the hub suite
    ``blimp`` read from datasets' cache, a cached revision checked and its size read from its config,
    a revision not in the cache reported unchecked; nothing written."""
    from transformers import AutoModelForCausalLM

    plan = tmp_path / "plan.toml"
    plan.write_text('probes = ["score"]\nreport = false\n[suite]\nspec = "blimp"\nlimit_per_task = 3\n'
                    f'[[models]]\nname = "{ORG_NAME}"\nrevisions = ["step0", "step1", "step7"]\n')
    proc = subprocess.run([sys.executable, "-m", "taskspace", "run", str(plan), "--out", str(tmp_path / "run"),
                           "--dry-run"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(offline_env(hf_home), COLUMNS="200"))
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert f"suite blimp: 67 tasks, {67 * 3} pairs (checked, from the local datasets cache)" in out, out
    assert "checked in the local Hugging Face cache: step0, step1" in out
    assert "unchecked (not in the local Hugging Face cache; the run downloads them): step7" in out
    snap = hf_home / "hub" / "models--org--name" / "snapshots" / ("b" * 40)
    n = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(snap).parameters())
    assert f"{n:,}" in out and "config in the local cache" in out
    assert not (tmp_path / "run").exists()
