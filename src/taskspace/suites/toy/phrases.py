"""Random building blocks of toy sentences (noun phrases, verb groups, clauses).

The task makers (:mod:`.tasks`) and the corpus (:mod:`.corpus`) assemble sentences from these blocks;
the grammar (:mod:`.grammar`) is written apart and judges the result. All randomness comes from the
``random.Random`` handed in, never from global state.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

from . import lexicon as L
from .lexicon import Noun, Verb

T = TypeVar("T")
Words = list[str]


class Phrases:
    """Sentence pieces drawn from one seeded random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- basics ------------------------------------------------------------------------------------
    def pick(self, seq: Sequence[T]) -> T:
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def num(self) -> str:
        return "sg" if self.chance(0.5) else "pl"

    def noun(self, anim: str | None = None, *, human: bool | None = None, gender: str | None = None,
             irregular: bool | None = None, where: Callable[[Noun], bool] | None = None) -> Noun:
        cands = [n for n in L.NOUNS
                 if (anim is None or n.anim == anim) and (human is None or n.human == human)
                 and (gender is None or n.gender == gender) and (irregular is None or n.irregular == irregular)
                 and (where is None or where(n))]
        return self.pick(cands)

    def verb(self, frame: str, anim: str = "a", where: Callable[[Verb], bool] | None = None) -> Verb:
        return self.pick([v for v in L.VERBS if v.takes(frame, anim) and (where is None or where(v))])

    def adjective(self, anim: str) -> str:
        if anim == "i" and self.chance(0.3):
            return self.pick(L.PARTICIPLE_ADJECTIVES)
        return self.pick(L.ADJECTIVES)

    # -- noun phrases ------------------------------------------------------------------------------
    def nom(self, noun: Noun, phi: str, adj_p: float = 0.25) -> Words:
        """``[adjective] noun``."""
        return ([self.adjective(noun.anim)] if self.chance(adj_p) else []) + [noun.form(phi)]

    def np(self, anim: str | None = None, num: str | None = None, *, det: str | None = None,
           noun: Noun | None = None, adj_p: float = 0.25, no_p: float = 0.0, **noun_kw) -> tuple[Words, str, str]:
        """A determiner phrase ``det [adj] noun``; returns (words, phi, anim)."""
        noun = noun or self.noun(anim, **noun_kw)
        num = num or self.num()
        phi = noun.phi(num)
        if det is None:
            det = "no" if self.chance(no_p) else self.pick(L.DETERMINERS[num])
        return [det] + self.nom(noun, phi, adj_p), phi, noun.anim

    def simple_np(self, anim: str | None = None, num: str | None = None, name_p: float = 0.15) -> Words:
        """A short NP for inside PPs and objects: a name or ``det [adj] noun``."""
        if anim != "i" and self.chance(name_p):
            return [self.pick(list(L.NAMES))]
        return self.np(anim, num)[0]

    def pp(self) -> Words:
        return [self.pick(L.PREPOSITIONS)] + self.simple_np()

    def subject(self, anim: str | None = None, num: str | None = None, *, name_p: float = 0.15,
                pron_p: float = 0.1, pp_p: float = 0.1, rc_p: float = 0.1, depth: int = 0,
                no_p: float = 0.0, **noun_kw) -> tuple[Words, str, str]:
        """A subject: a name, a pronoun, or ``det [adj] noun [PP] [relative clause]``."""
        anim = anim or ("a" if self.chance(0.75) else "i")
        if anim == "a" and num != "pl" and not noun_kw and self.chance(name_p):
            name = self.pick(list(L.NAMES))
            return [name], L.NAMES[name], "a"
        if not noun_kw and self.chance(pron_p):
            num = num or self.num()
            if num == "pl":
                return ["they"], "p", anim
            if anim == "i":
                return ["it"], "sn", anim
            w = self.pick(("he", "she", "it"))
            return [w], L.PRON_NOM[w], "a" if w != "it" else anim
        words, phi, anim = self.np(anim, num, no_p=no_p, **noun_kw)
        if self.chance(pp_p):
            words += self.pp()
        if depth == 0 and self.chance(rc_p):
            words += self.relative_clause(phi, anim)
        return words, phi, anim

    def obj(self, subj_phi: str | None = None, *, refl_p: float = 0.1, pron_p: float = 0.08,
            pp_p: float = 0.08, rc_p: float = 0.06, any_ok: bool = False, depth: int = 0) -> Words:
        """An object NP: an NP (maybe with PP or relative clause), name, pronoun or reflexive."""
        if subj_phi is not None and self.chance(refl_p):
            return [L.REFLEXIVE[subj_phi]]
        if self.chance(pron_p):
            return [self.pick(list(L.PRON_ACC))]
        if self.chance(0.15):
            return [self.pick(list(L.NAMES))]
        det = "any" if any_ok and self.chance(0.5) else None
        words, phi, anim = self.np(det=det, no_p=0.03)
        if self.chance(pp_p):
            words += self.pp()
        elif depth == 0 and self.chance(rc_p):
            words += self.relative_clause(phi, anim)
        return words

    def relative_clause(self, phi: str, anim: str, kind: str | None = None) -> Words:
        """``that`` + a clause with a gap agreeing with the head: subject gap or object gap."""
        kind = kind or ("subject" if self.chance(0.5) else "object")
        if kind == "subject":
            return ["that"] + self.vp(phi, anim, depth=1, embed_p=0.0)
        # "no" inside a relative clause licenses NPIs there only ("the cat that no dog has ever seen"),
        # so the corpus shows "no" in both scopes.
        s_words, s_phi, s_anim = self.subject(anim="a", pp_p=0.0, rc_p=0.0, depth=1, no_p=0.08)
        v = self.verb("np", s_anim)
        if s_words[0] == "no" and self.chance(0.4):
            return ["that"] + s_words + ["ever", self.finite(v, s_phi)]
        return ["that"] + s_words + self.verb_group(v, s_phi, allow_not=False)

    # -- verbs -------------------------------------------------------------------------------------
    def finite(self, v: Verb, phi: str, tense: str | None = None) -> str:
        tense = tense or ("pres" if self.chance(0.5) else "past")
        if tense == "past":
            return v.past
        return v.s3 if phi != "p" else v.base

    def verb_group(self, v: Verb, phi: str, *, kind: str | None = None, allow_not: bool = True) -> Words:
        """The verb with its auxiliaries: ``sees`` / ``does not see`` / ``has (not) seen``."""
        num = L.num_of(phi)
        kind = kind or self.pick(("simple", "simple", "simple", "do", "have"))
        if kind == "do" and not allow_not:
            kind = "simple"
        if kind == "simple":
            return (["often"] if self.chance(0.05) else []) + [self.finite(v, phi)]
        if kind == "do":
            return [self.pick(L.DO[num]), "not"] + (["ever"] if self.chance(0.2) else []) + [v.base]
        adv: Words = []
        r = self.rng.random()
        if allow_not and r < 0.2:
            adv = ["not"] + (["ever"] if self.chance(0.4) else [])
        elif r < 0.25:
            adv = ["often"]
        return [L.HAVE[num][0]] + adv + [v.part]

    def vp(self, phi: str, anim: str, *, depth: int = 0, embed_p: float = 0.12,
           passive_p: float = 0.08, copula_p: float = 0.08) -> Words:
        """A random finite VP for a subject with agreement ``phi`` and animacy ``anim``."""
        num = L.num_of(phi)
        r = self.rng.random()
        if r < copula_p:
            return [self.pick(L.BE[num])] + (["not"] if self.chance(0.2) else []) + [self.pick(L.ADJECTIVES)]
        if r < copula_p + passive_p:
            v = self.verb("np")
            tail = ["by"] + self.simple_np("a") if self.chance(0.6) else []
            return [self.pick(L.BE[num])] + (["not"] if self.chance(0.15) else []) + [v.part] + tail
        if anim == "i":
            return self.verb_group(self.verb("none", "i"), phi)
        if depth == 0 and self.chance(embed_p):
            return self.embedding(phi)
        frame = "np" if self.chance(0.6) else "none"
        v = self.verb(frame, anim)
        vg = self.verb_group(v, phi)
        if frame == "none":
            return vg
        licensed = "not" in vg
        return vg + self.obj(phi, any_ok=licensed, depth=depth)

    def embedding(self, phi: str) -> Words:
        """A clause-taking verb with its complement: that-clause, embedded question or whether."""
        kind = self.pick(("that", "that", "wh", "whether"))
        if kind == "that":
            v = self.verb("that")
            return self.verb_group(v, phi) + ["that"] + self.clause(depth=1)
        v = self.verb("wh")
        head = self.verb_group(v, phi)
        if kind == "whether":
            return head + ["whether"] + self.clause(depth=1)
        return head + self.embedded_question()

    def embedded_question(self) -> Words:
        """``who saw the cat`` / ``what the boy took`` (one gap, no other object)."""
        human = self.chance(0.5)
        wh = L.WH_HUMAN if human else L.WH_THING
        if self.chance(0.4):  # subject gap
            gphi = "sm" if human else "sn"
            ganim = "a" if human or self.chance(0.6) else "i"
            return [wh] + self.vp(gphi, ganim, depth=1, embed_p=0.0)
        s_words, s_phi, s_anim = self.subject(anim="a", pp_p=0.0, rc_p=0.0, depth=1)
        return [wh] + s_words + self.verb_group(self.verb("np", s_anim), s_phi)

    def clause(self, depth: int = 0, **subj_kw) -> Words:
        """A declarative clause ``subject VP``."""
        s, phi, anim = self.subject(depth=depth, **subj_kw)
        return s + self.vp(phi, anim, depth=depth)
