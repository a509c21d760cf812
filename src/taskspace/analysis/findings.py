"""The paper's findings, each next to what a run shows, computed from a comparison (DESIGN §2).

Weber et al. report: (1) larger models generalise more within groups; (2) parameter sharing between
related tasks grows with training; (3) task spaces change smoothly, with no sudden stages. Each finding
here gets a verdict — ``reproduced``, ``partly reproduced``, ``not reproduced`` or ``inconclusive`` —
with the numbers and the rule behind it, so a reader can disagree with the rule but not with the data.
Everything works on the plain comparison dict, so it can be recomputed from ``comparison.json``.

The verdicts follow from 95% bootstrap intervals over tasks (``compare_run(bootstrap=...)``): a change
counts when its interval excludes 0 in the direction the paper predicts. A comparison computed without
intervals (``bootstrap=0``, or an older ``comparison.json``) falls back to ``Z`` standard errors, and the
text says which rule was used.
"""
from __future__ import annotations

import math
from typing import Any

from .bootstrap import excludes_zero
from .dynamics import SUDDEN_RATIO
from .stats import coverage_note

REPRODUCED, PARTLY, NOT, INCONCLUSIVE = "reproduced", "partly reproduced", "not reproduced", "inconclusive"
# A change counts only when it exceeds this many standard errors (entries treated as independent).
Z = 2.0


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


def label(space: str) -> str:
    """A reader's name for a space file name (the registry's label; the file name for unknown spaces)."""
    from ..probes.registry import space_spec

    spec = space_spec(space)
    return spec.label if spec is not None and "/" not in space else space.replace("_", " ")


def _pick(available, preference) -> str | None:
    return next((s for s in preference if s in available), None)


def _evidence(kind: str) -> list[str]:
    """The spaces a finding reads, best first, from what the registry declares about each space: for
    ``sizes`` the normalised-transfer (generalisation) spaces, then every probe's main space; for
    ``sharing`` the parameter-sharing spaces, then the main spaces; for ``smooth`` the main spaces."""
    from ..probes.registry import all_spaces, generalization_spaces, main_spaces

    first = {"sizes": generalization_spaces(),
             "sharing": [s.name for _, s in all_spaces() if s.sharing]}.get(kind, [])
    return list(dict.fromkeys([*first, *main_spaces()]))


def headline_spaces() -> list[str]:
    """The spaces the headline reports: every registered probe's main space, in registry order."""
    from ..probes.registry import main_spaces

    return main_spaces()


def finding_sizes(cmp: dict) -> dict:
    """Finding 1: larger models generalise more within groups (mean within-group entry, final checkpoints)."""
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
    within = [r["within"] for r in rows]
    se = [r.get("se_within") for r in rows]
    delta = within[-1] - within[0] if _ok(within[-1]) and _ok(within[0]) else float("nan")
    se_d = math.hypot(se[-1], se[0]) if _ok(se[-1]) and _ok(se[0]) else float("nan")
    monotone = all(_ok(a) and _ok(b) and b > a for a, b in zip(within, within[1:]))
    groups_up = None
    gen = cmp.get("generalization", {}).get(space, {}).get("by_size") if space else None
    if gen:
        first, last = rows[0]["model"], rows[-1]["model"]
        pairs = [(gen["cells"][g].get(first, {}).get("mean"), gen["cells"][g].get(last, {}).get("mean"))
                 for g in gen["groups"]]
        pairs = [(a, b) for a, b in pairs if _ok(a) and _ok(b)]
        groups_up = (sum(b > a for a, b in pairs), len(pairs))
    # a verdict needs complete matrices: a missing row (a failed fine-tuning) biases the means
    incomplete = [(r["model"], r["coverage"]) for r in rows if r.get("coverage") and not r["coverage"]["complete"]]
    # the paired interval of largest − smallest over the tasks both share (compare's size_deltas)
    sd = (cmp.get("size_deltas") or {}).get(space) or {}
    delta_ci = (sd.get("within") or {}).get("ci")
    use_ci = _has_ci(delta_ci) and sd.get("to") == rows[-1]["model"] and sd.get("from") == rows[0]["model"]
    side = excludes_zero(delta_ci) if use_ci else 0
    if incomplete:
        verdict = INCONCLUSIVE
    elif not _ok(delta):
        verdict = INCONCLUSIVE
    elif use_ci:
        verdict = (REPRODUCED if monotone else PARTLY) if side > 0 else NOT if side < 0 else INCONCLUSIVE
    elif _ok(se_d) and abs(delta) <= Z * se_d:
        verdict = INCONCLUSIVE
    elif delta > 0:
        verdict = REPRODUCED if monotone else PARTLY
    else:
        verdict = NOT
    cis = [r.get("within_ci") for r in rows]
    if use_ci:
        vals = ", ".join(f"{n} {fmt_with_ci(w, c)}" for n, w, c in zip(names, within, cis))
        text = (f"Mean within-group {label(space)} at the final checkpoint, smallest to largest model: {vals} "
                f"(95% bootstrap intervals over tasks); largest − smallest = {fmt_with_ci(delta, delta_ci)} "
                f"(paired over tasks): the interval "
                + ("lies above 0" if side > 0 else "lies below 0" if side < 0 else "holds 0")
                + ("" if monotone else "; not monotone in size") + ".")
    else:
        vals = ", ".join(f"{n} {_fmt(w)} ± {_fmt(s, False)}" for n, w, s in zip(names, within, se))
        text = (f"Mean within-group {label(space)} at the final checkpoint, smallest to largest model: {vals} "
                f"(mean ± s.e.); largest − smallest = {_fmt(delta)} (s.e. {_fmt(se_d, False)}; no bootstrap "
                f"intervals in this comparison, so the {Z:g} s.e. rule)" + ("" if monotone else "; not monotone in size") + ".")
    if groups_up:
        text += f" {groups_up[0]} of {groups_up[1]} groups generalise more in the largest model than in the smallest."
    if incomplete:
        text += (" Verdict withheld: the matrices are incomplete ("
                 + "; ".join(f"{m}: {coverage_note(c)}" for m, c in incomplete) + ").")
    rule = ("reproduced: grows monotonically with size and the 95% interval of largest − smallest lies above 0; "
            "partly: the interval lies above 0 but growth is not monotone; not reproduced: it lies below 0; "
            "inconclusive: it holds 0, or a matrix has missing rows"
            + ("" if use_ci else f" (without intervals: {Z:g} s.e. in place of the interval)"))
    return {**base, "verdict": verdict, "this_run": text, "rule": rule,
            "numbers": {"models": names, "within": within, "se_within": se, "within_ci": cis, "delta": delta,
                        "se_delta": se_d, "delta_ci": delta_ci if use_ci else None, "monotone": monotone,
                        "groups_up": list(groups_up) if groups_up else None}}


def finding_sharing(cmp: dict) -> dict:
    """Finding 2: parameter sharing between related tasks (within − between overlap) grows with training."""
    paper = "Parameter sharing between related tasks (overlap of their subnetworks) grows with training."
    dyn = cmp.get("dynamics", {})
    available = {s for per in dyn.values() for s in per}
    space = _pick(available, _evidence("sharing"))
    base = {"id": "sharing", "title": "Sharing between related tasks grows with training", "paper": paper,
            "space": space}
    if space is None:
        return {**base, "verdict": INCONCLUSIVE, "numbers": {},
                "this_run": "No model in this run has a task space at two or more checkpoints."}
    per_model, parts, used_ci = {}, [], []
    for slug, per in dyn.items():
        d = per.get(space)
        if not d:
            continue
        diff, se = d["difference"], d["se_difference"]
        if not (_ok(diff[0]) and _ok(diff[-1])):
            continue
        delta = diff[-1] - diff[0]
        se_d = math.hypot(se[0], se[-1]) if _ok(se[0]) and _ok(se[-1]) else float("nan")
        ci = (d.get("delta") or {}).get("ci")
        if _has_ci(ci):
            side = excludes_zero(ci)
            trend = "up" if side > 0 else "down" if side < 0 else "flat"
            how = f"Δ {fmt_with_ci(delta, ci)}"
            used_ci.append(True)
        else:
            trend = "up" if delta > (Z * se_d if _ok(se_d) else 0) else (
                "down" if delta < -(Z * se_d if _ok(se_d) else 0) else "flat")
            how = f"Δ {_fmt(delta)} ± {_fmt(se_d, False)} s.e."
            used_ci.append(False)
        per_model[slug] = {"revisions": d["revisions"], "difference": diff, "delta": delta, "se_delta": se_d,
                           "delta_ci": ci if _has_ci(ci) else None, "trend": trend}
        parts.append(f"{slug}: {_fmt(diff[0])} at {d['revisions'][0]} → {_fmt(diff[-1])} at "
                     f"{d['revisions'][-1]} ({trend}, {how})")
    if not per_model:
        return {**base, "verdict": INCONCLUSIVE, "numbers": {}, "this_run": "No usable checkpoints."}
    trends = [v["trend"] for v in per_model.values()]
    if all(t == "up" for t in trends):
        verdict = REPRODUCED
    elif "up" in trends:
        verdict = PARTLY
    elif "down" in trends:
        verdict = NOT
    else:
        verdict = INCONCLUSIVE
    text = (f"Within − between {label(space)} from the first to the final checkpoint: " + "; ".join(parts) + "."
            + (" Intervals: 95% bootstrap over tasks, paired (the same tasks at both checkpoints); a trend counts "
               "when its interval excludes 0." if all(used_ci) else
               f" No bootstrap intervals for every model in this comparison: a trend counts beyond {Z:g} s.e."))
    rule = ("reproduced: the gap grows in every model (the 95% interval of its change lies above 0); partly: in "
            "some; not reproduced: it shrinks (interval below 0) and grows in none; inconclusive: every interval "
            f"holds 0 (without intervals: {Z:g} s.e. in place of the interval)")
    return {**base, "verdict": verdict, "this_run": text, "rule": rule, "numbers": per_model}


def finding_smooth(cmp: dict) -> dict:
    """Finding 3: task spaces change smoothly over training (no step-to-step change far above the rest)."""
    paper = "Task spaces change smoothly during training, with no sudden stages."
    dyn = cmp.get("dynamics", {})
    available = {s for per in dyn.values() for s in per}
    space = _pick(available, _evidence("smooth"))
    base = {"id": "smooth", "title": "Task spaces change smoothly, no sudden stages", "paper": paper,
            "space": space}
    per_model, parts = {}, []
    for slug, per in dyn.items():
        d = per.get(space) if space else None
        if not d:
            continue
        s = d["sudden"]
        used = s.get("trained_only") or s
        note = " (after the onset of training, which is the largest change)" if s.get("trained_only") else ""
        per_model[slug] = {"rho_next": d["rho_next"], "rho_final": d["rho_final"], "ratio": used["ratio"],
                           "at": used["at"], "sudden": used["sudden"], "n_transitions": used["n_transitions"],
                           "trained_only": bool(s.get("trained_only"))}
        rhos = ", ".join(_fmt(r, False) for r in d["rho_next"])
        if _ok(used["ratio"]):
            parts.append(f"{slug}: ρ with the next checkpoint {rhos}; largest change {used['at']} is "
                         f"{_fmt(used['ratio'], False)}× the median of the others{note}")
        else:
            parts.append(f"{slug}: ρ with the next checkpoint {rhos} (one transition only)")
    testable = [v for v in per_model.values() if v["sudden"] is not None]
    if not testable:
        verdict = INCONCLUSIVE
        text = ("Too few checkpoints: the sudden-stage test needs at least two step-to-step changes "
                "(three checkpoints)." + (" " + "; ".join(parts) + "." if parts else ""))
    else:
        verdict = NOT if any(v["sudden"] for v in testable) else REPRODUCED
        text = f"Spearman between consecutive {label(space)} spaces — " + "; ".join(parts) + "."
    rule = (f"not reproduced: some step-to-step change (1 − ρ) exceeds {SUDDEN_RATIO:g}× the median of the "
            "others; reproduced otherwise; checkpoints are compared as given, whatever their spacing.")
    return {**base, "verdict": verdict, "this_run": text, "rule": rule, "numbers": per_model}


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
        e = {"within": s["signed"]["within"], "between": s["signed"]["between"],
             "difference": s["signed"]["difference"], "rho": s["signed"]["rho"], "p": s["signed"]["p"],
             "difference_abs": s["absolute"]["difference"], "rho_abs": s["absolute"]["rho"],
             "p_abs": s["absolute"]["p"], "ari": s["ari"],
             "control": cell.get("control"),
             "control_difference": vc["control"]["difference"] if vc else None,
             "gain_over_control": vc["difference"]["difference"] if vc else None,
             "coverage": s.get("coverage"),
             "difference_ci": s["signed"].get("difference_ci"), "rho_ci": s["signed"].get("rho_ci"),
             "ari_ci": s.get("ari_ci")}
        rel = s.get("reliability")
        if rel:
            e["reliability"] = {"split_half": rel.get("split_half"), "reliability": rel.get("reliability"),
                                "ceiling": (rel.get("full") or {}).get("ceiling"),
                                "fraction": (rel.get("full") or {}).get("fraction"),
                                "noise_ceiling": {k: (rel.get("noise_ceiling") or {}).get(k) for k in ("lower", "upper")},
                                "flagged": rel.get("flagged")}
        out["spaces"][name] = e
        # every headline figure says how many rows it rests on; an incomplete matrix is marked
        cov = s.get("coverage")
        on = f" on {coverage_note(cov)}" if cov else ""
        line = (f"{label(name)}{on}: within {_fmt(e['within'])} vs between {_fmt(e['between'])} "
                f"(gap {fmt_with_ci(e['difference'], e['difference_ci'])}), Spearman with theory ρ = "
                f"{fmt_with_ci(e['rho'], e['rho_ci'])} (p = {_fmt_p(e['p'])}), ARI {fmt_with_ci(e['ari'], e['ari_ci'])}")
        if rel:
            r = e["reliability"]
            line += (f"; split-half reliability {_fmt(r['reliability'], False)}, noise ceiling "
                     f"{_fmt(r['ceiling'], False)} (ρ is {_fmt(r['fraction'], False, 2)} of it)")
        if vc:
            line += f"; control {cell['control']} gap {_fmt(e['control_difference'])}"
        out["lines"].append(line)
    for f in cmp.get("findings", []):
        out["verdicts"][f["id"]] = f["verdict"]
        out["lines"].append(f"{f['title']}: {f['verdict']}")
    return out
