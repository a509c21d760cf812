"""Every command the documentation shows runs (issue 17, item 1).

The shell commands of README.md and docs/*.md — every line of a fenced ```bash block (continuation lines
joined, comments dropped, ``a && b`` as two commands) and every indented command line — run here, one
test each (id: the command's first words), in the order the documents give them, on one fresh working
directory laid out so their relative paths resolve:

- ``../shared`` → a link to the shared data and models (the whole test skips when they are absent);
- ``examples/`` → a link to the repository's examples;
- ``plan.toml`` → the README's plan (its ```toml block under "Runs"), with :data:`PLAN_SUBSTITUTIONS`,
  and the ``heldout.txt`` it names beside it;
- ``my-demo`` → a link to ``taskspace-demo``, so ``taskspace demo --quick --out my-demo`` resumes the demo
  the command before it ran (a finished demo: it recomputes nothing) instead of running it twice.

``taskspace demo`` (run as ``taskspace demo --quick``) is the one command not run here: the session runs
exactly that command once, on a fresh working directory, by the console script of the built wheel
(conftest's ``quick_demo``, which tests/test_demo.py and tests/test_packaging.py check too); its outcome is
this command's, and its ``taskspace-demo`` is copied into the working directory for the commands after it.

A command that takes minutes runs with a smaller limit (:data:`SUBSTITUTIONS`: each keeps the command and
every option it has, only smaller; the reasons are in the table) — so the README's figures come from the
full commands, not from here. Optional arguments written ``[--seed 0]`` are left out. Commands that need
the network or would run this test itself are skipped, each with its reason (:data:`SKIPPED`). A
``taskspace`` command runs in this process through the console script's function (``taskspace.cli.main``,
by conftest's ``run_cli``) with the working directory set: the same code path as the installed script,
without paying torch's import once per command. A command that fails (exit code other than 0) fails its
test, with its output.

Each test runs the commands before it first (once each, in order), so one command can be run alone with
``-k``; a command whose prerequisite failed fails too. Expensive set-up is shared: the working directory
and everything the commands wrote in it live for the module.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, SHARED, run_cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: the first word of an indented line that makes it a command line
COMMAND_WORDS = ("taskspace", "python", "python3", "pip", "bash", "scripts/install.sh")
#: two paradigms of one BLiMP group, for the substitutions that narrow a command to a few tasks
TWO_TASKS = "anaphor_gender_agreement,anaphor_number_agreement"
SMALL_FT = "--train-pairs 10 --dev-pairs 5 --eval-pairs 10 --steps 5"

#: documented command (regex on the command as written, optional parts dropped) → why it is not run
SKIPPED = {
    r"^scripts/install\.sh$": "installs packages into the Python that runs these tests (network: the "
                              "package index); the environment is already installed",
    r"^python3? -m pytest": "the whole test suite, of which this test is a part (it would run itself)",
}

#: (regex on the command, replacement, why): applied in order to the commands they match. Each keeps the
#: command, its arguments and every option, only smaller — what the command does is unchanged.
SUBSTITUTIONS = [
    (r"^taskspace demo$", "taskspace demo --quick",
     "the quick demo: every stage on 3 sizes, fewer tasks and steps (the full one takes 11 min idle)"),
    (r"--limit-per-task 200", "--limit-per-task 5", "5 pairs a task, not 200: the same tables, fewer rows"),
    (r"^(taskspace probe (?:gradients|latent) .*?)--train-pairs 100(.*)$", r"\1--train-pairs 10\2",
     "10 training pairs a task, not 100"),
    (r"^(taskspace probe (?:gradients|latent) (?!.*--tasks).*)$", rf"\1 --tasks {TWO_TASKS}",
     "two paradigms of one group, not all 67: a 2 × 2 space of the same kind"),
    (r"^(taskspace probe transfer .*--tasks .*)$", rf"\1 {SMALL_FT}",
     "10 / 5 / 10 pairs a task and 5 fine-tuning steps: the same 4 × 4 spaces"),
    (r"^(taskspace probe transfer (?!.*--tasks).*--workers 2.*)$", rf"\1 --tasks {TWO_TASKS} {SMALL_FT}",
     "two paradigms (not 67, 25.9 min idle) and small splits, still two worker processes"),
    (r"--sentences 100000", "--sentences 2000", "a corpus of 2,000 sentences, not 100,000"),
    (r"^(taskspace pretrain --corpus toy --size small .*)$", r"\1 --steps 20 --sentences 2000 --threads 1",
     "20 training steps of a 2,000-sentence corpus, not 1,500 of 60,000: checkpoints step0 … step20"),
    (r"--revision step1500", "--revision step20",
     "the last checkpoint of the shortened pretraining above (step1500 in full)"),
]

#: (regex on the README's plan, replacement, why) for plan.toml
PLAN_SUBSTITUTIONS = [
    (r"limit_per_task = 200", f"limit_per_task = 10\ntasks = {TWO_TASKS.split(',')!r}".replace("'", '"'),
     "two paradigms of 10 pairs, not 67 of 200"),
    (r"steps = 800, seed = 0", "steps = 20, sentences = 2000, seed = 0",
     "20 training steps of a 2,000-sentence corpus, not 800 (checkpoints step0 … step20)"),
    (r"train_pairs = 100", "train_pairs = 4\ndev_pairs = 2\neval_pairs = 4\nsteps = 3",
     "4 / 2 / 4 pairs a task and 3 fine-tuning steps"),
]
HELDOUT = "The cat sleeps.\nThe dogs see the girl.\nThese boys ran home.\n"

#: the documented command that conftest's ``quick_demo`` runs for this module (see the docstring)
QUICK_DEMO = "taskspace demo --quick"

pytestmark = [pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent"),
              pytest.mark.xdist_group("demo")]          # the worker that runs the shared quick demo


@dataclass(frozen=True)
class DocCommand:
    """One documented command: as written (``written``), as run here (``run``), where it is written."""

    written: str
    where: tuple[str, ...]
    run: str
    skip: str | None
    substitutions: tuple[str, ...]

    @property
    def id(self) -> str:
        words = []
        for w in shlex.split(self.written):
            if w.startswith("--") or len(words) == 4:
                break
            words.append(w)
        return " ".join(words)


def _tokens(line: str) -> list[list[str]]:
    """A command line as token lists: comments dropped, ``[optional]`` groups dropped, split on ``&&``."""
    words = shlex.split(line, comments=True)
    out: list[list[str]] = [[]]
    depth = 0
    for w in words:
        if w == "&&":
            out.append([])
            continue
        if w.startswith("[") and depth == 0:
            depth = 1
        if depth:
            if w.endswith("]"):
                depth = 0
            continue
        out[-1].append(w)
    return [t for t in out if t]


def extract(path: Path) -> list[tuple[str, str]]:
    """``(command, "file:line")`` for every shell command of a Markdown file."""
    rel = path.relative_to(REPO).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[tuple[str, str]] = []
    fence: str | None = None
    pending, start = "", 0
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            continue
        in_bash = fence in ("bash", "sh", "shell")
        indented = (fence is None and line.startswith("    ") and stripped.split(" ", 1)[0] in COMMAND_WORDS
                    and (n == 1 or not lines[n - 2].strip() or lines[n - 2].startswith("    ")))
        if not (in_bash or indented or pending):
            continue
        if not pending:
            start = n
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        for tokens in _tokens(pending):
            found.append((shlex.join(tokens), f"{rel}:{start}"))
        pending = ""
    return found


def _prepare(written: str) -> tuple[str, str | None, tuple[str, ...]]:
    for pattern, why in SKIPPED.items():
        if re.search(pattern, written):
            return written, why, ()
    run, used = written, []
    for pattern, repl, why in SUBSTITUTIONS:
        if re.search(pattern, run):
            run = re.sub(pattern, repl, run)
            used.append(why)
    return run, None, tuple(used)


def documented_commands() -> list[DocCommand]:
    """Every documented command once (a command written twice runs once, at its first place)."""
    seen: dict[str, list[str]] = {}
    for doc in DOCS:
        for cmd, where in extract(doc):
            seen.setdefault(cmd, []).append(where)
    out = []
    for cmd, where in seen.items():
        run, skip, used = _prepare(cmd)
        out.append(DocCommand(cmd, tuple(where), run, skip, used))
    return out


COMMANDS = documented_commands()


def _ids(commands: list[DocCommand]) -> list[str]:
    ids, count = [], {}
    for c in commands:
        count[c.id] = count.get(c.id, 0) + 1
        ids.append(c.id if count[c.id] == 1 else f"{c.id} #{count[c.id]}")
    return ids


def readme_plan() -> str:
    """The README's plan (the ```toml block that starts with ``# plan.toml``), substituted."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"```toml\n# plan\.toml\n(.*?)```", text, re.S)
    assert m, "README.md has no ```toml block starting with '# plan.toml'"
    plan = m.group(1)
    for pattern, repl, _ in PLAN_SUBSTITUTIONS:
        assert re.search(pattern, plan), f"PLAN_SUBSTITUTIONS: {pattern!r} is not in the README's plan"
        plan = re.sub(pattern, repl, plan)
    return plan


class Workdir:
    """The shared working directory and the outcome of each command run in it (each runs once)."""

    def __init__(self, root: Path, quick_demo=None) -> None:
        self.root = root
        self.quick_demo = quick_demo
        self.work = root / "work"
        self.work.mkdir()
        (root / "shared").symlink_to(SHARED, target_is_directory=True)
        (self.work / "examples").symlink_to(REPO / "examples", target_is_directory=True)
        (self.work / "my-demo").symlink_to("taskspace-demo")
        (self.work / "plan.toml").write_text(readme_plan(), encoding="utf-8")
        (self.work / "heldout.txt").write_text(HELDOUT, encoding="utf-8")
        self.results: dict[str, tuple[int, str, float]] = {}

    def run_through(self, cmd: DocCommand) -> tuple[int, str, float]:
        """Run every command up to ``cmd`` that has not run yet, then return ``cmd``'s outcome."""
        for c in COMMANDS:
            if c.skip is None and c.run not in self.results:
                self.results[c.run] = self._execute(c.run)
            if c is cmd:
                break
        return self.results[cmd.run]

    def _execute(self, command: str) -> tuple[int, str, float]:
        if command == QUICK_DEMO and self.quick_demo is not None:
            d = self.quick_demo           # this very command, run once per session on a fresh directory
            if d.out.is_dir():
                shutil.copytree(d.out, self.work / "taskspace-demo", symlinks=True)
            return d.returncode, d.stdout + d.stderr, d.seconds
        words = shlex.split(command)
        t0 = time.perf_counter()
        if words[0] != "taskspace":
            p = subprocess.run(command, shell=True, cwd=self.work, capture_output=True, text=True, timeout=600)
            return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0
        p = run_cli(*words[1:], cwd=self.work)        # in this process, what it changes put back after
        return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, one_thread, quick_demo):
    w = Workdir(tmp_path_factory.mktemp("docs"), quick_demo)
    yield w
    times = ", ".join(f"{c.id}: {w.results[c.run][2]:.0f} s" for c in COMMANDS if c.run in w.results)
    print(f"\ndocumented commands run ({sum(r[2] for r in w.results.values()):.0f} s): {times}")


@pytest.mark.slow
@pytest.mark.parametrize("cmd", COMMANDS, ids=_ids(COMMANDS))
def test_documented_command_runs(cmd: DocCommand, workdir: Workdir):
    if cmd.skip is not None:
        pytest.skip(f"{cmd.written} ({', '.join(cmd.where)}): {cmd.skip}")
    code, output, _ = workdir.run_through(cmd)
    assert code == 0, (f"{cmd.written} ({', '.join(cmd.where)}), run as `{cmd.run}`, exited {code}:\n"
                       f"{output[-4000:]}")


# -- the tables stay honest ---------------------------------------------------------------------------

def test_the_documents_show_the_commands_we_expect():
    """The extraction finds the commands (fenced and indented), and nothing that is not a command."""
    written = {c.written for c in COMMANDS}
    for expected in ("scripts/install.sh", "taskspace demo", "python3 -m pytest -q",
                     "taskspace demo --quick --out my-demo", "taskspace suite info ../shared/data/blimp",
                     "taskspace run examples/pythia.toml --out runs/pythia --dry-run",
                     "taskspace corpus toy --out toy.txt --sentences 100000"):
        assert expected in written, sorted(written)
    assert all(shlex.split(c)[0] in COMMAND_WORDS for c in written), sorted(written)
    assert any(w.startswith("docs/") for c in COMMANDS for w in c.where)


def test_every_skip_and_substitution_is_used_and_keeps_the_command():
    """A table entry that matches no documented command is stale; a substituted command keeps its
    command words, its positional arguments and every option it had (only the values get smaller)."""
    for pattern in SKIPPED:
        assert any(re.search(pattern, c.written) for c in COMMANDS), f"SKIPPED: {pattern!r} matches nothing"
    for pattern, _, _ in SUBSTITUTIONS:
        assert any(re.search(pattern, c.written) or re.search(pattern, _prepare_partial(c.written, pattern))
                   for c in COMMANDS), f"SUBSTITUTIONS: {pattern!r} matches nothing"
    for c in COMMANDS:
        if c.skip is not None or c.run == c.written:
            continue
        before, after = shlex.split(c.written), shlex.split(c.run)
        assert after[:len(c.id.split())] == before[:len(c.id.split())], (c.written, c.run)
        options = [w for w in before if w.startswith("--")]
        assert all(o in after for o in options), (c.written, c.run)
        positional = [w for i, w in enumerate(before) if not w.startswith("-")
                      and (i == 0 or not before[i - 1].startswith("--"))]
        assert all(p in after for p in positional), (c.written, c.run)
    readme_plan()                                    # every plan substitution matches the README's plan
    assert any(c.run == QUICK_DEMO and c.skip is None for c in COMMANDS), "QUICK_DEMO is no documented command"


def _prepare_partial(written: str, upto: str) -> str:
    """``written`` after the substitutions listed before ``upto`` (a later one may match only then)."""
    out = written
    for pattern, repl, _ in SUBSTITUTIONS:
        if pattern == upto:
            break
        out = re.sub(pattern, repl, out)
    return out


def test_the_readme_says_where_figures_come_from():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "tests/test_docs.py" in text and "figures do not come from those runs" in text


def test_the_checkpoints_the_documents_name_are_the_ones_pretraining_saves():
    """The substitutions shorten the toy pretraining, so the test above cannot see a wrong checkpoint name
    in the full command; this checks the names against the rule pretraining follows."""
    from taskspace.models.presets import planned_checkpoints

    pretrain = next(shlex.split(c.written) for c in COMMANDS if c.written.startswith("taskspace pretrain"))
    size = pretrain[pretrain.index("--size") + 1]
    saved = [f"step{n}" for n in planned_checkpoints(size)]
    score = next(shlex.split(c.written) for c in COMMANDS
                 if c.written.startswith("taskspace score --model models/toy-small"))
    assert score[score.index("--revision") + 1] == saved[-1], saved
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    listed = ", ".join([saved[0]] + [s[4:] for s in saved[1:]])
    assert f"{planned_checkpoints(size)[-1]:,} steps: {listed}" in readme
    plan_steps = int(re.search(r'size = "small", steps = (\d+)', readme).group(1))
    in_plan = ", ".join(["step0"] + [str(n) for n in planned_checkpoints("small", plan_steps)[1:]])
    assert f"# {in_plan} (the preset's default: {planned_checkpoints('small')[-1]:,} steps)" in readme
    toy_world = (REPO / "docs" / "toy_world.md").read_text(encoding="utf-8")
    assert ", ".join(f"{n}" for n in planned_checkpoints("small")[1:-1]) in toy_world
