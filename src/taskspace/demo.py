"""``taskspace demo``: the paper's whole design in miniature on the built-in toy English (docs/design.md, "The toy world").

toy suite + corpus → pretrain tiny / small / base with checkpoints → each probe where its registry entry
says (``ProbeSpec.demo``: gradient and overlap probes at every checkpoint, activation and latent probes at
the first and last, lookahead and transfer at each size's last, the costliest at the largest size's last;
control = step0) → compare with the grammar's groups → report. The demo is an ordinary plan (written to
``DIR/plan.toml``, so ``taskspace run DIR/plan.toml --out DIR`` is the same thing) run through
:mod:`taskspace.runs`: an interrupted demo resumes where it stopped.

Budgets (docs/design.md, "Targets"; two CPU cores): full ≤ 15 minutes, ``--quick`` ≤ 1 minute.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .provenance import usable_cpus

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from .runs import RunResult


@dataclass(frozen=True)
class DemoConfig:
    """The knobs of a demo plan. None = the default (preset steps, log-spaced checkpoints, every task)."""

    steps: int | None                     # pretraining steps per model (None: each preset's default)
    checkpoints: tuple[int, ...] | None   # checkpoints besides 0 and the last step (None: log-spaced)
    sentences: int | None                 # toy corpus size (None: pretraining's default)
    pairs_per_task: int                   # pairs kept per task (limit_per_task)
    train_pairs: int
    dev_pairs: int
    eval_pairs: int
    ftgd_steps: int
    eval_every: int
    bootstrap: int
    transfer_revisions: tuple[str, ...]   # where the (costly) transfer probe runs
    tasks_per_group: int | None = None
    max_groups: int | None = None


# The full demo: the presets' own training (each model reaches its quality bar), every toy task,
# gradients and overlap at every checkpoint, transfer on each size's final checkpoint.
FULL = DemoConfig(steps=None, checkpoints=None, sentences=None, pairs_per_task=100, train_pairs=40,
                  dev_pairs=20, eval_pairs=40, ftgd_steps=30, eval_every=10, bootstrap=200,
                  transfer_revisions=("last",))
# --quick: every stage on every size, on a shorter training and fewer tasks / pairs / FTGD steps.
# 20 training pairs, not 10: with 10, three of the six fine-tunings on toy-base never beat step 0
# (both anaphor tasks and dna_noun_swap) and their transfer rows were empty; with 20 every task of
# every size trains (measured: best step 3-6 of 6), where more steps, a larger lr, a larger mask or
# more dev pairs did not help the anaphor tasks.
QUICK = DemoConfig(steps=40, checkpoints=(10,), sentences=3000, pairs_per_task=40, train_pairs=20,
                   dev_pairs=5, eval_pairs=15, ftgd_steps=6, eval_every=3, bootstrap=50,
                   transfer_revisions=("last",), tasks_per_group=2, max_groups=3)


#: where the demo runs each probe is the probe's own registry entry (``ProbeSpec.demo``): the paper's
#: findings over training rest on the gradient, overlap and transfer spaces, which run at every checkpoint
#: or on every size; the activation and latent spaces add little between the ends; probes whose cost grows
#: with T·(1+k) intervened scorings (steering, erasure) stay out of the budget. The demo still names the
#: probes it runs in its plan, as a user writes one.
def demo_probes(*places: str) -> list[str]:
    """The registered probes the demo runs, in registry order; with ``places``, only those run there."""
    from .probes.registry import probes

    return [p.name for p in probes() if p.demo and (not places or p.demo in places)]


def demo_options() -> dict[str, dict[str, object]]:
    """The probe options of the demo's plan (its ``[probe_options.NAME]`` tables): each demo probe's
    registry entry's ``demo_options``."""
    from .probes.registry import probes

    return {p.name: dict(p.demo_options) for p in probes() if p.demo and p.demo_options}


def demo_workers() -> int:
    """Worker processes of one torch thread each for the demo's jobs: one per CPU this process may use,
    at most 4. The demo's models are tiny, and two threads speed one job up far less than two jobs
    running side by side do (``benchmarks/README.md``, "Demo")."""
    return usable_cpus(at_most=4)


def demo_tasks(cfg: DemoConfig) -> list[str] | None:
    """The toy tasks the demo probes: all, or the first ``tasks_per_group`` of the first ``max_groups``."""
    if cfg.tasks_per_group is None and cfg.max_groups is None:
        return None
    from .suites.toy import toy_suite

    suite = toy_suite(seed=0)
    by_group: dict[str, list[str]] = {}
    for task, group in suite.task_groups().items():
        by_group.setdefault(group, []).append(task)
    groups = list(by_group)[: cfg.max_groups]
    return [t for g in groups for t in by_group[g][: cfg.tasks_per_group]]


def demo_plan_text(quick: bool = False) -> str:
    """The demo's plan, as TOML (readable, and the proof that the demo is just a plan)."""
    cfg = QUICK if quick else FULL
    tasks = demo_tasks(cfg)
    lines = [
        f"# taskspace demo{' --quick' if quick else ''}: the toy world, three model sizes, every probe.",
        "# Rerun it with: taskspace run plan.toml --out <this folder>",
        "probes = [" + ", ".join(f'"{p}"' for p in ["score", *demo_probes()]) + "]",
        "report = true",
        "",
        "[suite]",
        'spec = "toy"',
        f"limit_per_task = {cfg.pairs_per_task}",
    ]
    if tasks is not None:
        lines.append("tasks = [" + ", ".join(f'"{t}"' for t in tasks) + "]")
    for size in ("tiny", "small", "base"):
        pre = ['corpus = "toy"', f'size = "{size}"', "seed = 0"]
        if cfg.steps is not None:
            pre.append(f"steps = {cfg.steps}")
        if cfg.sentences is not None:
            pre.append(f"sentences = {cfg.sentences}")
        if cfg.checkpoints is not None:
            pre.append("checkpoints = [" + ", ".join(str(c) for c in cfg.checkpoints) + "]")
        lines += ["", "[[models]]", f'slug = "toy-{size}"', "pretrain = {" + ", ".join(pre) + "}",
                  'revisions = "all"', 'control = "first"']
        if size != "base":
            lines.append("probes = [" + ", ".join(f'"{p}"' for p in ["score", *demo_probes("every", "ends", "last")])
                         + "]")
    lines += [
        "",
        "[settings]",
        f"train_pairs = {cfg.train_pairs}",
        f"dev_pairs = {cfg.dev_pairs}",
        f"eval_pairs = {cfg.eval_pairs}",
        f"steps = {cfg.ftgd_steps}",
        # the toy models are tiny and their FTGD budget a few steps: the paper's objective and step size
        # (the library's default, logistic at 1e-4, barely moves them in 6-30 steps)
        'objective = "difference"',
        "lr = 0.001",
        f"eval_every = {cfg.eval_every}",
        f"bootstrap = {cfg.bootstrap}",
        "",
        "[probe_revisions]",
        *(f'"{p}" = [' + ", ".join(f'"{r}"' for r in cfg.transfer_revisions) + "]"
          for p in demo_probes("last", "largest")),
        *(f'"{p}" = ["first", "last"]' for p in demo_probes("ends")),
        "",
        "[executor]",
        'kind = "local"',
        f"workers = {demo_workers()}",
        "cpus_per_job = 1",
        "",
    ]
    for name, options in demo_options().items():
        lines += [f'[probe_options."{name}"]', *(f"{k} = {json.dumps(v)}" for k, v in options.items()), ""]
    return "\n".join(lines)


def run_demo(out: str | Path = "taskspace-demo", *, quick: bool = False) -> "RunResult":
    """Write ``out/plan.toml`` and run it (resuming whatever an earlier, interrupted demo left)."""
    from .runs import parse_plan_text, run_plan

    out = Path(out)
    text = demo_plan_text(quick)
    plan = parse_plan_text(text, source=str(out / "plan.toml"))
    return run_plan(plan, out, plan_text=text)


def print_headline(console: "Console", out: str | Path) -> None:
    """The headline numbers of the largest model, then the paper's findings next to what this run
    shows, with the verdicts the analysis computed (from ``comparison.json``)."""
    from rich.markup import escape

    from .io import read_json

    path = Path(out) / "comparison.json"
    if not path.exists():
        return
    cmp = read_json(path)
    head = cmp.get("headline") or {}
    if head.get("model"):
        console.print(f"[bold]Headline[/bold] ({head['model']} @ {head.get('revision')}, vs the groups of "
                      f"the toy grammar):")
        for line in head.get("lines", []):
            if ":" in line and line.split(":", 1)[1].strip() in {f.get("verdict") for f in cmp.get("findings", [])}:
                continue  # the verdict lines are printed with the findings below
            console.print("  " + escape(line))
    findings = cmp.get("findings") or []
    if findings:
        console.print("[bold]The paper's findings, and what this toy run shows[/bold]")
    for f in findings:
        console.print(f"• [bold]{escape(f.get('title', f.get('id', '')))}[/bold] — {escape(f.get('verdict', ''))}")
        if f.get("paper"):
            console.print(f"    paper:    {escape(f['paper'])}")
        if f.get("this_run"):
            console.print(f"    this run: {escape(f['this_run'])}")
