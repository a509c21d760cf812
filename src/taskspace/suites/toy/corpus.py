"""The toy pretraining corpus: grammatical sentences only, none equal to a good sentence of the suite.

Sentences are drawn from a mixture of *frames*. Half of them are the good-sentence makers of the
suite's tasks (so every construction a task tests is in the corpus, about 1.2% of the sentences per
task), half are general frames (declaratives, yes/no and wh-questions, ``no`` subjects with NPIs,
existentials, partitives). Bad sentences are never emitted. Every good sentence of
``toy_suite(seed)`` is excluded by a set lookup, so no split of the suite, whatever its seed, has a
test pair whose good sentence was seen in pretraining.
"""
from __future__ import annotations

import bisect
import random
from itertools import islice
from typing import Callable, Iterator

from ...errors import InputError
from . import lexicon as L
from .grammar import render
from .phrases import Phrases, Words
from .tasks import TASKS, toy_suite

TASK_SHARE = 0.5  # fraction of sentences drawn from the tasks' good-sentence makers


def _declarative(p: Phrases) -> Words:
    return p.clause() + ["."]


def _complement(p: Phrases, v: L.Verb, anim: str, frame: str, licensed: bool) -> Words:
    if frame == "np":
        return p.obj(None, any_ok=licensed, refl_p=0.0, depth=1)
    if frame == "that":
        return ["that"] + p.clause(depth=1)
    if frame == "wh":
        return (["whether"] + p.clause(depth=1)) if p.chance(0.3) else p.embedded_question()
    return []


def _yes_no(p: Phrases) -> Words:
    s, phi, anim = p.subject(rc_p=0.05, pron_p=0.1)
    num = L.num_of(phi)
    kind = p.pick(("do", "do", "have", "be"))
    if kind == "be":
        if p.chance(0.5):
            rest = [p.pick(L.ADJECTIVES)]
        else:
            rest = [p.verb("np").part] + (["by"] + p.simple_np("a") if p.chance(0.5) else [])
        return [p.pick(L.BE[num])] + s + rest + ["?"]
    frames = [f for f in ("np", "none", "that", "wh") if any(v.takes(f, anim) for v in L.VERBS)]
    frame = p.pick(frames)
    v = p.verb(frame, anim)
    aux, form = (p.pick(L.DO[num]), v.base) if kind == "do" else (L.HAVE[num][0], v.part)
    ever = ["ever"] if p.chance(0.25) else []
    return [aux] + s + ever + [form] + _complement(p, v, anim, frame, True) + ["?"]


def _wh_subject(p: Phrases) -> Words:
    human = p.chance(0.5)
    anim = "a" if human or p.chance(0.5) else "i"
    return [L.WH_HUMAN if human else L.WH_THING] + p.vp("sm" if human else "sn", anim, depth=1) + ["?"]


def _wh_object(p: Phrases) -> Words:
    wh = L.WH_HUMAN if p.chance(0.5) else L.WH_THING
    s, phi, anim = p.subject("a", rc_p=0.1, pron_p=0.1)
    num = L.num_of(phi)
    if p.chance(0.5):
        aux, form = p.pick(L.DO[num]), "base"
    else:
        aux, form = L.HAVE[num][0], "part"
    if p.chance(0.25):  # long distance, through a that-clause
        v = p.verb("that")
        s2, phi2, anim2 = p.subject("a", rc_p=0.0, pron_p=0.1)
        tail = ["that"] + s2 + [p.finite(p.verb("np", where=lambda v: "none" not in v.frames), phi2)]
        return [wh, aux] + s + [v.form(form)] + tail + ["?"]
    v = p.verb("np", where=lambda v: "none" not in v.frames)
    return [wh, aux] + s + [v.form(form), "?"]


def _whose(p: Phrases) -> Words:
    n = p.noun()
    phi = n.phi(p.num())
    owned = ["whose"] + p.nom(n, phi, 0.2)
    if p.chance(0.4):
        return owned + p.vp(phi, n.anim, depth=1) + ["?"]
    s, sphi, anim = p.subject("a", rc_p=0.0, pron_p=0.1)
    num = L.num_of(sphi)
    v = p.verb("np", where=lambda v: "none" not in v.frames)
    if p.chance(0.5):
        return owned + [p.pick(L.DO[num])] + s + [v.base, "?"]
    return owned + [L.HAVE[num][0]] + s + [v.part, "?"]


def _no_subject(p: Phrases) -> Words:
    """'No boy has ever slept.' / 'No girls saw any cats.'"""
    n = p.noun("a")
    phi = n.phi(p.num())
    s = ["no"] + p.nom(n, phi, 0.2) + (p.relative_clause(phi, "a") if p.chance(0.15) else [])
    num = L.num_of(phi)
    frame = "np" if p.chance(0.6) else "none"
    v = p.verb(frame, "a")
    r = p.rng.random()
    if r < 0.35:
        vg = [L.HAVE[num][0], "ever", v.part]
    elif r < 0.55:
        vg = ["ever", p.finite(v, phi)]
    else:
        vg = p.verb_group(v, phi, kind=p.pick(("simple", "have")), allow_not=False)
    obj = p.obj(None, any_ok=True, refl_p=0.0, depth=1) if frame == "np" and not v.takes("none", "a") else []
    return s + vg + obj + ["."]


def _existential(p: Phrases) -> Words:
    num = p.num()
    words, phi, anim = p.np(None, num, det=p.pick(L.WEAK_DETERMINERS[num]))
    return ["there", p.pick(L.BE[num])] + words + (p.pp() if p.chance(0.5) else []) + ["."]


def _partitive(p: Phrases) -> Words:
    n = p.noun()
    return ([p.pick(L.PARTITIVE_QUANTIFIERS), "of", p.pick(L.DEFINITE_PLURAL)] + p.nom(n, "p", 0.2)
            + p.vp("p", n.anim, depth=1) + ["."])


def _reflexive(p: Phrases) -> Words:
    """Reflexive objects, the only evidence of a noun's gender: 'The queen saw herself.', and in an
    embedded clause under a subject of another gender: 'John said that the girls liked themselves.'"""
    if p.chance(0.6):
        s, phi, anim = p.subject("a", pron_p=0.1, rc_p=0.15, pp_p=0.15)
        return s + p.verb_group(p.verb("np"), phi) + [L.REFLEXIVE[phi], "."]
    s1, phi1, _ = p.subject("a", pron_p=0.05, rc_p=0.0, pp_p=0.0)
    head = s1 + p.verb_group(p.verb("that"), phi1, allow_not=False) + ["that"]
    s2, phi2, _ = p.subject("a", pron_p=0.1, rc_p=0.0, pp_p=0.0)
    return head + s2 + p.verb_group(p.verb("np"), phi2) + [L.REFLEXIVE[phi2], "."]


def _attractor(p: Phrases) -> Words:
    """Agreement across a relative clause or PP with a noun of the other number:
    'The cat that the dogs see sleeps.', 'The girls near the king like themselves.'"""
    s, phi, anim = p.np("a" if p.chance(0.8) else "i")
    other = "sg" if phi == "p" else "pl"
    if p.chance(0.4):
        s = s + [p.pick(L.PREPOSITIONS)] + p.np(None, other)[0]
    elif anim == "a" and p.chance(0.5):
        s = s + ["that", p.finite(p.verb("np"), phi)] + p.np(None, other)[0]
    else:
        a, a_phi, _ = p.np("a", other)
        s = s + ["that"] + a + p.verb_group(p.verb("np"), a_phi, allow_not=False)
    if anim == "a" and p.chance(0.3):
        return s + p.verb_group(p.verb("np"), phi) + [L.REFLEXIVE[phi], "."]
    return s + p.vp(phi, anim, depth=1) + ["."]


GENERAL_FRAMES: dict[str, tuple[float, Callable[[Phrases], Words]]] = {
    "declarative": (16.0, _declarative),
    "reflexive": (5.0, _reflexive),
    "attractor": (4.0, _attractor),
    "yes_no_question": (6.0, _yes_no),
    "wh_subject_question": (4.0, _wh_subject),
    "wh_object_question": (5.0, _wh_object),
    "whose_question": (2.0, _whose),
    "no_subject_npi": (4.0, _no_subject),
    "existential": (3.0, _existential),
    "partitive": (2.0, _partitive),
}


def _frames() -> tuple[list[Callable[[Phrases], Words]], list[float]]:
    fns: list[Callable[[Phrases], Words]] = []
    weights: list[float] = []
    total_general = sum(w for w, _ in GENERAL_FRAMES.values())
    for w, fn in GENERAL_FRAMES.values():
        fns.append(fn)
        weights.append((1 - TASK_SHARE) * w / total_general)
    for t in TASKS:
        fns.append(lambda p, maker=t.maker: maker(p)[0])
        weights.append(TASK_SHARE / len(TASKS))
    return fns, weights


def iter_toy_corpus(seed: int = 0) -> Iterator[str]:
    """An endless stream of corpus sentences (natural spelling), deterministic for ``seed``."""
    excluded = {p.good for p in toy_suite(seed)}
    rng = random.Random(f"taskspace-toy-corpus:{seed}")
    p = Phrases(rng)
    fns, weights = _frames()
    cum: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    while True:
        fn = fns[min(bisect.bisect_left(cum, rng.random() * acc), len(fns) - 1)]
        sentence = render(fn(p))
        if sentence not in excluded:
            yield sentence


def toy_corpus(n_sentences: int, seed: int = 0) -> list[str]:
    """``n_sentences`` grammatical toy sentences, deterministic for ``seed``; none of them equals a
    good sentence of ``toy_suite(seed)``."""
    if n_sentences < 0:
        raise InputError(f"n_sentences must be >= 0, got {n_sentences}", field="sentences")
    return list(islice(iter_toy_corpus(seed), n_sentences))
