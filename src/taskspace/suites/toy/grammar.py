"""The toy grammar as a context-free grammar over feature-annotated categories, with a recogniser.

The grammar is the referee of the toy world: every good sentence of the suite and every corpus
sentence must be in its language, and no bad sentence may be (``tests/test_toy.py`` checks all of
them). The generators in :mod:`.phrases` and :mod:`.tasks` are written separately from these rules,
so the check is a real one.

A category is a tuple ``(name, *features)``; :func:`rules` returns the right-hand sides of a category
(terminals are strings, categories are tuples). Features are finite, so this is a plain CFG written
compactly. The rules, in words:

- ``ROOT -> DECL . | YNQ ? | WHQ ?``; a clause is ``SUBJ VP`` with agreement (phi) and animacy shared by
  subject and verb; ``there`` + be + a weak-determiner NP (+ PP) is an existential clause.
- ``VP``: a finite verb (optionally after ``often``), ``do``/``did not [ever]`` + base form,
  ``has``/``have [not [ever] | often]`` + participle, or ``be [not]`` + adjective / passive participle
  (``by`` NP whose animacy suits the verb's subject). The verb's frame decides its complement: nothing,
  an object NP, ``that`` + clause, or an embedded question (``who``/``what`` + clause with a gap, or
  ``whether`` + clause).
- Objects may be reflexives agreeing with the *local* subject (``herself``) — never subjects.
- NPI licensing (``lic``): ``ever`` (before the verb) and ``any`` (object determiner) only inside the
  clause of a licensor: ``not``, a subject with ``no``, or a yes/no question; licensing does not reach
  into relative clauses or embedded clauses.
- Gaps (filler-gap): a ``who``/``what``/``whose N`` filler or a relative ``that`` needs exactly one gap:
  the subject right after the filler, or an object — possibly inside a ``that``-clause, never inside a
  relative clause, an embedded question, a subject or a PP (islands). ``whose`` needs its noun with it.
"""
from __future__ import annotations

import re
from functools import cache
from typing import Iterable

from . import lexicon as L

Symbol = tuple
FRAMES = ("none", "np", "that", "wh")
GAPS: tuple[tuple[str, str], ...] = tuple(
    (phi, anim) for phi in L.PHIS for anim in L.ANIMS
    if any(n.anim == anim and (phi == "p" or n.gender == phi[1]) for n in L.NOUNS))

LEXICAL = frozenset({"N", "ADJ", "PADJ", "DET", "DETW", "DETDEF", "QPART", "NAME", "PRON_NOM", "PRON_ACC",
                     "REFL", "P", "V", "VPASS", "DO", "HAVE", "BE", "WH"})


# -- lexical categories ----------------------------------------------------------------------------
@cache
def lex(sym: Symbol) -> frozenset[str]:
    """The words of a lexical category."""
    name, *f = sym
    if name == "N":
        phi, anim = f
        return frozenset(n.form(phi) for n in L.NOUNS
                         if n.anim == anim and (phi == "p" or "s" + n.gender == phi))
    if name == "ADJ":
        return frozenset(L.ADJECTIVES + (L.PARTICIPLE_ADJECTIVES if f[0] == "i" else ()))
    if name == "PADJ":  # predicate adjectives; participles after "be" are passives
        return frozenset(L.ADJECTIVES)
    if name == "DET":
        num, neg = f
        return frozenset(("no",) if neg else L.DETERMINERS[num])
    if name == "DETW":
        return frozenset(L.WEAK_DETERMINERS[f[0]])
    if name == "DETDEF":
        return frozenset(L.DEFINITE_PLURAL)
    if name == "QPART":
        return frozenset(L.PARTITIVE_QUANTIFIERS)
    if name == "NAME":
        return frozenset(w for w, phi in L.NAMES.items() if f[0] is None or phi == f[0])
    if name == "PRON_NOM":
        phi, anim = f
        if anim == "i" and phi in ("sm", "sf"):
            return frozenset()
        return frozenset(w for w, p in L.PRON_NOM.items() if p == phi)
    if name == "PRON_ACC":
        return frozenset(L.PRON_ACC)
    if name == "REFL":
        return frozenset({L.REFLEXIVE[f[0]]})
    if name == "P":
        return frozenset(L.PREPOSITIONS)
    if name == "V":
        frame, anim, form = f
        return frozenset(v.form(form) for v in L.VERBS if v.takes(frame, anim))
    if name == "VPASS":
        return frozenset(v.part for v in L.VERBS if "np" in v.frames)
    if name in ("DO", "HAVE", "BE"):
        return frozenset({"DO": L.DO, "HAVE": L.HAVE, "BE": L.BE}[name][f[0]])
    if name == "WH":
        phi, anim = f[0]
        if phi in ("sm", "sf") and anim == "a":
            return frozenset({L.WH_HUMAN})
        return frozenset({L.WH_THING}) if phi == "sn" else frozenset()
    raise KeyError(sym)


# -- phrasal categories ----------------------------------------------------------------------------
def _subj_combos() -> Iterable[tuple[str, str, int]]:
    return ((phi, anim, neg) for phi in L.PHIS for anim in L.ANIMS for neg in (0, 1))


@cache
def rules(sym: Symbol) -> tuple[tuple, ...]:
    """Right-hand sides of a phrasal category."""
    name, *f = sym
    out: list[tuple] = []
    if name == "ROOT":
        out = [(("CL", None), "."), (("YNQ",), "?"), (("WHQ",), "?")]
    elif name == "CL":  # a declarative clause; f[0] is the gap it must contain (or None)
        gap = f[0]
        out = [(("SUBJ", phi, anim, neg), ("VP", phi, anim, gap, neg)) for phi, anim, neg in _subj_combos()]
        if gap is None:
            out.append(("there", ("EXIST",)))
    elif name == "EXIST":
        for phi in L.PHIS:
            for anim in L.ANIMS:
                num = L.num_of(phi)
                base = (("BE", num), ("DETW", num), ("NOM", phi, anim))
                out += [base, base + (("PP",),)]
    elif name == "SGAP":  # a clause whose subject is the gap: just its VP, agreeing with the gap
        phi, anim = f[0]
        out = [(("VP", phi, anim, None, 0),)]
    elif name == "SUBJ":
        phi, anim, neg = f
        num = L.num_of(phi)
        for tail in ((), (("PP",),), (("RC", phi, anim),), (("PP",), ("RC", phi, anim))):
            out.append((("DET", num, neg), ("NOM", phi, anim)) + tail)
        if not neg:
            if anim == "a":
                out.append((("NAME", phi),))
            out.append((("PRON_NOM", phi, anim),))
            if phi == "p":
                out.append((("QPART",), "of", ("DETDEF",), ("NOM", phi, anim)))
    elif name == "NOM":
        phi, anim = f
        out = [(("ADJ", anim), ("N", phi, anim)), (("N", phi, anim),)]
    elif name == "PP":
        out = [(("P",), ("NPP",))]
    elif name == "NPP":
        out = [(("DET", L.num_of(phi), neg), ("NOM", phi, anim))
               for phi in L.PHIS for anim in L.ANIMS for neg in (0, 1)] + [(("NAME", None),)]
    elif name == "RC":
        phi, anim = f
        out = [("that", ("SGAP", (phi, anim))), ("that", ("CL", (phi, anim)))]
    elif name == "VP":
        out = _vp(*f)
    elif name == "PRED":
        out = [(("PADJ",),), (("VPASS",),)]
        out += [(("V", "np", anim, "part"), "by", ("BYNP", anim)) for anim in L.ANIMS]
    elif name == "BYNP":
        anim = f[0]
        out = [(("DET", L.num_of(phi), neg), ("NOM", phi, anim)) for phi in L.PHIS for neg in (0, 1)]
        if anim == "a":
            out.append((("NAME", None),))
    elif name == "COMP":
        out = _comp(*f)
    elif name == "NPOBJ":
        subj_phi, lic = f
        for phi in L.PHIS:
            for anim in L.ANIMS:
                num = L.num_of(phi)
                for tail in ((), (("PP",),), (("RC", phi, anim),)):
                    for neg in (0, 1):
                        out.append((("DET", num, neg), ("NOM", phi, anim)) + tail)
                    if lic:
                        out.append(("any", ("NOM", phi, anim)) + tail)
        out += [(("NAME", None),), (("PRON_ACC",),)]
        if subj_phi is not None:
            out.append((("REFL", subj_phi),))
    elif name == "WHEMB":  # embedded question: "who the dog saw", "who saw the dog", "whether ..."
        for g in GAPS:
            out += [(("WH", g), ("SGAP", g)), (("WH", g), ("CL", g))]
        out.append(("whether", ("CL", None)))
    elif name == "WHQ":
        for g in GAPS:
            out.append((("WH", g), ("SGAP", g)))
            out.append(("whose", ("NOM", *g), ("VP", *g, None, 0)))
            for filler in ((("WH", g),), ("whose", ("NOM", *g))):
                for phi, anim, neg in _subj_combos():
                    num = L.num_of(phi)
                    for frame in FRAMES:
                        for aux, form in ((("DO", num), "base"), (("HAVE", num), "part")):
                            out.append(filler + (aux, ("SUBJ", phi, anim, neg), ("V", frame, anim, form),
                                                 ("COMP", frame, phi, g, 0)))
    elif name == "YNQ":  # yes/no questions license NPIs
        for phi, anim, neg in _subj_combos():
            num = L.num_of(phi)
            subj = ("SUBJ", phi, anim, neg)
            for frame in FRAMES:
                for aux, form in ((("DO", num), "base"), (("HAVE", num), "part")):
                    for ever in ((), ("ever",)):
                        out.append((aux, subj) + ever + (("V", frame, anim, form), ("COMP", frame, phi, None, 1)))
            out.append((("BE", num), subj, ("PRED",)))
    else:
        raise KeyError(sym)
    return tuple(out)


def _vp(phi: str, anim: str, gap, lic: int) -> list[tuple]:
    num = L.num_of(phi)
    fin = "s3" if num == "sg" else "base"
    out: list[tuple] = []
    simple_adverbs = [(), ("often",)] + ([("ever",)] if lic else [])
    # after "has/have": (adverbs, licensing for the rest of the clause)
    perfect_adverbs = [((), lic), (("often",), lic), (("not",), 1), (("not", "ever"), 1)]
    if lic:
        perfect_adverbs.append((("ever",), lic))
    for frame in FRAMES:
        for form in (fin, "past"):
            for adv in simple_adverbs:
                out.append(adv + (("V", frame, anim, form), ("COMP", frame, phi, gap, lic)))
        for ever in ((), ("ever",)):
            out.append((("DO", num), "not") + ever + (("V", frame, anim, "base"), ("COMP", frame, phi, gap, 1)))
        for adv, lic2 in perfect_adverbs:
            out.append((("HAVE", num),) + adv + (("V", frame, anim, "part"), ("COMP", frame, phi, gap, lic2)))
    if gap is None:
        out += [(("BE", num), ("PRED",)), (("BE", num), "not", ("PRED",))]
    return out


def _comp(frame: str, phi: str, gap, lic: int) -> list[tuple]:
    if frame == "none":
        return [()] if gap is None else []
    if frame == "np":
        return [()] if gap is not None else [(("NPOBJ", phi, lic),)]
    if frame == "that":  # a gap may go down into a that-clause (long-distance), licensing does not
        return [("that", ("CL", gap))]
    if frame == "wh":  # embedded questions are islands: no outer gap inside
        return [(("WHEMB",),)] if gap is None else []
    raise KeyError(frame)


# -- first sets (prune rules that cannot start with the next word) -----------------------------------
_FIRST: dict[Symbol, tuple[frozenset[str], bool]] = {}


def _first_of(sym: Symbol) -> tuple[frozenset[str], bool]:
    """(words that can start ``sym``, whether ``sym`` can be empty), computed once for all symbols."""
    if not _FIRST:
        _compute_first()
    return _FIRST.get(sym, (frozenset(), False))


def _compute_first() -> None:
    seen: set[Symbol] = set()
    todo: list[Symbol] = [("ROOT",)]
    while todo:
        s = todo.pop()
        if s in seen:
            continue
        seen.add(s)
        if s[0] not in LEXICAL:
            for rhs in rules(s):
                todo.extend(el for el in rhs if isinstance(el, tuple) and el not in seen)
    first: dict[Symbol, set[str]] = {s: (set(lex(s)) if s[0] in LEXICAL else set()) for s in seen}
    nullable: dict[Symbol, bool] = {s: False for s in seen}
    changed = True
    while changed:
        changed = False
        for s in seen:
            if s[0] in LEXICAL:
                continue
            for rhs in rules(s):
                all_null = True
                for el in rhs:
                    if isinstance(el, str):
                        add, null = {el}, False
                    else:
                        add, null = first[el], nullable[el]
                    if not add <= first[s]:
                        first[s] |= add
                        changed = True
                    if not null:
                        all_null = False
                        break
                if all_null and not nullable[s]:
                    nullable[s] = True
                    changed = True
    _FIRST.update({s: (frozenset(first[s]), nullable[s]) for s in seen})


@cache
def _rules_by_first(sym: Symbol) -> tuple[dict[str, tuple[tuple, ...]], tuple[tuple, ...]]:
    """The rules of ``sym`` indexed by the words they can start with, and those that can be empty."""
    index: dict[str, list[tuple]] = {}
    nullable: list[tuple] = []
    for rhs in rules(sym):
        starts: set[str] = set()
        empty = True
        for el in rhs:
            fs, null = ({el}, False) if isinstance(el, str) else _first_of(el)
            starts |= fs
            if not null:
                empty = False
                break
        if empty:
            nullable.append(rhs)
        for w in starts:
            index.setdefault(w, []).append(rhs)
    return {w: tuple(r) for w, r in index.items()}, tuple(nullable)


# -- the recogniser --------------------------------------------------------------------------------
_TOKEN = re.compile(r"[a-z]+|[^\sa-z]")


def tokenize(sentence: str) -> list[str]:
    """Lower-case word and punctuation tokens, the way the toy word-level tokenizer splits them."""
    return _TOKEN.findall(sentence.lower())


def render(words: list[str]) -> str:
    """Natural spelling of a token list: capital first letter and names, punctuation attached."""
    out: list[str] = []
    for i, w in enumerate(words):
        if w in L.PUNCTUATION:
            out[-1] = out[-1] + w if out else w
            continue
        out.append(w.capitalize() if i == 0 or w in L.NAMES else w)
    return " ".join(out)


def parses(tokens: list[str], start: Symbol = ("ROOT",)) -> bool:
    """True iff the token list is a sentence of the toy language (derivable from ``start``)."""
    n = len(tokens)
    memo: dict[tuple[Symbol, int], frozenset[int]] = {}

    def ends(sym: Symbol, i: int) -> frozenset[int]:
        key = (sym, i)
        hit = memo.get(key)
        if hit is not None:
            return hit
        memo[key] = frozenset()  # the grammar has no left recursion; this only guards against it
        if sym[0] in LEXICAL:
            res = frozenset({i + 1}) if i < n and tokens[i] in lex(sym) else frozenset()
        else:
            acc: set[int] = set()
            by_first, nullable_rules = _rules_by_first(sym)
            for rhs in by_first.get(tokens[i], ()) + nullable_rules if i < n else nullable_rules:
                pos = {i}
                for el in rhs:
                    if isinstance(el, str):
                        pos = {p + 1 for p in pos if p < n and tokens[p] == el}
                    else:
                        new: set[int] = set()
                        fs, null = _first_of(el)
                        for p in pos:
                            if null or (p < n and tokens[p] in fs):
                                new |= ends(el, p)
                        pos = new
                    if not pos:
                        break
                acc |= pos
            res = frozenset(acc)
        memo[key] = res
        return res

    return n in ends(start, 0)


def is_grammatical(sentence: str) -> bool:
    """True iff ``sentence`` (natural spelling) is in the toy language."""
    return parses(tokenize(sentence))
