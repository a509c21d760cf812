"""Shared fixtures: real tiny `transformers` models built in the test session, and paths to ../shared.

Expensive artefacts (the quick demo, run from the built wheel; a toy model pretrained on the toy world) are
built once per test session, also when pytest-xdist spreads the session over several worker processes
(:func:`shared_artefact`: the first worker to ask builds, under a file lock; the others wait and read it).
They are read-only: a test that changes one works on a copy (``shutil.copytree``)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TASKSPACE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



def pytest_addoption(parser, pluginmanager):
    """pyproject.toml's addopts start pytest-xdist (``-n auto --dist loadgroup``). Where xdist is not
    loaded (``-p no:xdist``, or not installed) those options are accepted and the tests run in one process."""
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist (not loaded)")
        # _addoption: a lowercase short option, as xdist itself declares it
        group._addoption("-n", "--numprocesses", dest="numprocesses", default=None,
                        help="ignored: pytest-xdist is not loaded")
        group.addoption("--dist", dest="dist", default="no", help="ignored: pytest-xdist is not loaded")


def pytest_configure(config):
    # xdist registers this marker itself; without xdist it is only a grouping hint
    config.addinivalue_line("markers", "xdist_group(name): run on the xdist worker of group NAME")


#: module-scoped fixtures too cheap to keep the tests that use them on one xdist worker
CHEAP_MODULE_FIXTURES = {"one_thread"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """With ``--dist loadgroup`` an unmarked test goes to any worker, so a module-scoped fixture would be
    built once per worker that runs one of its tests. The tests of a module that use one of its
    module-scoped fixtures are grouped (``xdist_group``, the module's path): one worker runs them, and
    builds it once, as a run without xdist does. An explicit ``xdist_group`` mark (tests of several
    modules sharing a session artefact) stays as it is."""
    if not getattr(config.option, "loadgroup", False):     # set on xdist's workers for --dist loadgroup
        return
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group"):
            continue
        if any(name not in CHEAP_MODULE_FIXTURES and any(fd.scope == "module" for fd in defs)
               for name, defs in info.name2fixturedefs.items()):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    # xdist hands out the groups first (largest first), then single tests in this order: the longest
    # first (as long as the last run took, from pytest's cache; else the slow ones first), so that the last
    # tests handed out are short and both workers finish at about the same time. Grouped tests keep their
    # order.
    seconds = config.cache.get(DURATIONS_KEY, {}) if getattr(config, "cache", None) else {}

    def longest_first(item) -> float:
        if item.get_closest_marker("xdist_group"):
            return -math.inf
        return -seconds.get(item.nodeid, 60.0 if item.get_closest_marker("slow") else 0.0)

    items.sort(key=longest_first)


#: pytest's cache entry with each test's duration in the last run (setup + call + teardown, seconds)
DURATIONS_KEY = "taskspace/durations"
_durations: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if not os.environ.get("PYTEST_XDIST_WORKER"):          # the controller (or a run without xdist)
        nodeid = re.sub(r"@[^\[\]:]*$", "", report.nodeid)  # without loadgroup's "@group" suffix
        _durations[nodeid] = _durations.get(nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    cache = getattr(session.config, "cache", None)
    if cache is not None and _durations and not os.environ.get("PYTEST_XDIST_WORKER"):
        cache.set(DURATIONS_KEY, {**cache.get(DURATIONS_KEY, {}), **{k: round(v, 2) for k, v in _durations.items()}})


def pytest_report_header(config):
    if not config.pluginmanager.has_plugin("xdist"):
        return "pytest-xdist not loaded: -n / --dist ignored, one process"


REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKSPACE_SHARED", REPO.parent / "shared"))
BLIMP = SHARED / "data" / "blimp"
GUTENBERG_MODEL = SHARED / "models" / "gutenberg-gpt2-5m"

WORDS = ("the a this these that those cat cats dog dogs girl girls boy boys teacher teachers "
         "sleeps sleep sees see saw seen herself himself themselves itself who which "
         "ran run went gone never ever not any some every all . , ? !").split()


def make_word_tokenizer(bos: bool = True, eos: bool = True, adds_bos: bool = False):
    """A real word-level fast tokenizer over WORDS (+ specials). ``adds_bos``: Llama-style, adds BOS
    by itself when called with special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>"] + (["<s>"] if bos else []) + (["</s>"] if eos else [])
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    kw = {"pad_token": "<pad>", "unk_token": "<unk>"}
    if bos:
        kw["bos_token"] = "<s>"
    if eos:
        kw["eos_token"] = "</s>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


EOT = "<|endoftext|>"
BPE_CORPUS = ["The cat sleeps.", "The cats sleep.", "The girl saw herself.", "The boys saw themselves.",
              "The dog never ran.", "A teacher has seen the dogs.", "These dogs went away.",
              "Those boys have gone home."] * 4


def make_bpe_tokenizer():
    """A real GPT-2-style byte-level BPE tokenizer (no prefix space added; EOS = BOS = <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(BPE_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT)


def make_tiny_model(arch: str = "gpt2", vocab_size: int = 64, seed: int = 0, dtype=None):
    """A real randomly initialised causal LM of the given architecture (gpt2 or gpt_neox)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(cfg)
    elif arch == "gpt_neox":
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                            hidden_dropout=0.0, attention_dropout=0.0)
        model = GPTNeoXForCausalLM(cfg)
    else:
        raise ValueError(arch)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


@pytest.fixture(scope="session", autouse=True)
def share_the_cores_among_xdist_workers():
    """Under pytest-xdist, each worker's torch gets its share of the cores (one thread each for ``-n auto``),
    not all of them: the workers run side by side, and the tests' tiny models gain nothing from threads.
    The processes a test starts (``taskspace`` commands) get the same share (``OMP_NUM_THREADS``), so that
    they compute with as many threads as the test's own process, as without xdist (tests compare their
    results bit for bit). Tests that need a thread count set it themselves (see ``one_thread``)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        yield
        return
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        cpus = os.cpu_count() or 1
    threads, before = max(1, cpus // workers), torch.get_num_threads()
    env_before = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    yield
    torch.set_num_threads(before)
    if env_before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env_before


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A saved tiny GPT-2 + word tokenizer with checkpoints step0/ and step10/ (different weights)."""
    root = tmp_path / "tiny-lm"
    tok = make_word_tokenizer()
    for step, seed in (("step0", 0), ("step10", 1)):
        m = make_tiny_model("gpt2", vocab_size=len(tok), seed=seed)
        m.save_pretrained(root / step)
        tok.save_pretrained(root / step)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and the CI machine is shared: one thread is faster.
    (Also what makes in-process and one-thread worker results comparable bit for bit.)"""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@contextlib.contextmanager
def _capture_fds():
    """File descriptors 1 and 2 sent to temporary files for the block; yields them (read after the
    block). What bypasses ``sys.stdout``/``sys.stderr`` lands there: C code, and the processes the
    command starts (spawned workers inherit the descriptors, as they inherit a subprocess's pipes)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    files = [tempfile.TemporaryFile() for _ in (1, 2)]
    saved = [os.dup(1), os.dup(2)]
    try:
        for f, fd in zip(files, (1, 2)):
            os.dup2(f.fileno(), fd)
        yield files
    finally:
        for fd, s in zip((1, 2), saved):
            os.dup2(s, fd)
            os.close(s)


def _read_back(f) -> str:
    f.seek(0)
    text = f.read().decode("utf-8", errors="replace")
    f.close()
    return text


def run_cli(*args, env: dict | None = None, cwd: str | Path | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """``taskspace ARGS`` run in this process through the console script's function (``taskspace.cli.main``),
    returned as the :class:`subprocess.CompletedProcess` a ``subprocess.run([...], capture_output=True,
    text=True)`` of the installed script gives: ``returncode``, ``stdout``, ``stderr``.

    Why in-process: a new ``taskspace`` process imports torch and transformers again, about 2.3 CPU seconds
    each, ~48 of them per test run; here they are imported once per test process. The code path is the
    installed script's (``main(argv)``: typer's standalone mode, the one-line errors, the exit codes).

    As a process would:

    - the exit code is ``SystemExit``'s (``None`` → 0; a string → 1, the string on stderr); any other
      exception → 1 with its traceback on stderr (so ``"Traceback" not in stderr`` keeps its meaning);
    - stdout and stderr are captured as text at the Python level (click resolves ``sys.stdout`` when it
      writes, the CLI's rich Consoles are made per command and resolve it lazily too, logging handlers
      that hold ``sys.stderr`` are pointed at the capture for the call) and at the descriptor level (C
      code, worker processes the command spawns), the latter appended after the former;
    - ``env`` (variables set on top of ``os.environ``), ``cwd`` and ``sys.argv`` (``["taskspace", *args]``)
      hold for the call only;
    - process-wide state the CLI may change is put back afterwards, also on error: the whole environment,
      the working directory, torch's thread count (``--threads``) and CPU RNG, numpy's and Python's global
      RNGs, transformers' logging verbosity, every logger's level, the warnings filters.

    Not for the tests that must stay real processes: a process killed (``kill -9``, ``TASKSPACE_CRASH_AT``),
    a second process refused a run's lock, the exit behaviour of the installed ``taskspace`` executable and
    of ``python -m taskspace``, what importing does (``import taskspace`` without torch, notebook and
    backend isolation), variables a library reads when it is imported (``HF_HOME``, ``HF_HUB_CACHE``,
    ``HF_HUB_OFFLINE``, ``HF_DATASETS_*``: huggingface_hub's and datasets' constants modules read them once),
    plug-ins installed into another environment, and the wheel's quick demo (:func:`quick_demo`).
    """
    import logging
    import random
    import warnings

    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from taskspace.cli import main

    argv = [str(a) for a in args]
    if (env or {}).get("TASKSPACE_CRASH_AT") or os.environ.get("TASKSPACE_CRASH_AT"):
        raise ValueError("TASKSPACE_CRASH_AT kills the process it is set in: run that command as a subprocess")
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_argv, saved_stdin = dict(os.environ), os.getcwd(), sys.argv, sys.stdin
    threads, torch_rng = torch.get_num_threads(), torch.random.get_rng_state()
    np_rng, py_rng, hf_verbosity = np.random.get_state(), random.getstate(), hf_logging.get_verbosity()
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    levels = [(lg, lg.level) for lg in loggers]
    # handlers made with the stream sys.stderr / sys.stdout was when they were made: the capture, for now
    redirect = {id(sys.stderr): err, id(sys.__stderr__): err, id(sys.stdout): out, id(sys.__stdout__): out}
    handlers = [(h, h.stream) for lg in loggers for h in lg.handlers
                if type(h) is logging.StreamHandler and id(h.stream) in redirect]
    code: int = 0
    with warnings.catch_warnings(), _capture_fds() as (fd_out, fd_err):
        try:
            os.environ.update({k: str(v) for k, v in (env or {}).items()})
            if cwd is not None:
                os.chdir(cwd)
            sys.argv, sys.stdin = ["taskspace", *argv], io.StringIO(input or "")
            for h, stream in handlers:
                h.setStream(redirect[id(stream)])
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(argv)
                except SystemExit as e:
                    if e.code is None or isinstance(e.code, int):
                        code = e.code or 0
                    else:                                  # as Python does with sys.exit("message")
                        print(e.code, file=sys.stderr)
                        code = 1
                except Exception:                          # noqa: BLE001 - an uncaught error, as a process ends
                    traceback.print_exc()
                    code = 1
        finally:
            for h, stream in handlers:
                h.setStream(stream)
            sys.argv, sys.stdin = saved_argv, saved_stdin
            os.chdir(saved_cwd)
            for k in [k for k in os.environ if k not in saved_env]:
                del os.environ[k]
            for k, v in saved_env.items():
                if os.environ.get(k) != v:
                    os.environ[k] = v
            torch.set_num_threads(threads)
            torch.random.set_rng_state(torch_rng)
            np.random.set_state(np_rng)
            random.setstate(py_rng)
            hf_logging.set_verbosity(hf_verbosity)
            for lg, level in levels:
                lg.setLevel(level)
    return subprocess.CompletedProcess(["taskspace", *argv], code, out.getvalue() + _read_back(fd_out),
                                       err.getvalue() + _read_back(fd_err))


def shared_or_skip(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


MINI_NOUNS = [("cat", "cats"), ("dog", "dogs"), ("girl", "girls"), ("boy", "boys"), ("teacher", "teachers")]


#: a small suite with a pair whose good and bad sentences are the same (it contributes nothing)
AGREEMENT_ROWS = [
    ("sv", "agr", "the cat sleeps .", "the cat sleep ."),
    ("sv", "agr", "the teachers who see the dog sleep .", "the teachers who see the dog sleeps ."),
    ("sv", "agr", "these girls sleep .", "these girls sleeps ."),
    ("det", "agr", "this dog ran .", "these dog ran ."),
    ("det", "agr", "those boys never sleep .", "that boys never sleep ."),
    ("det", "agr", "the dog ran .", "the dog ran ."),                      # identical: contributes 0
    ("refl", "ana", "the girl saw herself .", "the girl saw himself ."),
    ("refl", "ana", "the boys who ran saw themselves !", "the boys who ran saw itself !"),
]


def agreement_suite():
    """Three tasks of :data:`AGREEMENT_ROWS` (two groups), one pair per row."""
    from taskspace.suites import Pair, Suite

    return Suite([Pair(t, g, str(i), good, bad) for i, (t, g, good, bad) in enumerate(AGREEMENT_ROWS)],
                 name="mini")


def five_task_suite(name: str = "five"):
    """Five tasks in three groups (agreement ×2, determiners ×2, a reflexive), 15 pairs each: enough to halve
    every task's train / dev / eval pairs."""
    from taskspace.suites import Pair, Suite

    pairs = []
    for i, (s, p) in enumerate(MINI_NOUNS):
        for j, adv in enumerate(("", "never ", "ever ")):
            k = f"{i}{j}"
            pairs += [Pair("sv_sing", "agr", f"a{k}", f"the {s} {adv}sleeps .", f"the {s} {adv}sleep ."),
                      Pair("sv_plur", "agr", f"b{k}", f"the {p} {adv}sleep .", f"the {p} {adv}sleeps ."),
                      Pair("det_sing", "det", f"d{k}", f"this {s} {adv}ran .", f"these {s} {adv}ran ."),
                      Pair("det_plur", "det", f"e{k}", f"these {p} {adv}ran .", f"this {p} {adv}ran ."),
                      Pair("refl", "ana", f"c{k}", f"the {s} {adv}saw itself .", f"the {s} {adv}saw themselves .")]
    return Suite(pairs, name=name)


def mini_suite():
    """Three tasks over the word tokenizer: singular / plural agreement (one group) and a reflexive."""
    from taskspace.suites import Pair, Suite

    pairs = []
    for i, (s, p) in enumerate(MINI_NOUNS):
        pairs += [Pair("sv_sing", "agr", f"a{i}", f"the {s} sleeps .", f"the {s} sleep ."),
                  Pair("sv_plur", "agr", f"b{i}", f"the {p} sleep .", f"the {p} sleeps ."),
                  Pair("refl", "ana", f"c{i}", f"the {s} saw itself .", f"the {s} saw themselves .")]
    return Suite(pairs, name="mini")


def mean_margin(model, tok, pairs) -> float:
    """Mean margin of ``pairs`` under ``model`` as it is now, scored independently of the probes."""
    import torch

    from taskspace.scoring import Scorer, batch_logprobs

    ids = Scorer(model, tok).encode([s for p in pairs for s in (p.good, p.bad)])
    with torch.no_grad():
        lp = batch_logprobs(model, ids, pad_id=0)
    return float((lp[0::2] - lp[1::2]).mean())


# -- artefacts built once per test session (across xdist workers) --------------------------------------

def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder of the whole session: with xdist each worker has its own base folder inside
    it (``popen-gw0``, ...), so its parent is common to all of them."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_artefact(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per test session, whichever worker asks first; returns ``folder``. A build
    that raised is not retried: every later request fails with its traceback."""
    from filelock import FileLock

    root = _session_root(tmp_path_factory)
    folder, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists() and not failed.exists():
            try:
                if folder.exists():
                    shutil.rmtree(folder)
                folder.mkdir()
                build(folder)
            except BaseException:
                failed.write_text(traceback.format_exc(), encoding="utf-8")
                raise
            done.write_text("ok")
    if failed.exists():
        raise RuntimeError(f"building the shared {name!r} failed earlier in this session:\n"
                           + failed.read_text(encoding="utf-8"))
    return folder


def build_wheel(dest: Path, work: Path) -> Path:
    """The wheel of a clean copy of the sources (no build folders or egg-info land in the checkout)."""
    src = work / "source"
    (src / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src" / "taskspace", src / "src" / "taskspace",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # --no-build-isolation: build with the installed setuptools, nothing fetched from a registry
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dest), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = dest.glob("taskspace-*.whl")
    return wheel


@dataclass(frozen=True)
class QuickDemo:
    """``taskspace demo --quick`` as the README runs it (the default ``--out``, ``taskspace-demo``), run
    once by the console script of the built wheel, installed (not editable) in a fresh environment and
    started in a fresh working directory away from the checkout."""

    wheel: Path          # the built wheel
    venv: Path           # the environment it is installed in (system site for torch & co.)
    imported_from: str   # taskspace.__file__ as that environment's python imports it, from ``cwd``
    cwd: Path            # the working directory the demo ran in
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def out(self) -> Path:
        """The demo's run directory (read-only: copy it before changing anything)."""
        return self.cwd / "taskspace-demo"


def _run_quick_demo(folder: Path) -> None:
    wheel = build_wheel(folder / "dist", folder)
    venv = folder / "venv"
    # the installed torch, transformers, ... come from the system site; taskspace only from the wheel.
    # --without-pip: the venv uses the system site's pip (no ensurepip, 3 s)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=300)
    py = venv / "bin" / "python"
    # --ignore-installed: the system site's (editable) taskspace of the same version must not count
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TASKSPACE_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    where = subprocess.run([str(py), "-c", "import taskspace; print(taskspace.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    t0 = time.perf_counter()
    r = subprocess.run([str(venv / "bin" / "taskspace"), "demo", "--quick"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=3600)
    (folder / "result.json").write_text(json.dumps(dict(
        wheel=str(wheel), venv=str(venv), imported_from=where, cwd=str(elsewhere), returncode=r.returncode,
        stdout=r.stdout, stderr=r.stderr, seconds=time.perf_counter() - t0)), encoding="utf-8")


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> QuickDemo:
    """The quick demo, run once per session (see :class:`QuickDemo`; its tests are in the xdist group
    ``demo``, so one worker runs them all). Read-only."""
    folder = shared_artefact(tmp_path_factory, "quick-demo", _run_quick_demo)
    d = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    return QuickDemo(**{k: Path(v) if k in ("wheel", "venv", "cwd") else v for k, v in d.items()})


#: the session's toy-world model: ``taskspace pretrain --corpus toy --size tiny --steps 300`` (seed 0, one
#: torch thread: the same weights on every machine), checkpoints step0 (the untrained init) … step300
TOY_TINY_STEPS = 300


@pytest.fixture(scope="session")
def toy_tiny(tmp_path_factory) -> Path:
    """A tiny GPT-2 pretrained on the toy world (:data:`TOY_TINY_STEPS` steps), built once per session;
    its tests are in the xdist group ``toy_tiny``. Read-only."""
    from taskspace.models.pretrain import pretrain

    folder = shared_artefact(tmp_path_factory, "toy-tiny", lambda f: pretrain(
        "toy", "tiny", f / "toy-tiny", steps=TOY_TINY_STEPS, seed=0, progress=False, threads=1))
    return folder / "toy-tiny"
