"""The paper's findings, each next to what a run shows, computed from a comparison (docs/reliability.md).

Weber et al. report: (1) larger models generalise more within groups; (2) parameter sharing between
related tasks grows with training; (3) task spaces change smoothly, with no sudden stages. Each finding
gets a verdict — ``reproduced``, ``partly reproduced``, ``not reproduced``, ``contradictory`` or
``inconclusive`` — with the numbers and the rule behind it, so a reader can disagree with the rule but not
with the data. Everything works on the plain comparison dict, so it can be recomputed from
``comparison.json``.

Verdicts come from tests that can fail: bootstrap intervals over tasks and permutation tests, read in
each space's declared direction; Holm across models. Whatever the data cannot decide — no intervals
(``bootstrap=0``, groups too small), too few checkpoints, spaces too noisy — is ``inconclusive``; a
point estimate never decides alone.
"""
from __future__ import annotations

import math
from typing import Any

from ..probes.registry import all_spaces, generalization_spaces, main_spaces, space_spec
from .bootstrap import excludes_zero
from .dynamics import MIN_TRANSITIONS, SMOOTH, SUDDEN
from .inference import holm, sign_test
from .stats import coverage_note

REPRODUCED, PARTLY, NOT, INCONCLUSIVE = "reproduced", "partly reproduced", "not reproduced", "inconclusive"
CONTRADICTORY = "contradictory"


def is_number(x: Any) -> bool:
    """A finite real number (not a bool, not NaN/inf, not None)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


_ok = is_number


def fmt_value(x: Any, signed: bool = True, digits: int = 3, missing: str = "n/a") -> str:
    """``+0.123`` (signed) or ``0.123``; ``missing`` for anything that is not a finite number."""
    if not is_number(x):
        return missing
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_p(p: Any, missing: str = "n/a") -> str:
    """A p-value: three decimals, or scientific notation below 0.001."""
    if not is_number(p):
        return missing
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


_fmt = fmt_value
_fmt_p = fmt_p


def fmt_ci(ci: Any, signed: bool = True, digits: int = 3, missing: str = "") -> str:
    """``[+0.010, +0.200]`` for a finite interval, else ``missing``."""
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(is_number(x) for x in ci)):
        return missing
    return f"[{fmt_value(ci[0], signed, digits)}, {fmt_value(ci[1], signed, digits)}]"


def fmt_with_ci(x: Any, ci: Any, signed: bool = True, digits: int = 3, missing: str = "n/a") -> str:
    """``+0.123 [+0.010, +0.200]`` (the interval only when there is one)."""
    text = fmt_value(x, signed, digits, missing)
    c = fmt_ci(ci, signed, digits)
    return f"{text} {c}" if c and is_number(x) else text


def _has_ci(ci: Any) -> bool:
    return bool(fmt_ci(ci))


def declared(summary: dict) -> dict:
    """The reading of a space summary that its probe declared (``signed`` or ``absolute``): the one tested."""
    return summary[summary.get("reading", "signed")]


def label(space: str) -> str:
    """A reader's name for a space file name (the registry's label; the file name for unknown spaces)."""
    spec = space_spec(space)
    return spec.label if spec is not None and "/" not in space else space.replace("_", " ")


def _pick(available, preference) -> str | None:
    return next((s for s in preference if s in available), None)


def _evidence(kind: str) -> list[str]:
    """The spaces a finding reads, best first, from what the registry declares about each space: for
    ``sizes`` the normalised-transfer (generalisation) spaces, then every probe's main space; for
    ``sharing`` the parameter-sharing spaces, then the main spaces; for ``smooth`` the main spaces."""
    first = {"sizes": generalization_spaces(),
             "sharing": [s.name for _, s in all_spaces() if s.sharing]}.get(kind, [])
    return list(dict.fromkeys([*first, *main_spaces()]))


def headline_spaces() -> list[str]:
    """The spaces the headline reports: every registered probe's main space, in registry order."""
    return main_spaces()


def finding_sizes(cmp: dict) -> dict:
    """Finding 1: larger models generalise more within groups — the paired change of the within − between
    gap (mean of per-group contrasts) from the smallest to the largest model at their final checkpoints,
    with a sign test over groups. One seed per size: a size effect and a seed effect cannot be told apart,
    and the text says so."""
    paper = ("Larger models generalise more within groups (per-group transfer grows from 27M to 70M to 203M "
             "parameters, e.g. determiner-noun agreement 0.24 / 0.33 / 0.56).")
    space = _pick(cmp.get("sizes", {}), _evidence("sizes"))
    base = {"id": "sizes", "title": "Larger models generalise more within groups", "paper": paper, "space": space}
    rows = cmp.get("sizes", {}).get(space, []) if space else []
    if len(rows) < 2:
        return {**base, "verdict": INCONCLUSIVE, "numbers": {},
                "this_run": "This run has fewer than two model sizes with "
                            f"{label(space) if space else 'a task space'}, so size cannot be compared."}
    names = [r["model"] + (f" ({r['size']})" if r.get("size") and r["size"] != r["model"] else "") for r in rows]
    gaps = [r["difference"] for r in rows]
    monotone = all(_ok(a) and _ok(b) and b > a for a, b in zip(gaps, gaps[1:]))
    sd = (cmp.get("size_deltas") or {}).get(space) or {}
    dd = sd.get("difference") or {}
    delta, delta_ci = dd.get("delta"), dd.get("ci")
    matched = sd.get("to") == rows[-1]["model"] and sd.get("from") == rows[0]["model"]
    side = excludes_zero(delta_ci) if matched and _has_ci(delta_ci) else 0
    # per group: does the largest model's contrast exceed the smallest's? (a sign test over groups)
    cells = {c["id"]: c for c in cmp.get("cells", [])}
    first = cells.get(f"{rows[0]['model']}@{rows[0]['revision']}", {}).get("spaces", {}).get(space)
    last = cells.get(f"{rows[-1]['model']}@{rows[-1]['revision']}", {}).get("spaces", {}).get(space)
    groups_up = None
    if first and last:
        ga, gb = declared(first).get("groups") or {}, declared(last).get("groups") or {}
        pairs = [(ga[g]["gap"], gb[g]["gap"]) for g in ga if g in gb and _ok(ga[g]["gap"]) and _ok(gb[g]["gap"])]
        k = sum(b > a for a, b in pairs)
        groups_up = (k, len(pairs), sign_test(k, len(pairs)))
    incomplete = [(r["model"], r["coverage"]) for r in rows if r.get("coverage") and not r["coverage"]["complete"]]
    if incomplete or not _ok(delta) or not matched or not _has_ci(delta_ci):
        verdict = INCONCLUSIVE
    else:
        verdict = (REPRODUCED if monotone else PARTLY) if side > 0 else NOT if side < 0 else INCONCLUSIVE
    cis = [r.get("difference_ci") for r in rows]
    vals = ", ".join(f"{n} {fmt_with_ci(w, c)}" for n, w, c in zip(names, gaps, cis))
    text = (f"Within − between {label(space)} at the final checkpoint, smallest to largest model: {vals}; "
            f"largest − smallest = {fmt_with_ci(delta, delta_ci)} (paired over tasks): "
            + ("the interval lies above 0" if side > 0 else "the interval lies below 0" if side < 0 else
               f"no interval ({dd.get('withheld')})" if dd.get("withheld") else
               "no interval" if not _has_ci(delta_ci) else "the interval holds 0")
            + ("" if monotone else "; not monotone in size") + ".")
    if groups_up and groups_up[1]:
        text += (f" {groups_up[0]} of {groups_up[1]} groups have a larger gap in the largest model "
                 f"(sign test p = {_fmt_p(groups_up[2])}).")
    text += " One model per size (one seed each): a size effect cannot be told from a seed effect."
    if incomplete:
        text += (" Verdict withheld: the matrices are incomplete ("
                 + "; ".join(f"{m}: {coverage_note(c)}" for m, c in incomplete) + ").")
    rule = ("reproduced: the gap grows monotonically with size and the 95% interval of its paired change, largest − "
            "smallest, lies above 0; partly: the interval lies above 0 but growth is not monotone; not reproduced: "
            "it lies below 0; inconclusive: it holds 0, no interval (too few tasks per group, or bootstrap off), "
            "or a matrix has missing rows")
    return {**base, "verdict": verdict, "this_run": text, "rule": rule,
            "numbers": {"models": names, "difference": gaps, "difference_ci": cis, "delta": delta,
                        "delta_ci": delta_ci, "monotone": monotone,
                        "groups_up": list(groups_up) if groups_up else None}}


def finding_sharing(cmp: dict) -> dict:
    """Finding 2: parameter sharing between related tasks (the within − between gap) grows with training:
    the gap's slope over log training step across every trained checkpoint (an untrained initialisation
    would carry most of the slope's leverage), per model, Holm across models."""
    paper = "Parameter sharing between related tasks (overlap of their subnetworks) grows with training."
    dyn = cmp.get("dynamics", {})
    available = {s for per in dyn.values() for s in per}
    space = _pick(available, _evidence("sharing"))
    base = {"id": "sharing", "title": "Sharing between related tasks grows with training", "paper": paper,
            "space": space}
    if space is None:
        return {**base, "verdict": INCONCLUSIVE, "numbers": {},
                "this_run": "No model in this run has a task space at two or more checkpoints."}
    per_model = {slug: per[space] for slug, per in dyn.items() if per.get(space) and per[space].get("trend")}
    if not per_model:
        return {**base, "verdict": INCONCLUSIVE, "numbers": {}, "this_run": "No usable checkpoints."}
    slugs = list(per_model)
    trends = [per_model[m]["trend"] for m in slugs]
    up = holm([t.get("p_up", float("nan")) if _ok(t.get("p_up")) else float("nan") for t in trends])
    down = holm([t.get("p_down", float("nan")) if _ok(t.get("p_down")) else float("nan") for t in trends])
    numbers, parts = {}, []
    for slug, t, pu, pd_ in zip(slugs, trends, up, down):
        d = per_model[slug]
        way = ("untestable" if t.get("withheld") else "up" if _ok(pu) and pu < 0.05
               else "down" if _ok(pd_) and pd_ < 0.05 else "flat")
        numbers[slug] = {"revisions": d["revisions"], "difference": d["difference"], "slope": t["slope"],
                         "slope_ci": t.get("ci"), "p_up_holm": pu, "p_down_holm": pd_, "trend": way,
                         "withheld": t.get("withheld")}
        gaps = ", ".join(_fmt(x) for x in d["difference"])
        fitted = t.get("revisions")
        parts.append(f"{slug}: gap {gaps} over {', '.join(d['revisions'])}; slope per log step"
                     + (f" over the trained {', '.join(fitted)}" if fitted and len(fitted) < len(d["revisions"]) else "")
                     + " "
                     f"{fmt_with_ci(t['slope'], t.get('ci'))}"
                     + (f" ({t['withheld']})" if t.get("withheld") else
                        f", Holm p(up) {_fmt_p(pu)}, p(down) {_fmt_p(pd_)} → {way}"))
    ways = [v["trend"] for v in numbers.values()]
    if "up" in ways and "down" in ways:
        verdict = CONTRADICTORY
    elif ways and all(w == "up" for w in ways):
        verdict = REPRODUCED
    elif "up" in ways:
        verdict = PARTLY
    elif "down" in ways:
        verdict = NOT
    else:
        verdict = INCONCLUSIVE
    text = (f"Within − between {label(space)} (mean of per-group contrasts, read in the space's declared direction) "
            "across the trained checkpoints: " + "; ".join(parts) + ".")
    if "untestable" in ways and verdict != INCONCLUSIVE:
        text += (f" {ways.count('untestable')} of {len(ways)} models could not be tested (no interval); the verdict "
                 "rests on the others.")
    rule = ("per model, the least-squares slope of the gap over log(1 + step) across its trained checkpoints (untrained "
            "ones left out), bootstrap over tasks (the same tasks at every checkpoint), one-sided p for up and for "
            "down, Holm across models; reproduced: up in every model; partly: up in some, down in none (the others "
            "flat or untestable); contradictory: up in some and down in others; not reproduced: down in some, up in "
            "none; inconclusive: no model significant, or intervals withheld")
    return {**base, "verdict": verdict, "this_run": text, "rule": rule, "numbers": numbers}


def finding_smooth(cmp: dict) -> dict:
    """Finding 3: task spaces change smoothly over training — an equivalence test on noise-corrected
    stability (:func:`~taskspace.analysis.dynamics.stability`), Holm across models for "sudden"."""
    paper = "Task spaces change smoothly during training, with no sudden stages."
    dyn = cmp.get("dynamics", {})
    available = {s for per in dyn.values() for s in per}
    space = _pick(available, _evidence("smooth"))
    base = {"id": "smooth", "title": "Task spaces change smoothly, no sudden stages", "paper": paper,
            "space": space}
    per_model = {slug: per[space]["stability"] for slug, per in dyn.items()
                 if space and per.get(space) and per[space].get("stability")}
    slugs = list(per_model)
    adj = holm([per_model[m].get("p_sudden", float("nan")) if _ok(per_model[m].get("p_sudden")) else float("nan")
                for m in slugs])
    numbers, parts = {}, []
    for slug, p in zip(slugs, adj):
        st = per_model[slug]
        v = st.get("verdict", INCONCLUSIVE)
        if v == SUDDEN and not (_ok(p) and p < 0.05):
            v = INCONCLUSIVE                                  # not significant once corrected across models
        numbers[slug] = {**{k: st.get(k) for k in ("labels", "rho_corrected", "change", "ratio", "ratio_ci",
                                                   "half_r", "detectable", "reason")},
                         "verdict": v, "p_sudden_holm": p}
        rt = ", ".join(_fmt(x, False) for x in st.get("rho_corrected") or [])
        parts.append(f"{slug}: {v}" + (f" — noise-corrected ρ between consecutive checkpoints {rt}" if rt else "")
                     + (f"; the data exclude stages above {_fmt(st['detectable'], False, 1)}× the median change"
                        if _ok(st.get("detectable")) else "") + (f" ({st['reason']})" if st.get("reason") else ""))
    verdicts = [v["verdict"] for v in numbers.values()]
    if not verdicts:
        verdict, why = INCONCLUSIVE, "no model has this space at several checkpoints."
    elif SUDDEN in verdicts:
        verdict, why = NOT, ""
    elif all(v == SMOOTH for v in verdicts):
        verdict, why = REPRODUCED, ""
    else:
        verdict, why = INCONCLUSIVE, ""
    text = (f"{label(space) if space else 'Task spaces'} across checkpoints, compared across halves: "
            + ("; ".join(parts) + "." if parts else why))
    rule = (f"per model, ρ̃ = mean cross-half ρ of consecutive checkpoints ÷ sqrt of their half reliabilities; change "
            f"1 − ρ̃ per log step; bootstrap over tasks for each change ÷ the median of the others. sudden (not "
            f"reproduced): some ratio's interval lies above 3 and the change above 0.1 (Bonferroni over "
            f"transitions, Holm across models); smooth (reproduced): every ratio's interval below 3 and every "
            f"split-half r ≥ 0.5, in every model; inconclusive otherwise, or with fewer than {MIN_TRANSITIONS} "
            "transitions after the onset of training, or without halves spaces")
    return {**base, "verdict": verdict, "this_run": text, "rule": rule, "numbers": numbers}


def findings(cmp: dict) -> list[dict]:
    """The three findings of the paper, each with ``paper``, ``this_run``, ``verdict``, ``rule``, ``numbers``."""
    return [finding_sizes(cmp), finding_sharing(cmp), finding_smooth(cmp)]


def headline(cmp: dict) -> dict:
    """The numbers that answer "does the task space match theory, does it grow with size and training",
    for the largest model's final checkpoint, with one-line texts in ``lines``."""
    models = cmp.get("models", [])
    out: dict[str, Any] = {"model": None, "revision": None, "spaces": {}, "verdicts": {}, "lines": []}
    if not models:
        return out
    m = models[-1]
    rev = m["revisions"][-1] if m["revisions"] else None
    cell = next((c for c in cmp["cells"] if c["model"] == m["slug"] and c["revision"] == rev), None)
    out.update(model=m["slug"], revision=rev)
    if cell is None:
        return out
    for name in headline_spaces():
        s = cell["spaces"].get(name)
        if s is None:
            continue
        vc = cell["versus_control"].get(name)
        d = declared(s)
        other = s["absolute" if s.get("reading", "signed") == "signed" else "signed"]
        e = {"within": d["within"], "between": d["between"], "difference": d["difference"], "rho": d["rho"],
             "p": d["p"], "q": d.get("q"), "auc": d.get("auc"), "auc_ci": d.get("auc_ci"),
             "rho_ratio": d.get("rho_ratio"), "rho_max": s.get("rho_max"), "min_p": s.get("min_p"),
             "related": s.get("related", "higher"), "reading": s.get("reading", "signed"),
             "difference_other": other["difference"], "rho_other": other["rho"], "ari": s["ari"],
             "ari_p": s.get("ari_p"), "control": cell.get("control"),
             "control_difference": vc["control"]["difference"] if vc else None,
             "gain_over_control": vc["difference"]["difference"] if vc else None,
             "gain_over_control_ci": vc.get("difference_ci") if vc else None,
             "gain_over_control_p": vc.get("p") if vc else None,
             "gain_over_control_q": vc.get("q") if vc else None,
             "coverage": s.get("coverage"), "interval_withheld": s.get("interval_withheld"),
             "difference_ci": d.get("difference_ci"), "rho_ci": d.get("rho_ci")}
        rel = s.get("reliability")
        if rel:
            full = rel.get("full") or {}
            e["reliability"] = {"split_half": rel.get("split_half"), "reliability": rel.get("reliability"),
                                "reliability_ci": rel.get("reliability_ci"), "ceiling": full.get("ceiling"),
                                "fraction": full.get("fraction"), "fraction_ci": full.get("fraction_ci"),
                                "withheld": full.get("withheld"),
                                "noise_ceiling": {k: (rel.get("noise_ceiling") or {}).get(k) for k in ("lower", "upper")},
                                "flagged": rel.get("flagged")}
        out["spaces"][name] = e
        # every headline figure says how many rows it rests on; an incomplete matrix is marked
        cov = s.get("coverage")
        on = f" on {coverage_note(cov)}" if cov else ""
        how = ("; lower = related" if e["related"] == "lower" else "") + ("; |S|" if e["reading"] == "absolute" else "")
        line = (f"{label(name)}{on}{how}: within {_fmt(e['within'])} vs between {_fmt(e['between'])} "
                f"(gap {fmt_with_ci(e['difference'], e['difference_ci'])}), AUC "
                f"{fmt_with_ci(e['auc'], e['auc_ci'], False)}, ρ with theory {fmt_with_ci(e['rho'], e['rho_ci'])} "
                f"= {_fmt(e['rho_ratio'], False, 2)} of the attainable {_fmt(e['rho_max'], False, 2)} "
                f"(p = {_fmt_p(e['p'])}, q = {_fmt_p(e['q'])}"
                + (f"; the smallest attainable p is {_fmt_p(e['min_p'])}" if _ok(e["min_p"]) and e["min_p"] > 0.05
                   else "") + f"), ARI {_fmt(e['ari'])} (p = {_fmt_p(e['ari_p'])})")
        if e["interval_withheld"]:
            line += f" — {e['interval_withheld']}"
        if rel:
            r = e["reliability"]
            frac = (f"ρ is {fmt_with_ci(r['fraction'], r['fraction_ci'], False)} of it" if not r["withheld"]
                    else f"share withheld: {r['withheld']}")
            line += (f"; split-half reliability {fmt_with_ci(r['reliability'], r['reliability_ci'], False)}, "
                     f"pair-sampling ceiling {_fmt(r['ceiling'], False)} ({frac})")
        if vc:
            line += (f"; control {cell['control']} gap {_fmt(e['control_difference'])}, trained − control "
                     f"{fmt_with_ci(e['gain_over_control'], e['gain_over_control_ci'])} (permutation p = "
                     f"{_fmt_p(e['gain_over_control_p'])}, q = {_fmt_p(e['gain_over_control_q'])})")
        out["lines"].append(line)
    for f in cmp.get("findings", []):
        out["verdicts"][f["id"]] = f["verdict"]
        out["lines"].append(f"{f['title']}: {f['verdict']}")
    return out
