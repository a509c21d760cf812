"""Readable terminal tables (rich) of a comparison dict, as written to ``comparison.json``."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..probes.registry import main_spaces
from .findings import fmt_ci, label

# rich is imported where a table is printed: the analysis runs without the terminal's libraries

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.table import Table

_VERDICT_STYLE = {"reproduced": "green", "partly reproduced": "yellow", "not reproduced": "red",
                  "inconclusive": "dim"}


def _f(x: Any, signed: bool = True) -> str:
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(x: Any, ci: Any, signed: bool = True) -> str:
    """``+0.123 [+0.01, +0.20]`` (two decimals inside the interval, so the table stays narrow)."""
    c = fmt_ci(ci, signed, 2)
    return f"{_f(x, signed)} {c}" if c and _f(x) != "–" else _f(x, signed)


def _p(x: Any) -> str:
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        return "–"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def print_comparison(console: "Console", cmp: dict, *, all_spaces: bool = False) -> None:
    """Print the theory table, the generalisation table, the dynamics and the findings."""
    console.print(_theory_table(cmp, all_spaces))
    _print_reliability(console, cmp)
    if any(not (s.get("coverage") or {"complete": True})["complete"] for c in cmp["cells"] for s in c["spaces"].values()):
        console.print("* incomplete: rows missing (a fine-tuning failed or never beat step 0); the numbers "
                      "rest on the rows shown, and a size verdict is withheld", highlight=False)
    _print_generalization(console, cmp)
    _print_dynamics(console, cmp)
    _print_findings(console, cmp)


def _theory_table(cmp: dict, all_spaces: bool) -> "Table":
    """One row per checkpoint and space: the space against the hypothesis space, and against its control."""
    from rich.table import Table

    t = Table(title="task spaces against theory (H: 1 within a group, 0 across), each read in its declared direction "
                    "(↓: lower = related) and reading; [95% bootstrap interval over tasks]; q = Benjamini–Hochberg "
                    "over the checkpoint's spaces († the smallest attainable p is above 0.05); rel = split-half "
                    "reliability, ceil = pair-sampling ceiling of ρ (from spaces/halves/)",
              title_justify="left")
    for col in ("checkpoint", "space", "rows", "within", "between", "gap", "AUC", "ρ with H", "ρ÷ρmax", "p", "q",
                "rel", "ceil", "ARI", "gap − control"):
        t.add_column(col, justify="left" if col in ("checkpoint", "space") else "right",
                     no_wrap=col in ("checkpoint", "space"))
    for c in cmp["cells"]:
        for name, s in c["spaces"].items():
            if not all_spaces and name not in main_spaces() and any(n in c["spaces"] for n in main_spaces()):
                continue
            t.add_row(*_theory_row(c, name, s))
    return t


def _theory_row(c: dict, name: str, s: dict) -> list[str]:
    vc = c["versus_control"].get(name)
    cov = s.get("coverage")
    # how many rows the numbers rest on; an incomplete space (failed fine-tunings) in red
    rows = (f"{cov['rows']}/{cov['of']}" if cov["complete"] else f"[red]{cov['rows']}/{cov['of']}*[/red]"
            ) if cov else "–"
    rel = s.get("reliability") or {}
    d = s[s.get("reading", "signed")]
    tag = (" ↓" if s.get("related") == "lower" else "") + (" |S|" if s.get("reading") == "absolute" else "")
    mp = s.get("min_p")
    return [c["id"] + (" (control)" if c.get("is_control") else ""), name + tag, rows,
            _f(d["within"]), _f(d["between"]), _ci(d["difference"], d.get("difference_ci")),
            _ci(d.get("auc"), d.get("auc_ci")), _ci(d["rho"], d.get("rho_ci")), _f(d.get("rho_ratio"), False),
            _p(d["p"]) + ("†" if isinstance(mp, (int, float)) and mp > 0.05 else ""), _p(d.get("q")),
            _f(rel.get("reliability"), False), _f((rel.get("full") or {}).get("ceiling"), False),
            _f(s["ari"]) + f" p {_p(s.get('ari_p'))}",
            (_ci(vc["difference"]["difference"], vc.get("difference_ci")) + f" p {_p(vc.get('p'))}")
            if vc else "–"]


def _print_generalization(console: "Console", cmp: dict) -> None:
    from rich.table import Table

    for name, g in cmp.get("generalization", {}).items():
        tab = g["by_size"] if len(g["by_size"]["columns"]) > 1 else g["by_checkpoint"]
        gt = Table(title=f"per-group generalisation: {label(name)}, mean ± std over a ≠ b in the group "
                         "[95% interval over the group's tasks]",
                   title_justify="left")
        gt.add_column("group")
        for col in tab["columns"]:
            gt.add_column(col, justify="right")
        for grp in tab["groups"]:
            cells = [tab["cells"][grp].get(col, {}) for col in tab["columns"]]
            gt.add_row(grp, *[(f"{_f(c.get('mean'))} ± {_f(c.get('std'), False)}"
                               + (f" {fmt_ci(c.get('ci'), True, 2)}" if fmt_ci(c.get("ci")) else ""))
                              if c.get("mean") is not None else "–" for c in cells])
        console.print(gt)


def _print_dynamics(console: "Console", cmp: dict) -> None:
    from rich.table import Table

    for slug, per in cmp.get("dynamics", {}).items():
        names = [n for n in main_spaces() if n in per]
        if not names:
            continue
        dt = Table(title=f"{slug} over training: gap (within − between), ρ with the next / final space (raw); "
                         "stability below: noise-corrected across halves", title_justify="left")
        dt.add_column("revision")
        for n in names:
            dt.add_column(f"{n} gap", justify="right")
            dt.add_column("ρ next", justify="right")
            dt.add_column("ρ final", justify="right")
        revs = per[names[0]]["revisions"]
        for i, r in enumerate(revs):
            row = [r]
            for n in names:
                d = per[n]
                row += [_f(d["difference"][i]), _f(d["rho_next"][i]) if i < len(d["rho_next"]) else "",
                        _f(d["rho_final"][i])]
            dt.add_row(*row)
        console.print(dt)
        for n in names:
            st = per[n].get("stability") or {}
            console.print(f"  {n}: {st.get('verdict', 'inconclusive')} — {st.get('reason', '')}", highlight=False)


def _print_findings(console: "Console", cmp: dict) -> None:
    console.print("[bold]The paper's findings, next to this run[/bold]")
    for f in cmp.get("findings", []):
        style = _VERDICT_STYLE.get(f["verdict"], "")
        console.print(f"• {f['title']}: [{style}]{f['verdict']}[/{style}]")
        console.print(f"  {f['this_run']}", highlight=False)
    ac = cmp.get("above_chance")
    if ac:
        console.print(f"[bold]Over the {ac['n_tasks']} tasks above chance[/bold] ({ac['rule']})", highlight=False)
        if ac.get("skipped"):
            console.print(f"  skipped: {ac['skipped']}", highlight=False)
        for line in (ac.get("headline") or {}).get("lines", []):
            console.print(f"  {line}", highlight=False)


def _print_reliability(console: "Console", cmp: dict) -> None:
    """Per halves space: split-half reliability, the noise ceilings, theory as a fraction of them."""
    from rich.table import Table

    rows = [(c, name, r) for c in cmp["cells"] for name, r in (c.get("reliability") or {}).items()]
    if not rows:
        return
    t = Table(title="how much of each space is signal (spaces/halves/: the probe on two disjoint halves of every "
                    "task's pairs)", title_justify="left")
    for col in ("checkpoint", "space", "tasks", "split-half r", "reliability (SB)", "ceiling half [lo, up]",
                "ρ(H, half)", "÷ ceiling", "ρ(H, full)", "ceiling full", "÷ ceiling", "self-sim mean / min",
                "flagged"):
        t.add_column(col, justify="left" if col in ("checkpoint", "space") else "right",
                     no_wrap=col in ("checkpoint", "space"))
    for c, name, r in rows:
        if "error" in r:
            t.add_row(c["id"], name, *(["–"] * 10), r["error"][:40])
            continue
        nc, th, full, ss = r["noise_ceiling"], r["theory"], r.get("full") or {}, r["self_similarity"]
        t.add_row(c["id"] + (" (control)" if c.get("is_control") else ""), name, str(r["n_tasks"]),
                  _ci(r["split_half"], r.get("split_half_ci")), _f(r["reliability"], False),
                  f"[{_f(nc['lower'])}, {_f(nc['upper'])}]", _f(th["rho"]),
                  f"{_f(th['fraction_of_upper'], False)}–{_f(th['fraction_of_lower'], False)}",
                  _f(full.get("rho")), _f(full.get("ceiling"), False),
                  "withheld" if full.get("withheld") else _ci(full.get("fraction"), full.get("fraction_ci")),
                  f"{_f(ss['mean'])} / {_f(ss['min'])}", str(len(r["flagged"])))
    console.print(t)
    console.print("ceiling half: Nili et al. lower (ρ of the two halves) and upper bound for ρ with one half; "
                  "ceiling full = ρ_max(H) · sqrt(reliability), the pair-sampling ceiling of ρ with the full space "
                  "(÷ ceiling withheld where the reliability's interval reaches below 0.2); flagged: "
                  + (rows[0][2].get("rule") or ""), highlight=False)
