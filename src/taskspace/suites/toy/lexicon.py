"""The toy world's lexicon: every word form the toy grammar can emit, with its features.

Features follow docs/toy_world.md, "Lexicon": nouns have number, gender and animacy; verbs have the frames they take
(``none`` = no object, ``np`` = an object, ``that`` = a that-clause, ``wh`` = an embedded question),
the animacy each frame wants of its subject, and four forms (base, 3rd singular, past, participle).

Agreement features are coded as one *phi* value: ``sm`` / ``sf`` / ``sn`` (singular masculine,
feminine, neuter) or ``p`` (plural; English reflexives and verbs do not mark gender in the plural).
Every form is lower case; the renderer capitalises the first word and names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PHIS = ("sm", "sf", "sn", "p")
ANIMS = ("a", "i")  # animate, inanimate


def num_of(phi: str) -> str:
    """``sg`` or ``pl`` for an agreement value."""
    return "pl" if phi == "p" else "sg"


@dataclass(frozen=True)
class Noun:
    """A count noun. ``gender`` is ``m``, ``f`` or ``n`` (animals and things: ``itself``)."""

    sg: str
    pl: str
    gender: str
    anim: str
    human: bool = False

    @property
    def irregular(self) -> bool:
        return self.pl not in (self.sg + "s", self.sg + "es")

    def form(self, phi: str) -> str:
        return self.pl if phi == "p" else self.sg

    def phi(self, num: str) -> str:
        return "p" if num == "pl" else "s" + self.gender


@dataclass(frozen=True)
class Verb:
    """A verb. ``frames`` maps each frame it takes to the animacy it needs of its subject
    (``a`` animate, ``any``)."""

    base: str
    s3: str
    past: str
    part: str
    frames: dict = field(default_factory=dict)

    def form(self, form: str) -> str:
        return {"base": self.base, "s3": self.s3, "past": self.past, "part": self.part}[form]

    @property
    def irregular(self) -> bool:
        """True when past and participle differ (the irregular-forms tasks need that contrast)."""
        return self.past != self.part

    def takes(self, frame: str, anim: str) -> bool:
        need = self.frames.get(frame)
        return need is not None and (need == "any" or need == anim)


def _n(sg: str, pl: str | None, gender: str, anim: str = "a", human: bool = False) -> Noun:
    return Noun(sg, pl or sg + "s", gender, anim, human)


NOUNS: tuple[Noun, ...] = (
    # humans (he / she)
    _n("boy", None, "m", human=True), _n("man", "men", "m", human=True), _n("king", None, "m", human=True),
    _n("brother", None, "m", human=True), _n("father", None, "m", human=True),
    _n("girl", None, "f", human=True), _n("woman", "women", "f", human=True), _n("queen", None, "f", human=True),
    _n("sister", None, "f", human=True), _n("mother", None, "f", human=True),
    # animals (animate, it)
    _n("dog", None, "n"), _n("cat", None, "n"), _n("bird", None, "n"), _n("horse", None, "n"),
    _n("mouse", "mice", "n"), _n("goose", "geese", "n"),
    # things (inanimate, it)
    _n("book", None, "n", "i"), _n("box", "boxes", "n", "i"), _n("cake", None, "n", "i"),
    _n("ball", None, "n", "i"), _n("car", None, "n", "i"), _n("house", None, "n", "i"),
    _n("plate", None, "n", "i"), _n("letter", None, "n", "i"), _n("cup", None, "n", "i"),
    _n("tree", None, "n", "i"),
)

NAMES: dict[str, str] = {  # name -> phi
    "john": "sm", "david": "sm", "peter": "sm", "tom": "sm", "paul": "sm",
    "mary": "sf", "anna": "sf", "sarah": "sf", "emma": "sf", "lucy": "sf",
}

PRON_NOM: dict[str, str] = {"he": "sm", "she": "sf", "it": "sn", "they": "p"}
PRON_ACC: dict[str, str] = {"him": "sm", "her": "sf", "it": "sn", "them": "p"}
REFLEXIVE: dict[str, str] = {"sm": "himself", "sf": "herself", "sn": "itself", "p": "themselves"}

A, ANY = "a", "any"


def _v(base: str, s3: str | None, past: str, part: str | None, **frames: str) -> Verb:
    return Verb(base, s3 or base + "s", past, part or past, frames)


VERBS: tuple[Verb, ...] = (
    # transitive, irregular (past != participle)
    _v("see", None, "saw", "seen", np=A), _v("take", None, "took", "taken", np=A),
    _v("hide", None, "hid", "hidden", np=A), _v("steal", None, "stole", "stolen", np=A),
    _v("choose", None, "chose", "chosen", np=A), _v("throw", None, "threw", "thrown", np=A),
    _v("eat", None, "ate", "eaten", np=A, none=A), _v("write", None, "wrote", "written", np=A, none=A),
    # break: transitive with an animate subject, inchoative ("the cup broke") with an inanimate one
    _v("break", None, "broke", "broken", np=A, none="i"),
    _v("know", None, "knew", "known", np=A, that=A, wh=A),
    _v("forget", None, "forgot", "forgotten", np=A, that=A, wh=A),
    # transitive, regular
    _v("like", None, "liked", None, np=A), _v("help", None, "helped", None, np=A),
    _v("chase", None, "chased", None, np=A), _v("watch", "watches", "watched", None, np=A),
    _v("find", None, "found", None, np=A), _v("carry", "carries", "carried", None, np=A),
    _v("visit", None, "visited", None, np=A), _v("call", None, "called", None, np=A),
    _v("kick", None, "kicked", None, np=A),
    # intransitive
    _v("sleep", None, "slept", None, none=A), _v("laugh", None, "laughed", None, none=A),
    _v("smile", None, "smiled", None, none=A), _v("cry", "cries", "cried", None, none=A),
    _v("dance", None, "danced", None, none=A), _v("jump", None, "jumped", None, none=A),
    _v("walk", None, "walked", None, none=A), _v("arrive", None, "arrived", None, none=A),
    _v("swim", None, "swam", "swum", none=A), _v("go", "goes", "went", "gone", none=A),
    _v("fall", None, "fell", "fallen", none=ANY),
    # clause-taking
    _v("think", None, "thought", None, that=A), _v("say", "says", "said", None, that=A),
    _v("wonder", None, "wondered", None, wh=A),
)

# No noun or adjective starts with a vowel, so "a" never needs to be "an".
ADJECTIVES: tuple[str, ...] = ("big", "small", "little", "young", "happy", "sad", "red", "new")
# Participles used as adjectives (inanimate nouns only): "the broken cup".
PARTICIPLE_ADJECTIVES: tuple[str, ...] = ("broken", "hidden", "stolen", "written", "forgotten", "chosen")
PREPOSITIONS: tuple[str, ...] = ("near", "behind", "under")

# Determiners by number. "no" is listed apart because it licenses NPIs.
DETERMINERS = {"sg": ("the", "a", "this", "that", "every"), "pl": ("the", "these", "those", "all", "some",
                                                                    "many", "most")}
DEMONSTRATIVES = {"sg": ("this", "that"), "pl": ("these", "those")}
# Existential "there" takes weak determiners only (the definiteness restriction).
WEAK_DETERMINERS = {"sg": ("a", "no"), "pl": ("some", "many", "no")}
STRONG_DETERMINERS = {"sg": ("the", "every", "this", "that"), "pl": ("the", "all", "most", "these", "those")}
PARTITIVE_QUANTIFIERS: tuple[str, ...] = ("some", "all", "most", "many")
DEFINITE_PLURAL: tuple[str, ...] = ("the", "these", "those")

DO = {"sg": ("does", "did"), "pl": ("do", "did")}
HAVE = {"sg": ("has",), "pl": ("have",)}
BE = {"sg": ("is", "was"), "pl": ("are", "were")}

WH_HUMAN, WH_THING = "who", "what"   # "who" ranges over humans, "what" over animals and things
FUNCTION_WORDS: tuple[str, ...] = ("that", "whether", "whose", "of", "by", "there", "not", "ever", "any",
                                   "often", "no")
PUNCTUATION: tuple[str, ...] = (".", "?")


def noun_forms() -> list[str]:
    return [f for n in NOUNS for f in (n.sg, n.pl)]


def verb_forms() -> list[str]:
    return [f for v in VERBS for f in (v.base, v.s3, v.past, v.part)]


def all_word_forms() -> list[str]:
    """Every lower-case word form of the lexicon, sorted, without duplicates (no punctuation)."""
    words: set[str] = set(noun_forms()) | set(verb_forms()) | set(NAMES)
    words |= set(PRON_NOM) | set(PRON_ACC) | set(REFLEXIVE.values())
    words |= set(ADJECTIVES) | set(PARTICIPLE_ADJECTIVES) | set(PREPOSITIONS)
    for table in (DETERMINERS, WEAK_DETERMINERS, STRONG_DETERMINERS, DO, HAVE, BE):
        for forms in table.values():
            words |= set(forms)
    words |= set(PARTITIVE_QUANTIFIERS) | set(DEFINITE_PLURAL) | set(FUNCTION_WORDS)
    words |= {WH_HUMAN, WH_THING}
    return sorted(words)
