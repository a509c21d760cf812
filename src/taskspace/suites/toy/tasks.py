"""The toy suite: minimal-pair tasks over the toy grammar, grouped like BLiMP.

Each task is a *maker*: a function of :class:`~.phrases.Phrases` that returns one (good, bad) pair of
token lists. ``kind`` says how good and bad differ: ``substitution`` (same length, exactly one word
differs) or ``permutation`` (the same words in another order; the final punctuation follows the clause
type, so ``Has the boy ever slept?`` / ``The boy has ever slept.`` is a permutation).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from ...errors import InputError, TaskspaceError
from ..schema import Pair, Suite
from . import lexicon as L
from .grammar import render
from .phrases import Phrases, Words

TOY_GROUPS: dict[str, str] = {
    "anaphor_agreement": "a reflexive object agrees in number and gender with the subject of its clause",
    "subject_verb_agreement": "a finite verb or auxiliary agrees in number with the head noun of its "
                              "subject, wherever the subject stands and whatever intervenes",
    "determiner_noun_agreement": "a demonstrative determiner agrees in number with its noun",
    "npi_licensing": "'ever' and 'any' need a licensor in their own clause: 'not' before them, a 'no' "
                     "subject, or a yes/no question",
    "irregular_forms": "irregular verbs have a past form (after a subject) distinct from the participle "
                       "(after has/have, after be in a passive, and as an adjective)",
    "argument_structure": "a verb's frame fixes its complement: transitive verbs need an object, "
                          "intransitive verbs take none and have no passive",
    "s-selection": "action and perception verbs need an animate subject (also as the by-phrase of a passive)",
    "filler_gap_dependency": "a wh-word needs exactly one gap in its clause; a that-clause has none",
    "island_effects": "a gap cannot sit inside a relative clause or an embedded question, and 'whose' "
                      "cannot leave its noun behind",
    "binding": "a reflexive needs a c-commanding antecedent in its own clause and is never a subject",
    "quantifiers": "existential 'there' takes only weak determiners; a partitive 'of the N' needs a "
                   "quantifier that can take it",
}

Maker = Callable[[Phrases], tuple[Words, Words]]


@dataclass(frozen=True)
class TaskDef:
    """One paradigm: its name, group, how good and bad differ, and its pair maker."""

    name: str
    group: str
    kind: str  # "substitution" or "permutation"
    maker: Maker
    description: str


TASKS: list[TaskDef] = []


def task(group: str, kind: str = "substitution") -> Callable[[Maker], Maker]:
    def register(fn: Maker) -> Maker:
        TASKS.append(TaskDef(fn.__name__, group, kind, fn, (fn.__doc__ or "").strip()))
        return fn
    return register


# -- small helpers -------------------------------------------------------------------------------------
def _plain_subject(p: Phrases, anim: str = "a", num: str | None = None, **kw) -> tuple[Words, str, str]:
    return p.subject(anim, num, pron_p=0.0, pp_p=0.0, rc_p=0.0, **kw)


def _other(p: Phrases, options, not_this):
    return p.pick([o for o in options if o != not_this])


def _np_only(v: L.Verb) -> bool:
    """Verbs that must have an object (so a missing object is an error)."""
    return set(v.frames) == {"np"}


def _intransitive_only(v: L.Verb) -> bool:
    return set(v.frames) == {"none"} and v.frames["none"] == "a"


def _object_np(p: Phrases) -> Words:
    return p.simple_np(name_p=0.15)


def _swap(words: Words, i: int, new: str) -> Words:
    out = list(words)
    out[i] = new
    return out


# == anaphor_agreement ===============================================================================
@task("anaphor_agreement")
def anaphor_gender_agreement(p: Phrases):
    """'The boy saw himself.' / 'The boy saw herself.' — singular antecedents, gender of the reflexive."""
    s, phi, anim = _plain_subject(p, "a", "sg")
    vg = p.verb_group(p.verb("np"), phi)
    good = s + vg + [L.REFLEXIVE[phi], "."]
    bad = _swap(good, len(good) - 2, _other(p, ["himself", "herself", "itself"], L.REFLEXIVE[phi]))
    return good, bad


@task("anaphor_agreement")
def anaphor_number_agreement(p: Phrases):
    """'The boys saw themselves.' / 'The boys saw himself.' — number of the reflexive."""
    s, phi, anim = _plain_subject(p, "a")
    vg = p.verb_group(p.verb("np"), phi)
    good = s + vg + [L.REFLEXIVE[phi], "."]
    wrong = "themselves" if phi != "p" else p.pick(["himself", "herself", "itself"])
    return good, _swap(good, len(good) - 2, wrong)


# == subject_verb_agreement ==========================================================================
def _present_pair(p: Phrases, subj: Words, phi: str, anim: str, obj_p: float = 0.5) -> tuple[Words, Words]:
    frame = "np" if anim == "a" and p.chance(obj_p) else "none"
    v = p.verb(frame, anim)
    good_v, bad_v = (v.s3, v.base) if phi != "p" else (v.base, v.s3)
    tail = _object_np(p) if frame == "np" else []
    return subj + [good_v] + tail + ["."], subj + [bad_v] + tail + ["."]


@task("subject_verb_agreement")
def sva_simple(p: Phrases):
    """'The cat sleeps.' / 'The cat sleep.' — present verb right after its subject."""
    anim = "a" if p.chance(0.8) else "i"
    s, phi, anim = p.np(anim)
    return _present_pair(p, s, phi, anim)


@task("subject_verb_agreement")
def sva_irregular_plural_subject(p: Phrases):
    """'The men sleep.' / 'The man sleep.' — the subject noun (irregular plural) changes, the verb stays."""
    n = p.noun("a", irregular=True)
    num = p.num()
    det = p.pick(("the", "no"))
    adj = [p.adjective("a")] if p.chance(0.3) else []
    good_s = [det] + adj + [n.form(n.phi(num))]
    bad_s = [det] + adj + [n.form(n.phi("pl" if num == "sg" else "sg"))]
    good, _ = _present_pair(p, good_s, n.phi(num), "a")
    return good, bad_s + good[len(good_s):]


@task("subject_verb_agreement")
def sva_across_prepositional_phrase(p: Phrases):
    """'The cat near the dogs sleeps.' / '... sleep.' — a PP with a noun of the other number intervenes."""
    anim = "a" if p.chance(0.8) else "i"
    s, phi, anim = p.np(anim)
    other = "sg" if phi == "p" else "pl"
    s = s + [p.pick(L.PREPOSITIONS)] + p.np(None, other)[0]
    return _present_pair(p, s, phi, anim)


@task("subject_verb_agreement")
def sva_across_relative_clause(p: Phrases):
    """'The cat that the dogs see sleeps.' / '... sleep.' — a relative clause with an attractor intervenes."""
    s, phi, anim = p.np("a" if p.chance(0.8) else "i")
    other = "sg" if phi == "p" else "pl"
    if p.chance(0.5):  # object relative: the attractor is the relative clause's subject
        a, a_phi, a_anim = p.np("a", other)
        v = p.verb("np", "a")
        rc = ["that"] + a + [p.finite(v, a_phi)]
    else:  # subject relative: the attractor is its object
        if anim == "a":
            v = p.verb("np", "a")
            rc = ["that", p.finite(v, phi, "past")] + p.np(None, other)[0]
        else:
            rc = ["that", p.pick(L.BE[L.num_of(phi)][1:]), p.verb("np").part, "by"] + p.np("a", other)[0]
    return _present_pair(p, s + rc, phi, anim)


@task("subject_verb_agreement")
def sva_auxiliary(p: Phrases):
    """'The cats have slept.' / 'The cats has slept.' — does/do, has/have, is/are, was/were."""
    s, phi, anim = p.subject(pron_p=0.0, rc_p=0.0, pp_p=0.0)
    num = L.num_of(phi)
    kind = p.pick(("do", "have", "be"))
    if kind == "do":
        aux, other = ("does", "do") if num == "sg" else ("do", "does")
        frame = "np" if anim == "a" and p.chance(0.5) else "none"
        v = p.verb(frame, anim)
        rest = ["not", v.base] + (_object_np(p) if frame == "np" else [])
    elif kind == "have":
        aux, other = ("has", "have") if num == "sg" else ("have", "has")
        v = p.verb("none", anim)
        rest = [v.part]
    else:
        i = p.rng.randrange(2)
        aux, other = L.BE[num][i], L.BE["pl" if num == "sg" else "sg"][i]
        rest = [p.pick(L.ADJECTIVES)]
    good = s + [aux] + rest + ["."]
    return good, _swap(good, len(s), other)


@task("subject_verb_agreement")
def sva_in_question(p: Phrases):
    """'Does the cat sleep?' / 'Do the cat sleep?' — the auxiliary agrees with the subject after it."""
    s, phi, anim = p.subject(pron_p=0.0, rc_p=0.0, pp_p=0.15, name_p=0.1)
    num = L.num_of(phi)
    kind = p.pick(("do", "have", "be"))
    if kind == "be":
        i = p.rng.randrange(2)
        aux, other = L.BE[num][i], L.BE["pl" if num == "sg" else "sg"][i]
        rest = [p.pick(L.ADJECTIVES)]
    else:
        table = {"do": (("does", "do"), "base"), "have": (("has", "have"), "part")}[kind]
        (sg_aux, pl_aux), form = table
        aux, other = (sg_aux, pl_aux) if num == "sg" else (pl_aux, sg_aux)
        frame = "np" if anim == "a" and p.chance(0.5) else "none"
        v = p.verb(frame, anim)
        rest = [v.form(form)] + (_object_np(p) if frame == "np" else [])
    good = [aux] + s + rest + ["?"]
    return good, _swap(good, 0, other)


@task("subject_verb_agreement")
def sva_existential_there(p: Phrases):
    """'There is a cat near the box.' / 'There are a cat near the box.' — be agrees with the noun after it."""
    num = p.num()
    n, phi, anim = p.np(None, num, det=p.pick(L.WEAK_DETERMINERS[num]))
    i = p.rng.randrange(2)
    be, other = L.BE[num][i], L.BE["pl" if num == "sg" else "sg"][i]
    good = ["there", be] + n + (p.pp() if p.chance(0.6) else []) + ["."]
    return good, _swap(good, 1, other)


# == determiner_noun_agreement =======================================================================
def _dna_frame(p: Phrases, obj: Words) -> Words:
    s, phi, anim = _plain_subject(p, "a")
    return s + p.verb_group(p.verb("np"), phi, kind=p.pick(("simple", "simple", "have"))) + obj + ["."]


@task("determiner_noun_agreement")
def dna_demonstrative_swap(p: Phrases):
    """'The boy saw this cat.' / 'The boy saw these cat.' — the demonstrative changes number."""
    n = p.noun(irregular=False)
    num = p.num()
    i = p.rng.randrange(2)
    det, other = L.DEMONSTRATIVES[num][i], L.DEMONSTRATIVES["pl" if num == "sg" else "sg"][i]
    good = _dna_frame(p, [det, n.form(n.phi(num))])
    return good, _swap(good, len(good) - 3, other)


@task("determiner_noun_agreement")
def dna_noun_swap(p: Phrases):
    """'The boy saw these cats.' / 'The boy saw these cat.' — the noun changes number."""
    n = p.noun(irregular=False)
    num = p.num()
    other = "pl" if num == "sg" else "sg"
    good = _dna_frame(p, [p.pick(L.DEMONSTRATIVES[num]), n.form(n.phi(num))])
    return good, _swap(good, len(good) - 2, n.form(n.phi(other)))


@task("determiner_noun_agreement")
def dna_with_adjective(p: Phrases):
    """'The boy saw those big cats.' / 'The boy saw that big cats.' — an adjective intervenes."""
    n = p.noun(irregular=False)
    num = p.num()
    i = p.rng.randrange(2)
    det, other = L.DEMONSTRATIVES[num][i], L.DEMONSTRATIVES["pl" if num == "sg" else "sg"][i]
    good = _dna_frame(p, [det, p.adjective(n.anim), n.form(n.phi(num))])
    return good, _swap(good, len(good) - 4, other)


@task("determiner_noun_agreement")
def dna_irregular_noun(p: Phrases):
    """'The boy saw those men.' / 'The boy saw those man.' — irregular plurals."""
    n = p.noun(irregular=True)
    num = p.num()
    other = "pl" if num == "sg" else "sg"
    adj = [p.adjective(n.anim)] if p.chance(0.3) else []
    good = _dna_frame(p, [p.pick(L.DEMONSTRATIVES[num])] + adj + [n.form(n.phi(num))])
    return good, _swap(good, len(good) - 2, n.form(n.phi(other)))


# == npi_licensing ===================================================================================
def _perfect_tail(p: Phrases, anim: str) -> Words:
    """Participle (+ object) after an auxiliary and its adverbs."""
    frame = "np" if anim == "a" and p.chance(0.5) else "none"
    v = p.verb(frame, anim)
    return [v.part] + (_object_np(p) if frame == "np" else [])


@task("npi_licensing")
def npi_ever_licensed_by_not(p: Phrases):
    """'The boy has not ever slept.' / 'The boy has often ever slept.' — 'not' licenses 'ever'."""
    s, phi, anim = p.subject(pron_p=0.1, rc_p=0.0)
    good = s + [L.HAVE[L.num_of(phi)][0], "not", "ever"] + _perfect_tail(p, anim) + ["."]
    return good, _swap(good, len(s) + 1, "often")


@task("npi_licensing")
def npi_any_licensed_by_no(p: Phrases):
    """'No boy saw any cats.' / 'The boy saw any cats.' — a 'no' subject licenses 'any'."""
    n = p.noun("a")
    num = p.num()
    phi = n.phi(num)
    good_s = ["no"] + p.nom(n, phi, 0.2)
    v = p.verb("np")
    vg = p.verb_group(v, phi, kind=p.pick(("simple", "simple", "have")), allow_not=False)
    o = p.noun()
    good = good_s + vg + ["any"] + p.nom(o, o.phi(p.num()), 0.2) + ["."]
    return good, _swap(good, 0, p.pick(L.DETERMINERS[num]))


@task("npi_licensing", "permutation")
def npi_ever_in_question(p: Phrases):
    """'Has the boy ever slept?' / 'The boy has ever slept.' — a yes/no question licenses 'ever'."""
    s, phi, anim = p.subject(pron_p=0.0, rc_p=0.0, pp_p=0.0)
    num = L.num_of(phi)
    if p.chance(0.5):
        aux, tail = L.HAVE[num][0], _perfect_tail(p, anim)
    else:
        frame = "np" if anim == "a" and p.chance(0.5) else "none"
        v = p.verb(frame, anim)
        aux, tail = p.pick(L.DO[num]), [v.base] + (_object_np(p) if frame == "np" else [])
    good = [aux] + s + ["ever"] + tail + ["?"]
    bad = s + [aux, "ever"] + tail + ["."]
    return good, bad


@task("npi_licensing", "permutation")
def npi_ever_scope_of_not(p: Phrases):
    """'The boy has not ever slept.' / 'The boy has ever not slept.' — 'ever' must follow 'not'."""
    s, phi, anim = p.subject(pron_p=0.1, rc_p=0.0)
    num = L.num_of(phi)
    if p.chance(0.5):
        aux, tail = L.HAVE[num][0], _perfect_tail(p, anim)
    else:
        frame = "np" if anim == "a" and p.chance(0.5) else "none"
        v = p.verb(frame, anim)
        aux, tail = p.pick(L.DO[num]), [v.base] + (_object_np(p) if frame == "np" else [])
    good = s + [aux, "not", "ever"] + tail + ["."]
    bad = s + [aux, "ever", "not"] + tail + ["."]
    return good, bad


@task("npi_licensing", "permutation")
def npi_licensor_scope_relative_clause(p: Phrases):
    """'No boy that the dog saw has ever slept.' / 'The boy that no dog saw has ever slept.' — a 'no'
    inside a relative clause does not license 'ever' in the main clause."""
    n = p.noun("a")
    num = p.num()
    phi = n.phi(num)
    a = p.noun("a")
    a_phi = a.phi(p.num())
    rc = ["that", "the"] + p.nom(a, a_phi, 0.15) + [p.finite(p.verb("np"), a_phi)]
    head = p.nom(n, phi, 0.15)
    if p.chance(0.5):
        tail = [L.HAVE[num][0], "ever"] + _perfect_tail(p, "a")
    else:
        v = p.verb(p.pick(("np", "none")))
        tail = ["ever", p.finite(v, phi)] + (_object_np(p) if "np" in v.frames and not v.takes("none", "a")
                                             else [])
    good = ["no"] + head + rc + tail + ["."]
    bad = ["the"] + head + rc[:1] + ["no"] + rc[2:] + tail + ["."]
    return good, bad


# == irregular_forms =================================================================================
def _irregular_verb(p: Phrases, frame: str | None = None) -> L.Verb:
    frame = frame or ("np" if p.chance(0.7) else "none")
    return p.verb(frame, "a", where=lambda v: v.irregular)


@task("irregular_forms")
def irregular_past_in_simple_past(p: Phrases):
    """'The boy ate the cake.' / 'The boy eaten the cake.' — the past form, not the participle."""
    s, phi, anim = p.subject("a", rc_p=0.0)
    v = _irregular_verb(p)
    tail = _object_np(p) if v.takes("np", "a") and not v.takes("none", "a") else []
    good = s + [v.past] + tail + ["."]
    return good, _swap(good, len(s), v.part)


@task("irregular_forms")
def irregular_participle_after_have(p: Phrases):
    """'The boy has eaten the cake.' / 'The boy has ate the cake.' — the participle after has/have."""
    s, phi, anim = p.subject("a", rc_p=0.0)
    v = _irregular_verb(p)
    adv = p.pick(([], [], ["not"], ["often"]))
    tail = _object_np(p) if v.takes("np", "a") and not v.takes("none", "a") else []
    good = s + [L.HAVE[L.num_of(phi)][0]] + adv + [v.part] + tail + ["."]
    return good, _swap(good, len(s) + 1 + len(adv), v.past)


@task("irregular_forms")
def irregular_participle_in_passive(p: Phrases):
    """'The cake was eaten by the boy.' / 'The cake was ate by the boy.' — the participle after be."""
    s, phi, anim = p.subject(rc_p=0.0, pron_p=0.05)
    v = _irregular_verb(p, "np")
    be = [p.pick(L.BE[L.num_of(phi)])] + (["not"] if p.chance(0.2) else [])
    by = ["by"] + p.simple_np("a") if p.chance(0.6) else []
    good = s + be + [v.part] + by + ["."]
    return good, _swap(good, len(s) + len(be), v.past)


@task("irregular_forms")
def irregular_participle_as_adjective(p: Phrases):
    """'The boy found the broken box.' / 'The boy found the broke box.' — participles as adjectives."""
    i = p.rng.randrange(len(L.PARTICIPLE_ADJECTIVES))
    adj = L.PARTICIPLE_ADJECTIVES[i]
    past = next(v.past for v in L.VERBS if v.part == adj)
    n = p.noun("i")
    num = p.num()
    np_ = [p.pick(L.DETERMINERS[num]), adj, n.form(n.phi(num))]
    if p.chance(0.5):  # object position
        s, phi, anim = _plain_subject(p, "a")
        good = s + p.verb_group(p.verb("np"), phi, kind=p.pick(("simple", "have")), allow_not=False) + np_ + ["."]
        k = len(good) - 3
    else:  # subject position, with an inanimate-subject verb or a copula
        phi = n.phi(num)
        if p.chance(0.5):
            vp = p.verb_group(p.verb("none", "i"), phi, kind="simple")
        else:
            vp = [p.pick(L.BE[num]), p.pick(L.ADJECTIVES)]
        good = np_ + vp + ["."]
        k = 1
    return good, _swap(good, k, past)


# == argument_structure ==============================================================================
def _verb_slot(p: Phrases, phi: str) -> tuple[str, Callable[[L.Verb], Words]]:
    """A verb-group shape shared by good and bad: returns a function of the verb."""
    num = L.num_of(phi)
    kind = p.pick(("pres", "past", "have", "do"))
    if kind == "pres":
        return kind, lambda v: [v.s3 if num == "sg" else v.base]
    if kind == "past":
        return kind, lambda v: [v.past]
    if kind == "have":
        return kind, lambda v: [L.HAVE[num][0], v.part]
    aux = p.pick(L.DO[num])
    return kind, lambda v: [aux, "not", v.base]


@task("argument_structure")
def transitive(p: Phrases):
    """'The boy saw the cat.' / 'The boy slept the cat.' — an object needs a transitive verb."""
    s, phi, anim = p.subject("a", rc_p=0.0, pron_p=0.05)
    _, slot = _verb_slot(p, phi)
    good_v, bad_v = p.verb("np"), p.verb("none", where=_intransitive_only)
    obj = _object_np(p)
    good, bad = s + slot(good_v) + obj + ["."], s + slot(bad_v) + obj + ["."]
    return good, bad


@task("argument_structure")
def intransitive(p: Phrases):
    """'The boy slept.' / 'The boy saw.' — a transitive verb cannot lack its object."""
    s, phi, anim = p.subject("a", rc_p=0.0, pron_p=0.05)
    _, slot = _verb_slot(p, phi)
    good_v, bad_v = p.verb("none", where=_intransitive_only), p.verb("np", where=_np_only)
    return s + slot(good_v) + ["."], s + slot(bad_v) + ["."]


@task("argument_structure")
def passive(p: Phrases):
    """'The cat was seen by the boy.' / 'The cat was slept by the boy.' — only transitives passivise."""
    s, phi, anim = p.subject(rc_p=0.0, pron_p=0.05)
    be = [p.pick(L.BE[L.num_of(phi)])] + (["not"] if p.chance(0.15) else [])
    by = ["by"] + p.simple_np("a") if p.chance(0.6) else []
    good_v, bad_v = p.verb("np"), p.verb("none", where=_intransitive_only)
    return s + be + [good_v.part] + by + ["."], s + be + [bad_v.part] + by + ["."]


# == s-selection =====================================================================================
@task("s-selection")
def animate_subject_trans(p: Phrases):
    """'The boy saw the cat.' / 'The box saw the cat.' — the subject of an action verb is animate."""
    num = p.num()
    good_n, bad_n = p.noun("a"), p.noun("i")
    det = p.pick(L.DETERMINERS[num])
    adj = [p.pick(L.ADJECTIVES)] if p.chance(0.2) else []
    phi = good_n.phi(num)
    frame = "np" if p.chance(0.7) else "none"
    v = p.verb(frame, "a", where=None if frame == "np" else _intransitive_only)
    vg = p.verb_group(v, phi, allow_not=True)
    good = [det] + adj + [good_n.form(phi)] + vg + (_object_np(p) if frame == "np" else []) + ["."]
    return good, _swap(good, 1 + len(adj), bad_n.form(bad_n.phi(num)))


@task("s-selection")
def animate_subject_passive(p: Phrases):
    """'The cat was seen by the boy.' / 'The cat was seen by the box.' — the by-phrase is animate."""
    s, phi, anim = p.subject(rc_p=0.0, pron_p=0.05)
    be = [p.pick(L.BE[L.num_of(phi)])]
    num = p.num()
    good_n, bad_n = p.noun("a"), p.noun("i")
    det = p.pick(L.DETERMINERS[num])
    good = s + be + [p.verb("np").part, "by", det, good_n.form(good_n.phi(num)), "."]
    return good, _swap(good, len(good) - 2, bad_n.form(bad_n.phi(num)))


# == filler_gap_dependency ===========================================================================
def _asking(p: Phrases) -> Words:
    """A main clause that can take both a that-clause and an embedded question: 'The boy knows'."""
    s, phi, anim = p.subject("a", pron_p=0.1, rc_p=0.0, pp_p=0.05)
    v = p.verb("wh", where=lambda v: "that" in v.frames)
    return s + p.verb_group(v, phi, kind=p.pick(("simple", "simple", "have")), allow_not=False)


def _embedded_subject(p: Phrases, long: bool) -> tuple[Words, str, str]:
    s, phi, anim = p.subject("a", pron_p=0.0, rc_p=0.0, pp_p=0.0, name_p=0.2 if not long else 0.0)
    if long:
        s = s + p.relative_clause(phi, anim)
    return s, phi, anim


def _gap_pair(p: Phrases, long: bool) -> tuple[Words, Words]:
    head = _asking(p)
    s, phi, anim = _embedded_subject(p, long)
    v = p.verb("np", anim, where=_np_only)
    wh = L.WH_HUMAN if p.chance(0.5) else L.WH_THING
    good = head + [wh] + s + [p.finite(v, phi)] + ["."]
    return good, _swap(good, len(head), "that")


def _no_gap_pair(p: Phrases, long: bool) -> tuple[Words, Words]:
    head = _asking(p)
    s, phi, anim = _embedded_subject(p, long)
    v = p.verb("np", anim, where=_np_only)
    good = head + ["that"] + s + [p.finite(v, phi)] + _object_np(p) + ["."]
    return good, _swap(good, len(head), L.WH_HUMAN if p.chance(0.5) else L.WH_THING)


@task("filler_gap_dependency")
def wh_vs_that_no_gap(p: Phrases):
    """'The boy knows that the dog saw the cat.' / '... knows who the dog saw the cat.'"""
    return _no_gap_pair(p, long=False)


@task("filler_gap_dependency")
def wh_vs_that_with_gap(p: Phrases):
    """'The boy knows who the dog saw.' / 'The boy knows that the dog saw.'"""
    return _gap_pair(p, long=False)


@task("filler_gap_dependency")
def wh_vs_that_no_gap_long_distance(p: Phrases):
    """'The boy knows that the dog that the cat saw chased the bird.' / '... knows who the dog ...'"""
    return _no_gap_pair(p, long=True)


@task("filler_gap_dependency")
def wh_vs_that_with_gap_long_distance(p: Phrases):
    """'The boy knows who the dog that the cat saw chased.' / '... knows that the dog ...'"""
    return _gap_pair(p, long=True)


# == island_effects ==================================================================================
def _question_head(p: Phrases) -> tuple[str, Callable[[L.Verb], str], Words, str]:
    """wh-word, auxiliary with the verb form it wants, subject words, subject phi."""
    s, phi, anim = p.subject("a", pron_p=0.05, rc_p=0.0, pp_p=0.0)
    num = L.num_of(phi)
    if p.chance(0.5):
        aux, form = p.pick(L.DO[num]), (lambda v: v.base)
    else:
        aux, form = L.HAVE[num][0], (lambda v: v.part)
    return aux, form, s, phi


@task("island_effects", "permutation")
def complex_np_island(p: Phrases):
    """'Who has the cat that has seen the dog chased?' / 'Who has the cat that has chased seen the dog?'
    — the gap cannot be inside a relative clause."""
    wh = L.WH_HUMAN if p.chance(0.5) else L.WH_THING
    n = p.noun("a")
    num = p.num()
    phi = n.phi(num)
    v_rc, v_main = p.verb("np", where=_np_only), p.verb("np", where=_np_only)
    obj = p.np(None)[0]
    head = [p.pick(L.DETERMINERS[num])] + p.nom(n, phi, 0.2)
    aux = L.HAVE[num][0]
    rc_aux = L.HAVE[num][0]
    good = [wh, aux] + head + ["that", rc_aux, v_rc.part] + obj + [v_main.part, "?"]
    bad = [wh, aux] + head + ["that", rc_aux, v_main.part, v_rc.part] + obj + ["?"]
    return good, bad


@task("island_effects")
def wh_island(p: Phrases):
    """'Who does the boy know that the girl saw?' / 'Who does the boy know whether the girl saw?'"""
    wh = L.WH_HUMAN if p.chance(0.5) else L.WH_THING
    aux, form, s, phi = _question_head(p)
    v = p.verb("wh", where=lambda v: "that" in v.frames)
    s2, phi2, anim2 = p.subject("a", pron_p=0.1, rc_p=0.0, pp_p=0.0)
    v2 = p.verb("np", where=_np_only)
    good = [wh, aux] + s + [form(v), "that"] + s2 + [p.finite(v2, phi2), "?"]
    return good, _swap(good, 2 + len(s) + 1, "whether")


@task("island_effects", "permutation")
def left_branch_island(p: Phrases):
    """'Whose cat did the boy see?' / 'Whose did the boy see cat?' — 'whose' cannot strand its noun."""
    aux, form, s, phi = _question_head(p)
    n = p.noun()
    owned = p.nom(n, n.phi(p.num()), 0.2)
    v = p.verb("np", where=_np_only)
    good = ["whose"] + owned + [aux] + s + [form(v), "?"]
    bad = ["whose", aux] + s + [form(v)] + owned + ["?"]
    return good, bad


# == binding ========================================================================================
def _distinct_phi(p: Phrases, phi: str) -> str:
    return p.pick([q for q in ("sm", "sf", "sn", "p") if q != phi])


def _np_with_phi(p: Phrases, phi: str) -> Words:
    """A determiner phrase whose agreement value is ``phi`` (an animate noun)."""
    if phi == "p":
        return p.np("a", "pl")[0]
    n = p.noun("a", gender=phi[1])
    return p.np("a", "sg", noun=n)[0]


@task("binding")
def principle_A_c_command(p: Phrases):
    """'The girl that the boys like saw herself.' / '... saw themselves.' — only the head of the
    subject c-commands the reflexive, not a noun inside its relative clause."""
    s, phi, anim = p.np("a")
    other = _distinct_phi(p, phi)
    if p.chance(0.5):
        rc = ["that"] + _np_with_phi(p, other)
        rc += [p.finite(p.verb("np"), other)]
    else:
        rc = ["that", p.finite(p.verb("np"), phi, "past")] + _np_with_phi(p, other)
    vg = p.verb_group(p.verb("np"), phi, allow_not=False)
    good = s + rc + vg + [L.REFLEXIVE[phi], "."]
    return good, _swap(good, len(good) - 2, L.REFLEXIVE[other])


@task("binding")
def principle_A_domain(p: Phrases):
    """'John thinks that Mary saw herself.' / 'John thinks that Mary saw himself.' — the antecedent is
    the subject of the reflexive's own clause, not of the clause above."""
    s1, phi1, _ = _plain_subject(p, "a")
    v1 = p.verb("that")
    head = s1 + p.verb_group(v1, phi1, kind=p.pick(("simple", "simple", "have")), allow_not=False) + ["that"]
    phi2 = _distinct_phi(p, phi1)
    s2 = [p.pick([n for n, q in L.NAMES.items() if q == phi2])] if phi2 in ("sm", "sf") and p.chance(0.4) \
        else _np_with_phi(p, phi2)
    vg = p.verb_group(p.verb("np"), phi2, allow_not=False)
    good = head + s2 + vg + [L.REFLEXIVE[phi2], "."]
    return good, _swap(good, len(good) - 2, L.REFLEXIVE[phi1])


@task("binding")
def principle_A_case(p: Phrases):
    """'John thinks that he slept.' / 'John thinks that himself slept.' — a reflexive is never a subject."""
    s1, phi1, _ = _plain_subject(p, "a")
    v1 = p.verb("that")
    head = s1 + p.verb_group(v1, phi1, kind=p.pick(("simple", "simple", "have")), allow_not=False) + ["that"]
    pron = p.pick(["he", "she", "they"])
    phi = L.PRON_NOM[pron]
    vp = p.vp(phi, "a", depth=1, embed_p=0.0, passive_p=0.0, copula_p=0.1)
    good = head + [pron] + vp + ["."]
    return good, _swap(good, len(head), L.REFLEXIVE[phi])


# == quantifiers ====================================================================================
def _existential(p: Phrases, num: str):
    n = p.noun()
    phi = n.phi(num)
    be = p.pick(L.BE[num])
    det = p.pick(L.WEAK_DETERMINERS[num])
    good = ["there", be, det] + p.nom(n, phi, 0.2) + (p.pp() if p.chance(0.5) else []) + ["."]
    return good, _swap(good, 2, p.pick(L.STRONG_DETERMINERS[num]))


@task("quantifiers")
def existential_there_quantifiers_singular(p: Phrases):
    """'There is a cat near the box.' / 'There is every cat near the box.'"""
    return _existential(p, "sg")


@task("quantifiers")
def existential_there_quantifiers_plural(p: Phrases):
    """'There are some cats near the box.' / 'There are all cats near the box.'"""
    return _existential(p, "pl")


@task("quantifiers")
def quantifier_partitive(p: Phrases):
    """'Some of the cats sleep.' / 'Every of the cats sleep.' — which quantifiers take 'of the N'."""
    n = p.noun()
    good = [p.pick(L.PARTITIVE_QUANTIFIERS), "of", p.pick(L.DEFINITE_PLURAL)] + p.nom(n, "p", 0.2)
    good += p.vp("p", n.anim, depth=1, embed_p=0.0) + ["."]
    return good, _swap(good, 0, p.pick(("every", "no")))


# -- the suite ------------------------------------------------------------------------------------
def task_rng(seed: int, name: str) -> random.Random:
    """The generator of one task: depends only on (seed, task), so tasks are independent."""
    return random.Random(f"taskspace-toy:{seed}:{name}")


def generate_task(t: TaskDef, seed: int, n_pairs: int) -> list[tuple[Words, Words]]:
    """``n_pairs`` distinct pairs of task ``t`` (token lists). The first k pairs do not depend on
    ``n_pairs``, so a larger suite extends a smaller one."""
    p = Phrases(task_rng(seed, t.name))
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[Words, Words]] = []
    attempts = 0
    while len(out) < n_pairs:
        attempts += 1
        if attempts > 50 * n_pairs + 1000:
            raise TaskspaceError(f"toy task {t.name}: only {len(out)} distinct pairs found, "
                                 f"{n_pairs} asked; ask for fewer pairs per task")
        good, bad = t.maker(p)
        key = tuple(good)
        if key in seen or good == bad:
            continue
        seen.add(key)
        out.append((good, bad))
    return out


@lru_cache(maxsize=8)
def _suite_pairs(seed: int, pairs_per_task: int) -> tuple[Pair, ...]:
    pairs: list[Pair] = []
    for t in TASKS:
        for k, (good, bad) in enumerate(generate_task(t, seed, pairs_per_task)):
            pairs.append(Pair(t.name, t.group, str(k), render(good), render(bad)))
    return tuple(pairs)


def toy_suite(seed: int = 0, pairs_per_task: int = 200) -> Suite:
    """The built-in toy suite: ``pairs_per_task`` minimal pairs for each toy task (suite ``toy``).

    Deterministic for a seed; pair ids are ``"0"``, ``"1"``, ... within each task.
    """
    if pairs_per_task < 1:
        raise InputError(f"pairs_per_task must be >= 1, got {pairs_per_task}", field="pairs_per_task")
    pairs = list(_suite_pairs(seed, pairs_per_task))
    meta = {"seed": seed, "pairs_per_task": pairs_per_task, "generator": "taskspace.suites.toy",
            "groups": dict(TOY_GROUPS), "kinds": {t.name: t.kind for t in TASKS}}
    return Suite(pairs, name="toy", source="taskspace.suites.toy", meta=meta)
