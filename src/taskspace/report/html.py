"""``report.html``: one self-contained page (plotly.js inlined, no network) with the headline numbers
first, the paper's findings next to this run's, interactive heatmaps (hover: task a, task b, value, CI),
the tables, the static figures and the provenance."""
from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..analysis.bootstrap import excludes_zero
from ..analysis.collect import RunData, _read_json, load_run
from ..analysis.compare import SCHEMA, compare_run
from ..analysis.findings import fmt_ci, fmt_p, fmt_value, is_number, label
from ..analysis.hypothesis import group_order
from ..analysis.stats import coverage_note
from ..io import remove_stale_temps, write_text
from ..probes.registry import generalization_spaces, main_spaces, space_spec
from ..probes.settings import BOOTSTRAP
from ..spaces import TaskSpace
from .figures import _slug, is_signed, static_spaces, write_figures

# plotly (optional) is imported where an interactive figure is embedded

# -- small formatting helpers ----------------------------------------------------------------------
_ok = is_number


def _f(x: Any, signed: bool = True, digits: int = 3) -> str:
    return fmt_value(x, signed, digits, missing="–")


def _p(x: Any) -> str:
    return fmt_p(x, missing="–")


def _fc(x: Any, ci: Any, signed: bool = True) -> str:
    """``value [lo, hi]``: the value with its 95% interval in small type (the value alone without one)."""
    c = fmt_ci(ci, signed, 2)
    return f'{_f(x, signed)} <small class="ci">{c}</small>' if c and _ok(x) else _f(x, signed)


def _rel(s: dict) -> tuple[str, str]:
    """(reliability, noise ceiling) cells of a space summary with a halves space beside it."""
    r = s.get("reliability") or {}
    return _f(r.get("reliability"), False), _f((r.get("full") or {}).get("ceiling"), False)


def _e(s: Any) -> str:
    return html.escape(str(s))


def _color(v: Any, vmax: float) -> dict:
    """Background on a red (positive) / blue (negative) scale, white at 0."""
    if not _ok(v) or vmax <= 0:
        return {}
    t = max(-1.0, min(1.0, v / vmax))
    a = abs(t) * 0.55
    rgb = (214, 96, 77) if t > 0 else (67, 147, 195)
    return {"style": f"background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.2f})"}


def _table(header: list[str], rows: Iterable[list], left: int = 1, cls: str = "") -> str:
    """Cells are already-escaped HTML, or ``(html, {"style": ..., "class": ..., "colspan": ...})``."""
    out = [f'<div class="scroll"><table class="{cls}"><tr>']
    out += [f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header)]
    out.append("</tr>")
    for r in rows:
        out.append("<tr>")
        for i, c in enumerate(r):
            text, attrs = c if isinstance(c, tuple) else (c, {})
            classes = " ".join(x for x in ("l" if i < left else "", attrs.get("class", "")) if x)
            extra = "".join(f' {k}="{v}"' for k, v in attrs.items() if k != "class")
            out.append(f'<td class="{classes}"{extra}>{text}</td>')
        out.append("</tr>")
    out.append("</table></div>")
    return "".join(out)


def _badge(verdict: str) -> str:
    return f'<span class="badge v-{_e(verdict.replace(" ", "-"))}">{_e(verdict)}</span>'


def _img(path: Path, caption: str) -> str:
    if not path.exists():
        return ""
    b64 = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# -- data for the interactive explorer ---------------------------------------------------------------
def _round(m: np.ndarray | None) -> list | None:
    if m is None:
        return None
    return [[float(f"{x:.4g}") if np.isfinite(x) else None for x in row] for row in m]


def _payload(space: TaskSpace) -> dict:
    s = space.select([space.tasks[i] for i in group_order(space.groups)])
    has_ci = s.ci_low is not None and s.ci_high is not None and (np.isfinite(s.ci_low).any())
    return {"tasks": s.tasks, "groups": s.groups, "z": _round(s.matrix),
            "lo": _round(s.ci_low) if has_ci else None, "hi": _round(s.ci_high) if has_ci else None}


def explorer_data(run: RunData, cmp: dict) -> dict:
    """Matrices (group-ordered, 4 significant digits) and the list of views for the explorer."""
    shown = [n for n in main_spaces() if n in run.probes] or run.probes
    cells: dict[str, dict] = {}
    spaces: dict[str, dict] = {}
    views: list[dict] = []
    headline = cmp.get("headline", {})
    default = 0
    for name in shown:
        transfer_like = _transfer_like(name)
        signed = True
        for m, c in run.cells():
            if name in c.spaces:
                cid = f"{m.slug}@{c.revision}"
                cells.setdefault(cid, {})[name] = _payload(c.spaces[name])
                signed = is_signed(c.spaces[name])
        spaces[name] = {"label": label(name), "signed": signed,
                        "row": "fine-tuned on (a)" if transfer_like else "task a",
                        "col": "evaluated on (b)" if transfer_like else "task b"}
        for m in reversed(run.models):
            for rev in reversed(m.revisions):
                cell = m.cells[rev]
                if name not in cell.spaces:
                    continue
                ctrl = m.control_of(rev)
                cid = f"{m.slug}@{rev}"
                panels = [{"title": f"{m.slug} @ {rev}", "cell": cid, "space": name}]
                text = f"{label(name)} — {m.slug} @ {rev}"
                if ctrl is not None and name in ctrl.spaces:
                    kid = f"{m.slug}@{ctrl.revision}"
                    cells.setdefault(kid, {})[name] = _payload(ctrl.spaces[name])
                    panels += [{"title": f"control: {ctrl.revision}", "cell": kid, "space": name},
                               {"title": "difference", "cell": cid, "minus": kid, "space": name}]
                    text += f" beside its control ({ctrl.revision}) and the difference"
                if (m.slug == headline.get("model") and rev == headline.get("revision")
                        and name == next((n for n in _preference() if n in shown), name)
                        and not views[default:default + 1] == [] and default == 0):
                    default = len(views)
                views.append({"group": label(name), "label": text, "space": name, "panels": panels,
                              "caption": _caption(name)})
        finals = [m for m in run.models if m.final is not None and name in m.final.spaces]
        if len(finals) > 1:
            views.append({"group": label(name), "label": f"{label(name)} — model sizes side by side (final checkpoints)",
                          "space": name, "caption": _caption(name),
                          "panels": [{"title": f"{m.slug} @ {m.final.revision}", "cell": f"{m.slug}@{m.final.revision}",
                                      "space": name} for m in finals]})
        for m in run.models:
            revs = [r for r in m.revisions if name in m.cells[r].spaces]
            if len(revs) > 1:
                views.append({"group": label(name), "label": f"{label(name)} — {m.slug} over training",
                              "space": name, "caption": _caption(name),
                              "panels": [{"title": f"{m.slug} @ {r}", "cell": f"{m.slug}@{r}", "space": name}
                                         for r in revs]})
    return {"cells": cells, "spaces": spaces, "views": views, "default_view": default}


def _transfer_like(name: str) -> bool:
    """Rows and columns mean different things (fine-tuned on / evaluated), per the registry."""
    spec = space_spec(name)
    return spec is not None and spec.rows != spec.columns


def _preference() -> list[str]:
    """The space a headline or the explorer opens on: the first normalised transfer space, else the first
    main space."""
    return [*generalization_spaces()[:1], *main_spaces()]


def _caption(name: str) -> str:
    if _transfer_like(name):
        return ("Rows: the task fine-tuned on (a); columns: the task evaluated (b). Tasks ordered by group, "
                "black lines separate groups. Hover for the value and its bootstrap 95% CI.")
    return "Tasks ordered by group; black lines separate groups. Hover for the pair of tasks and the value."


# -- sections ---------------------------------------------------------------------------------------
def _main_space(cmp: dict) -> str | None:
    spaces = cmp.get("headline", {}).get("spaces", {})
    return next((n for n in _preference() if n in spaces), next(iter(spaces), None))


def _headline(cmp: dict) -> str:
    h = cmp.get("headline", {})
    main = _main_space(cmp)
    cards = [_theory_card(h, main)] if main else []
    cards += [_finding_card(f) for f in cmp.get("findings", [])]
    table = _headline_table(h)
    where = f"{_e(h.get('model'))} @ {_e(h.get('revision'))}" if h.get("model") else ""
    ac = cmp.get("above_chance")
    if ac:
        lines = (ac.get("headline") or {}).get("lines") or [f"skipped: {ac.get('skipped', '')}"]
        table += (f'<p class="note"><b>Over the {ac["n_tasks"]} tasks above chance</b> ({_e(ac["rule"])}):</p><ul>'
                  + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>")
    return (f'<section id="headline"><h2>Headline</h2><div class="cards">{"".join(cards)}</div>'
            f"<h3>The largest model's final checkpoint ({where}) against theory</h3>{table}"
            '<p class="note">Each space is read in its declared direction (erasure, ablation: lower = related) and '
            "reading (signed or |S|; the other reading is shown, not tested). gap = mean over groups of the "
            "group's within-group mean − its mean with other tasks; AUC = P(within cell outranks between cell); "
            "ρ = Spearman with the hypothesis space H (1 within a group, 0 across), one-sided Mantel permutation "
            "test, q = Benjamini–Hochberg over the checkpoint's spaces; ρ ÷ ρmax = ρ as a share of the most a "
            "perfectly grouped space reaches under H's ties; ARI = average-linkage clusters vs groups. [95% CI]: "
            "percentile bootstrap over tasks (resampled within their groups). reliability = split-half "
            "reliability (Spearman–Brown); pair-sampling ceiling = ρmax · sqrt(reliability), the most ρ can reach "
            "given the pairs (see “How much is signal”).</p></section>")


def _theory_card(h: dict, main: str) -> str:
    """The headline's first card: does the main space match the hypothesis space?"""
    e = h["spaces"][main]
    # with an interval, the gap must exclude 0 (above it), not only be positive

    above = (excludes_zero(e["difference_ci"]) > 0 if fmt_ci(e.get("difference_ci"))
             else _ok(e["difference"]) and e["difference"] > 0)
    q = e.get("q") if _ok(e.get("q")) else e["p"]
    match = _ok(q) and q < 0.05 and above
    cov = e.get("coverage")
    # no yes/no from a matrix with missing rows: it would rest on the tasks that happened to train
    verdict = "withheld" if cov and not cov["complete"] else "yes" if match else "no"
    detail = (f"{_e(label(main))} on {_e(coverage_note(cov) or '?')}, {_e(h['model'])} @ {_e(h['revision'])}: within {_f(e['within'])} vs "
              f"between {_f(e['between'])}; Mantel p = {_p(e['p'])}; clusters vs groups ARI {_f(e['ari'])}")
    if fmt_ci(e.get("rho_ci")):
        detail += f"; ρ 95% CI {fmt_ci(e['rho_ci'])}"
    rel = e.get("reliability") or {}
    detail += f"; AUC {_f(e.get('auc'), False)}, ρ ÷ ρmax {_f(e.get('rho_ratio'), False, 2)}"
    if _ok(rel.get("ceiling")):
        share = ("share withheld (reliability too low)" if rel.get("withheld") else
                 f"ρ is {_fc(rel.get('fraction'), rel.get('fraction_ci'), False)} of it")
        detail += (f"; pair-sampling ceiling {_f(rel['ceiling'], False)} (split-half reliability "
                   f"{_f(rel.get('reliability'), False)}): {share}")
    if e.get("control"):
        detail += (f"; control ({_e(e['control'])}) gap {_f(e['control_difference'])}, trained − control "
                   f"{_fc(e.get('gain_over_control'), e.get('gain_over_control_ci'))} "
                   f"(permutation p {_p(e.get('gain_over_control_p'))})")
    return (f'<div class="card"><div class="q">Does the task space match linguistic theory?</div>'
            f'<div class="big">ρ = {_f(e["rho"])} {_badge(verdict)}</div>'
            f'<div class="detail">{detail}</div></div>')


def _finding_card(f: dict) -> str:
    """The headline's card of one finding: its question, its numbers and its verdict."""
    n = f.get("numbers") or {}
    if f["id"] == "sizes" and n.get("models"):
        big = " → ".join(_f(x) for x in n["difference"])
        detail = f"within − between {_e(label(f['space']))}: " + ", ".join(_e(m) for m in n["models"])
    elif f["id"] == "sharing" and n:
        big = "; ".join(f"slope {_fc(v['slope'], v.get('slope_ci'))}" for v in n.values())
        detail = f"within − between {_e(label(f['space']))} per log step over training, per model"
    elif f["id"] == "smooth" and n:
        big = "; ".join(_e(v["verdict"]) for v in n.values())
        detail = "noise-corrected change between checkpoints ÷ the median of the others (sudden above 3)"
    else:
        big, detail = "–", _e(f["this_run"])
    q = {"sizes": "Does it grow with model size?", "sharing": "Does sharing grow with training?",
         "smooth": "Does it change smoothly over training?"}.get(f["id"], f["title"])
    return (f'<div class="card"><div class="q">{_e(q)}</div><div class="big">{big}</div>'
            f'<div>{_badge(f["verdict"])}</div><div class="detail">{detail}</div></div>')


def _headline_table(h: dict) -> str:
    """Every space of the headline checkpoint against theory, one row each."""
    rows = []
    for name, e in h.get("spaces", {}).items():
        r = e.get("reliability") or {}
        rows.append([_e(label(name)) + (f" ({_e(coverage_note(e['coverage']))})" if e.get("coverage") else ""),
                     _f(e["within"]), _f(e["between"]), _fc(e["difference"], e.get("difference_ci")),
                     _fc(e.get("auc"), e.get("auc_ci"), False), _fc(e["rho"], e.get("rho_ci")),
                     _f(e.get("rho_ratio"), False, 2), _p(e["p"]), _p(e.get("q")), _f(r.get("reliability"), False),
                     _f(r.get("ceiling"), False),
                     "withheld" if r.get("withheld") else _fc(r.get("fraction"), r.get("fraction_ci"), False),
                     _f(e["difference_other"]), _f(e["rho_other"]), _f(e["ari"]) + f" (p {_p(e.get('ari_p'))})",
                     _f(e.get("control_difference")),
                     _fc(e.get("gain_over_control"), e.get("gain_over_control_ci"))
                     + (f" (p {_p(e.get('gain_over_control_p'))})" if e.get("control") else "")])
    return _table(["space", "within", "between", "gap [95% CI]", "AUC", "ρ with H [95% CI]", "ρ ÷ ρmax", "Mantel p",
                   "q (BH)", "reliability", "pair-sampling ceiling", "ρ ÷ ceiling", "other reading: gap", "ρ",
                   "ARI (permutation p)", "control gap",
                   "gap − control gap"], rows) if rows else ""


def _findings(cmp: dict) -> str:
    rows = []
    for f in cmp.get("findings", []):
        wrap = {"class": "wrap"}
        rows.append([(f"<b>{_e(f['title'])}</b><br>{_e(f['paper'])}", wrap), (_e(f["this_run"]), wrap),
                     _badge(f["verdict"]), (f'<span style="color:var(--muted)">{_e(f.get("rule", ""))}</span>', wrap)])
    return ('<section id="findings"><h2>The paper\'s findings, next to this run</h2>'
            + _table(["the paper (Weber et al. 2024)", "this run", "verdict", "rule"], rows, left=4,
                     cls="findings")
            + "</section>")


def _explorer() -> str:
    return ('<section id="explorer"><h2>Task spaces (interactive)</h2><div class="explorer">'
            '<label>view: <select id="ts-view"></select></label><div id="ts-plot" class="plot"></div>'
            '<p class="note" id="ts-caption"></p></div></section>')


def _summary_table(cmp: dict) -> str:
    rows = []
    for c in cmp.get("cells", []):
        for name, s in c["spaces"].items():
            vc = c["versus_control"].get(name)
            reading = s.get("reading", "signed")
            d, o = s[reading], s["absolute" if reading == "signed" else "signed"]
            tag = ("" if s.get("related", "higher") == "higher" else ", lower = related") + (
                ", |S|" if reading == "absolute" else "")
            rows.append([_e(c["model"]), _e(c["revision"]) + (" (control)" if c.get("is_control") else ""),
                         _e(label(name)) + _e(tag), _e(coverage_note(s.get("coverage")) or s["n_tasks"]),
                         _f(d["within"]), _f(d["between"]), _fc(d["difference"], d.get("difference_ci")),
                         _fc(d.get("auc"), d.get("auc_ci"), False), _fc(d["rho"], d.get("rho_ci")),
                         _f(d.get("rho_ratio"), False, 2), _p(d["p"]) + _minp(s), _p(d.get("q")), *_rel(s),
                         _f(s["ari"]) + f" (p {_p(s.get('ari_p'))})",
                         _f(o["difference"]), _f(o["rho"]),
                         (_fc(vc["difference"]["difference"], vc.get("difference_ci"))
                          + f" (p {_p(vc.get('p'))}, q {_p(vc.get('q'))})") if vc else "–",
                         _e(", ".join(s["dropped"])) or ""])
    return ('<section id="theory"><h2>Every task space against theory</h2>'
            + _table(["model", "revision", "space", "tasks", "within", "between", "gap", "AUC", "ρ", "ρ ÷ ρmax",
                      "p", "q (BH)", "reliability", "ceiling", "ARI", "other reading: gap", "ρ", "gap − control",
                      "left out"], rows, left=3)
            + '<p class="note">Each space is read in the direction its probe declares (erasure and ablation: a '
              "related task drops more, so the gap is between − within) and in one declared reading (signed or "
              "|S|); only that reading is tested, the other is shown. gap = mean over groups of (within-group "
              "mean − the group's mean with other tasks). AUC = P(within cell outranks between cell), 0.5 = none, "
              "1 = perfect; ρ ÷ ρmax = ρ as a share of what a perfectly grouped space reaches under the "
              "hypothesis' ties (= 2·AUC − 1 without ties). p: one-sided Mantel test; † the smallest p these "
              "groups allow is above 0.05. q: Benjamini–Hochberg over the checkpoint's spaces. Small type: 95% "
              "percentile bootstrap intervals over tasks (tasks resampled within their groups; withheld where "
              "most groups have fewer than three tasks). ARI p: random relabelling of the groups. gap − control: "
              "the trained gap minus the control checkpoint's, paired over tasks, with the permutation p of the "
              "gap of (trained − control) under random relabelling of the tasks (H0: training added no group "
              "structure) and its Benjamini–Hochberg q over the checkpoint's spaces.</p></section>")


def _minp(s: dict) -> str:
    mp = s.get("min_p")
    return "†" if _ok(mp) and mp > 0.05 else ""


def _reliability(cmp: dict) -> str:
    """Per halves space: split-half reliability, noise ceilings, theory as a fraction of them, and the
    tasks whose two halves do not agree (flagged)."""
    rows, details = [], []
    for c in cmp.get("cells", []):
        for name, r in (c.get("reliability") or {}).items():
            where = _e(c["id"]) + (" (control)" if c.get("is_control") else "")
            if "error" in r:
                rows.append([where, _e(label(name)), (_e(r["error"]), {"colspan": "10", "class": "wrap"})])
                continue
            nc, th, full, ss = r["noise_ceiling"], r["theory"], r.get("full") or {}, r["self_similarity"]
            flagged = r.get("flagged") or []
            rows.append([where, _e(label(name)), str(r["n_tasks"]), _fc(r["split_half"], r.get("split_half_ci"), False),
                         _fc(r["reliability"], r.get("reliability_ci"), False),
                         f"{_f(nc['lower'])} – {_f(nc['upper'])}", _f(th["rho"]),
                         f"{_f(th['fraction_of_upper'], False, 2)} – {_f(th['fraction_of_lower'], False, 2)}",
                         _f(full.get("rho")), _f(full.get("ceiling"), False),
                         _fc(full.get("fraction"), full.get("fraction_ci"), False) if not full.get("withheld")
                         else "withheld",
                         f"{_f(ss['mean'])} / {_f(ss['min'])} (between {_f(r['between']['mean'])})",
                         (_e(", ".join(flagged)) or "none", {"class": "wrap"})])
            trows = [[_e(t["task"]), _e(t["group"]), _f(t["self_similarity"]), _f(t["others_mean"]),
                      _f(t["others_max"]), _f(t["self_rank"], False, 2), _f(t["row_reliability"]),
                      "<b>flagged</b>" if t["flagged"] else ""]
                     for t in sorted(r.get("tasks") or [], key=lambda t: (not t["flagged"], -(t["self_similarity"] if _ok(t["self_similarity"]) else -9)))]
            if trows:
                details.append(f"<details><summary>{where}, {_e(label(name))}: every task</summary>"
                               + _table(["task", "group", "self-similarity", "mean to others", "max to others",
                                         "share of others below", "row reliability", ""], trows, left=2)
                               + "</details>")
    if not rows:
        return ""
    rule = next((r.get("rule") for c in cmp.get("cells", []) for r in (c.get("reliability") or {}).values()
                 if r.get("rule")), "")
    return ('<section id="reliability"><h2>How much of each space is signal</h2>'
            '<p class="note">The probe ran on two disjoint halves of every task\'s pairs (spaces/halves/: tasks '
            "t~1, t~2). split-half r = Spearman of the two half spaces' off-diagonal entries; reliability = "
            "Spearman–Brown 2r/(1+r), the reliability of the full space. Noise ceiling (Nili et al. 2014; as "
            "rsatoolbox computes it for two halves): lower = r, upper = mean ρ of each half with the mean rank "
            "of both; ρ(H, half) = the hypothesis space's mean ρ with the halves, given as a fraction of the upper "
            "– lower bound. For the full space the pair-sampling ceiling is ρmax(H) · sqrt(reliability): no space "
            "reaches a Spearman ρ above ρmax with a 1/0 hypothesis (its ties), and noise attenuates by "
            "sqrt(reliability); ρ(H, full) ÷ ceiling (95% bootstrap interval) is the theory comparison as a share "
            "of what the pairs allow, withheld where the reliability's interval reaches below 0.2. Self-similarity: a task's "
            f"two halves against each other, beside the mean of two different tasks' halves. {_e(rule)}.</p>"
            + _table(["checkpoint", "space", "tasks", "split-half r", "reliability", "ceiling (half) lower – upper",
                      "ρ(H, half)", "÷ ceiling upper – lower", "ρ(H, full)", "ceiling (full)", "÷ ceiling",
                      "self-similarity mean / min", "flagged tasks"], rows, left=2)
            + "".join(details) + "</section>")


def _generalization(cmp: dict, figdir: Path) -> str:
    parts = ['<section id="generalization"><h2>Per-group generalisation</h2>'
             '<p class="note">Mean ± std of the normalised transfer T̃[a,b] = T[a,b] / |T[a,a]| over ordered '
             "pairs a ≠ b inside a group (the shape of the paper's table: for its 27M / 70M / 203M models e.g. "
             "determiner-noun agreement 0.24 / 0.33 / 0.56, irregular forms −0.42 / −0.62 / −0.97); small type: "
             "95% bootstrap interval of the mean over the group's tasks (groups of three tasks or more).</p>"]
    for name, g in cmp.get("generalization", {}).items():
        for key, title in (("by_size", "by model size (final checkpoints)"), ("by_checkpoint", "every checkpoint"),
                           ("by_checkpoint_abs", "every checkpoint, absolute values")):
            t = g[key]
            if key == "by_size" and len(t["columns"]) < 2:
                continue
            vals = [abs(c["mean"]) for r in t["cells"].values() for c in r.values() if _ok(c.get("mean"))]
            vmax = max(vals) if vals else 1.0
            rows = []
            for grp in t["groups"]:
                row = [_e(grp)]
                for col in t["columns"]:
                    c = t["cells"][grp].get(col, {})
                    txt = f"{_f(c.get('mean'))} ± {_f(c.get('std'), False)}" if _ok(c.get("mean")) else "–"
                    if _ok(c.get("mean")) and fmt_ci(c.get("ci")):
                        txt += f' <small class="ci">{fmt_ci(c["ci"], True, 2)}</small>'
                    row.append((txt, _color(c.get("mean"), vmax)))
                rows.append(row)
            body = _table(["group"] + [_e(c) for c in t["columns"]], rows)
            if key == "by_checkpoint_abs":
                body = f"<details><summary>{_e(label(name))}, {title}</summary>{body}</details>"
            else:
                body = f"<h3>{_e(label(name))}, {title}</h3>{body}"
            parts.append(body)
        parts.append(_img(figdir / f"generalization_sizes_{name}.png", f"{label(name)} by model size"))
        parts.append(_img(figdir / f"generalization_{name}.png", f"{label(name)} at every checkpoint"))
    if len(parts) == 1:
        parts.append('<p class="note">No normalised transfer space in this run (run the transfer probe).</p>')
    parts.append("</section>")
    return "".join(parts)


def _clustering(run: RunData, cmp: dict, figdir: Path) -> str:
    imgs = []
    drawn = static_spaces(run, cmp)
    for m in reversed(run.models):
        if m.final is None:
            continue
        for name in [n for n in drawn if n in m.final.spaces]:
            imgs.append(_img(figdir / f"clustered_{_slug(m.slug)}_{name}.png", f"{label(name)}, {m.slug} @ {m.final.revision}"))
    return ('<section id="clustering"><h2>Clusters</h2><p class="note">Average linkage on 1 − S of the '
            "symmetrised space, cut at the number of groups; the strip under the dendrogram colours each task "
            "by its group: one colour per block means the model's clusters are the theory's groups. Drawn for "
            "the headline spaces; the explorer above clusters none but shows every space.</p>"
            + '<div class="row">' + "".join(imgs) + "</div></section>")


def _dynamics(cmp: dict, figdir: Path) -> str:
    parts = ['<section id="dynamics"><h2>Over training</h2>']
    for slug, per in cmp.get("dynamics", {}).items():
        parts.append(f"<h3>{_e(slug)}</h3>")
        parts.append(_img(figdir / f"dynamics_{_slug(slug)}.png", f"{slug} over training"))
        rows = []
        for name, d in per.items():
            for i, rev in enumerate(d["revisions"]):
                rows.append([_e(label(name)), _e(rev), _f(d["within"][i]), _f(d["between"][i]),
                             _f(d["difference"][i]), _f(d.get("difference_abs", [None] * len(d["revisions"]))[i]),
                             _f(d["rho_next"][i]) if i < len(d["rho_next"]) else "", _f(d["rho_final"][i])])
            st = d.get("stability") or {}
            rt = ", ".join(f"{_e(lab)} {_f(r, False)}" for lab, r in zip(st.get("labels") or [],
                                                                         st.get("rho_corrected") or []))
            rows.append([_e(label(name)), "<i>stability</i>",
                         (f"{_e(st.get('verdict', 'inconclusive'))}: {_e(st.get('reason', ''))}"
                          + (f"; noise-corrected ρ̃ {rt}" if rt else ""), {"colspan": "6", "class": "wrap"})])
        parts.append(_table(["space", "revision", "within", "between", "gap", "|gap|", "ρ with next", "ρ with final"],
                            rows, left=2))
    if len(parts) == 1:
        parts.append('<p class="note">Fewer than two checkpoints per model: no dynamics.</p>')
    parts.append("</section>")
    return "".join(parts)


def _sizes(cmp: dict, figdir: Path) -> str:
    sizes = cmp.get("sizes", {})
    if len(cmp.get("models", [])) < 2:
        return ""
    rows = []
    for name, rs in sizes.items():
        for r in rs:
            rows.append([_e(label(name)), _e(r["model"]), _e(r.get("size") or ""),
                         f"{r['n_parameters']:,}" if r.get("n_parameters") else "–", _e(r["revision"]),
                         _fc(r["within"], r.get("within_ci")), _f(r["between"]),
                         _fc(r["difference"], r.get("difference_ci")), _fc(r["rho"], r.get("rho_ci")), _p(r["p"]),
                         _f(r.get("auc"), False), _f(r["ari"])])
    return ('<section id="sizes"><h2>Model sizes side by side</h2>' + _img(figdir / "sizes.png", "sizes")
            + _table(["space", "model", "size", "parameters", "revision", "within", "between", "gap", "ρ", "p",
                      "AUC", "ARI"], rows, left=5) + "</section>")


def _distributedness(cmp: dict) -> str:
    rows, mod_rows = [], []
    for c in cmp.get("cells", []):
        d = c.get("distributedness") or {}
        if d:
            ov = d.get("sharing") or {}
            layers = d.get("layer_shares") or {}
            rows.append([_e(c["model"]), _e(c["revision"]), _f(d.get("mask_size"), False, 4),
                         _f(d.get("participation_ratio"), False), _f(d.get("effective_layers"), False, 2),
                         _f(d.get("layer_spread"), False, 2), _f(ov.get("within"), False),
                         _f(ov.get("between"), False), _f(ov.get("difference")),
                         (_e(", ".join(f"{k} {v:.0%}" for k, v in layers.items())), {"class": "wrap"})])
        for space, parts in (c.get("parts") or {}).items():
            mod_rows.append((space, c["id"], parts))
    if not rows and not mod_rows:
        return ""
    out = ['<section id="distributedness"><h2>Distributedness</h2>'
           '<p class="note">mask size = fraction of parameters in M_t; participation ratio of |ḡ_t| = '
           "(Σ|g|)² / (n Σ g²) (1 = evenly spread, →0 = concentrated); effective layers = exp(entropy) of the "
           "mean share of |ḡ_t| per layer, spread = that ÷ the number of layers; overlap = Jaccard of masks "
           "within vs between groups.</p>"]
    if rows:
        out.append(_table(["model", "revision", "mask size", "participation ratio", "effective layers", "spread",
                           "overlap within", "overlap between", "gap", "share of |ḡ| per layer"], rows, left=2))
    for space in dict.fromkeys(s for s, _, _ in mod_rows):      # one table per space with parts (module, layer)
        rows_s = [(cid, ms) for s, cid, ms in mod_rows if s == space]
        mods = list(dict.fromkeys(m for _, ms in rows_s for m in ms))
        vals = [abs(v["difference"]) for _, ms in rows_s for v in ms.values() if _ok(v.get("difference"))]
        vmax = max(vals) if vals else 1.0
        body = _table(["checkpoint"] + [_e(m) for m in mods],
                      [[_e(cid)] + [(_f(ms.get(m, {}).get("difference")), _color(ms.get(m, {}).get("difference"), vmax))
                                    for m in mods] for cid, ms in rows_s])
        spec = space_spec(space)
        out.append(f"<h3>Where it happens: {_e(label(space))} gap (within − between) per "
                   f"{_e(spec.by if spec is not None and spec.by else 'part')}</h3>" + body)
    out.append("</section>")
    return "".join(out)


def _ftgd(cmp: dict) -> str:
    rows = []
    for c in cmp.get("cells", []):
        for probe, f in (c.get("finetuning") or {}).items():
            if f:
                rows.append([_e(c["id"]), _e(probe), str(f["n_tasks"]), str(f["n_failed"]),
                             _e(", ".join(f["failed"])) or "", _f(f.get("lm_damage_mean"))])
    if not rows:
        return ""
    return ('<section id="ftgd"><h2>Fine-tuning</h2>'
            + _table(["checkpoint", "probe", "tasks", "failed", "failed tasks", "mean LM damage (nats)"], rows)
            + "</section>")


def _provenance(cmp: dict) -> str:
    rows = [[_e(m["slug"]), _e(m["name"]), _e(m.get("size") or ""),
             f"{m['n_parameters']:,}" if m.get("n_parameters") else "–", _e(", ".join(m["revisions"])),
             _e(m.get("control") or "none")] for m in cmp.get("models", [])]
    prov = cmp.get("provenance", {})
    first = next(iter(prov.get("cells", {}).values()), {})
    out = ['<section id="provenance"><h2>Provenance</h2>',
           _table(["model", "name", "size", "parameters", "revisions", "control"], rows)]
    for key in ("convention", "settings", "suite"):
        if key in first:
            out.append(f"<h3>{key}</h3><pre>{_e(json.dumps(first[key], indent=1, ensure_ascii=False))}</pre>")
    out.append(f"<h3>versions</h3><pre>{_e(json.dumps(prov.get('versions', {}), indent=1))}</pre>")
    out.append(f"<p class=\"note\">analysis: {_e(json.dumps(prov.get('analysis', {}), ensure_ascii=False))}; "
               f"created {_e(prov.get('created', ''))}</p>")
    if prov.get("plan"):
        out.append(f"<details><summary>run plan (run.json)</summary><pre>"
                   f"{_e(json.dumps(prov['plan'], indent=1, ensure_ascii=False))}</pre></details>")
    out.append("<details><summary>provenance of every checkpoint</summary><pre>"
               f"{_e(json.dumps(prov.get('cells', {}), indent=1, ensure_ascii=False))}</pre></details></section>")
    return "".join(out)


def _declared_tables(cmp: dict) -> str:
    """Every per-task table a probe declares with the role ``table`` (e.g. cause / isolate scores), one
    HTML table per table and checkpoint, as written."""
    blocks = []
    for c in cmp.get("cells", []):
        for rel, rows in (c.get("tables") or {}).items():
            if not rows:
                continue
            cols = list(rows[0])
            body = [[_e("–" if v is None else v) if isinstance(v, (str, int)) or v is None else _f(v)
                     for v in (r.get(k) for k in cols)] for r in rows]
            blocks.append(f"<h3>{_e(rel)} — {_e(c['id'])}</h3>" + _table([_e(k) for k in cols], body, left=2))
    if not blocks:
        return ""
    return ('<section id="tables"><h2>Per-task tables</h2><p class="note">Tables the probes declare '
            "(their <code>files</code> with the role <code>table</code>), one row per task; columns as the "
            f"probe documents them.</p>{''.join(blocks)}</section>")


# -- the page --------------------------------------------------------------------------------------
def _cards(run: RunData) -> str:
    """One card per task (the latent probe): the tokens learning the task pushes the final hidden state
    towards and away from, for each model's final checkpoint; a search box filters by task or token."""
    blocks = []
    for m in run.models:
        cell = m.final
        if cell is None or cell.cards is None or not len(cell.cards):
            continue
        cards = []
        for task, df in cell.cards.groupby("task", sort=False):
            group = str(df["group"].iloc[0]) if "group" in df.columns else ""
            parts = []
            for direction, word in (("push", "towards"), ("pull", "away from")):
                d = df[df["direction"] == direction].sort_values("rank")
                toks = " ".join(f'<span class="tok" title="cos {float(c):+.3f}">{_e(repr(str(t))[1:-1])}</span>'
                                for t, c in zip(d["token"], d["cosine"]))
                parts.append(f"<div><b>{word}</b>: {toks}</div>")
            text = " ".join([str(task), group, *map(str, df["token"])]).lower()
            cards.append(f'<div class="card" data-search="{_e(text)}"><h4>{_e(task)} '
                         f'<small>{_e(group)}</small></h4>{"".join(parts)}</div>')
        blocks.append(f"<h3>{_e(m.slug)} @ {_e(cell.revision)}</h3>" + "".join(cards))
    if not blocks:
        return ""
    search = ('<input type="search" placeholder="filter by task or token" oninput="'
              "var q=this.value.toLowerCase();document.querySelectorAll('#cards .card').forEach("
              "function(c){c.style.display=c.dataset.search.indexOf(q)<0?'none':''})\">")
    return (f'<section id="cards"><h2>Task cards (latent probe)</h2><p>For each task, the tokens whose '
            f"unembedding directions (b_v = pinv(W_U)·e_v) are closest to and furthest from the task's latent "
            f"gradient h̄_t: what learning the task pushes the model towards and away from. Hover a token for "
            f"its cosine.</p>{search}{''.join(blocks)}</section>")


def render_html(run: RunData, cmp: dict, figdir: Path) -> str:
    """The report page as a string (plotly.js and every figure inlined)."""
    from plotly.offline import get_plotlyjs

    sections = [_headline(cmp), _explorer(), _findings(cmp), _summary_table(cmp), _reliability(cmp),
                _generalization(cmp, figdir),
                _clustering(run, cmp, figdir), _dynamics(cmp, figdir), _sizes(cmp, figdir),
                _distributedness(cmp), _ftgd(cmp), _declared_tables(cmp), _cards(run), _provenance(cmp)]
    nav = [("headline", "Headline"), ("explorer", "Task spaces"), ("findings", "Findings"), ("theory", "vs theory"),
           ("reliability", "Signal"), ("generalization", "Generalisation"), ("clustering", "Clusters"), ("dynamics", "Training"),
           ("sizes", "Sizes"), ("distributedness", "Distributedness"), ("ftgd", "Fine-tuning"),
           ("tables", "Tables"), ("cards", "Task cards"), ("provenance", "Provenance")]
    body = "\n".join(s for s in sections if s)
    nav_html = " ".join(f'<a href="#{k}">{v}</a>' for k, v in nav if f'id="{k}"' in body)
    models = ", ".join(m["slug"] for m in cmp.get("models", []))
    sub = (f"{_e(cmp.get('run', ''))} · models: {_e(models)} · probes: {_e(', '.join(cmp.get('probes', [])))} · "
           f"created {_e(cmp.get('provenance', {}).get('created', ''))}")
    data = json.dumps(explorer_data(run, cmp), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    template = resources.files("taskspace.report").joinpath("template.html").read_text(encoding="utf-8")
    page = template.replace("{{plotlyjs}}", "\x00PLOTLY\x00")
    for key, value in (("title", "taskspace report"), ("subtitle", sub), ("nav", nav_html), ("body", body),
                       ("data", data)):
        page = page.replace("{{" + key + "}}", value)
    # plotly.js goes in last so no placeholder inside it can ever be replaced.
    return page.replace("\x00PLOTLY\x00", get_plotlyjs())


def _comparison_is_fresh(path: Path, root: Path) -> bool:
    """Whether ``RUN/comparison.json`` is newer than every result file. The run's own ``run.json`` is not
    one: a run rewrites it with its final status after its report job, which must not make every later
    ``taskspace report`` compare the run again."""
    if not path.exists():
        return False
    t = path.stat().st_mtime
    return all(p.stat().st_mtime <= t for p in root.rglob("*") if p.suffix in (".csv", ".json")
               and p.name != "comparison.json" and p != root / "run.json" and "figures" not in p.parts
               and not any(part.startswith(".") for part in p.relative_to(root).parts))


def build_report(run_dir: str | Path, *, comparison: dict | None = None, permutations: int = 999,
                 seed: int = 0, bootstrap: int = BOOTSTRAP, workers: int = 1) -> Path:
    """Write ``RUN/figures/*.png|svg`` and ``RUN/report.html``; return the page's path.

    ``workers`` > 1 makes and saves the figures in that many spawned processes (see :func:`write_figures`; a
    script needs the ``if __name__ == "__main__":`` guard), and a comparison computed here uses as many
    (:func:`~taskspace.analysis.compare.compare_run`): the command line uses one per CPU, at most 4.

    Uses ``comparison`` when given, else ``RUN/comparison.json`` when it is newer than every result
    file, else computes (and writes) a fresh comparison.
    """
    run = load_run(run_dir)
    cpath = run.root / "comparison.json"
    if comparison is None and _comparison_is_fresh(cpath, run.root):
        comparison = _read_json(cpath)
        if comparison.get("schema") != SCHEMA:
            comparison = None
    if comparison is None:
        comparison = compare_run(run.root, permutations=permutations, seed=seed, bootstrap=bootstrap,
                                 workers=workers)
    figdir = run.root / "figures"
    # a build killed mid-way (kill -9) leaves its temporary files: this build owns the figures now
    remove_stale_temps(figdir)
    remove_stale_temps(run.root, ("report.html", "comparison.json"))
    write_figures(run, comparison, figdir, workers=workers)
    out = run.root / "report.html"
    write_text(out, render_html(run, comparison, figdir))
    return out
