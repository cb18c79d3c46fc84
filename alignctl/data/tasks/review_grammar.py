"""A seeded grammar of short movie reviews whose sentiment words come from VADER's lexicon.

The word pools are decided at run time by VADER itself: each candidate adjective, verb and noun below goes to
the positive pool if its lexicon valence is >= ``POLAR_MIN``, to the negative pool if <= ``-POLAR_MIN``, to the
neutral pool if it is not in the lexicon, and is dropped otherwise (weakly polar words blur the signal). The
fixed scaffolding (aspects, names, places, openers) is filtered the same way, so all sentiment in a review
comes from the pools. A review has a latent tone (positive, negative or mixed, in proportions that make the
corpus balanced); each opinion slot draws its polarity from the tone, and contrast sentences ("the plot was
slow but the acting was wonderful") put the decisive clause after "but", where VADER weighs it most. Reviews
are 1-3 sentences of 15-40 words, and many open neutrally, so a short prefix often leaves the sentiment of
the rest undecided: what makes sampled continuations differ in reward.

Determinism: ``random.Random`` seeded with a string (sha512-based) is stable across runs and Python versions.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GRAMMAR_VERSION = 1  # bump on any change to the generated text: it is part of every cache recipe
POLAR_MIN = 1.2  # |VADER valence| a word needs to join a polar pool
MIN_WORDS, MAX_WORDS = 15, 40  # review length range, in whitespace-separated words
# Latent review tone. Negative a little more often: VADER's positive words carry larger valences than its
# negative ones (and "not bad" reads positive), so equal weights give a corpus tilted positive.
TONE_WEIGHTS = {"pos": 0.38, "neg": 0.42, "mixed": 0.2}
TONE_AGREEMENT = 0.8  # P(an opinion slot takes the review's tone) for pos/neg reviews

# Candidates: the lexicon decides which pool each one lands in (or drops it).
ADJECTIVES = """
wonderful brilliant excellent superb great beautiful amazing charming delightful enjoyable fun funny clever
fantastic lovely gorgeous impressive perfect stunning powerful fresh smart sweet hilarious inspiring
entertaining engaging marvelous terrific outstanding magnificent splendid elegant good nice pleasant exciting
thrilling heartwarming satisfying strong creative adorable glorious lively playful honest sincere rewarding
awful terrible boring dull bad horrible dreadful weak stupid lame poor ugly painful annoying disappointing
pathetic messy ridiculous miserable dumb horrendous lousy dismal lazy irritating frustrating depressing
grim tired worthless useless unpleasant dreary fake hopeless offensive crude
long short slow quiet loud dark simple familiar unusual fast typical modern brief straightforward old small
quick steady plain quirky subtle colorful detailed modest ordinary traditional classic dry complex busy
""".split()
VERBS = "loved enjoyed liked adored admired appreciated hated disliked despised regretted watched finished".split()
NOUNS = "masterpiece treat joy pleasure delight triumph mess disaster failure flop bore waste".split()

# Scaffolding: kept only where no word is in the lexicon (checked at run time).
FILMS = ["film", "movie", "picture", "feature"]
GENRES = ["drama", "thriller", "western", "musical", "mystery", "documentary", "comedy", "sequel", "remake"]
ASPECTS = [
    "plot", "story", "script", "dialogue", "soundtrack", "music", "score", "cinematography", "ending",
    "pacing", "cast", "direction", "editing", "camera work", "lead actor", "first act", "second half",
    "costumes", "sets", "visual effects", "final scene", "opening scene", "main character", "premise",
    "lighting", "dialogue in the middle", "supporting cast", "running time",
]
NAMES = ["Anna", "Marco", "Elena", "Tom", "Sofia", "James", "Maya", "Victor", "Nora", "Leo", "Ruth", "Omar"]
ROLES = [
    "the captain", "the detective", "the teacher", "the young pilot", "the old farmer", "the sheriff",
    "the singer", "the doctor", "the mayor", "the neighbor", "the stranger", "the boss",
]
SUBJECTS = [
    "a small town", "two brothers", "an old detective", "a young teacher", "a family on a farm",
    "a ship at sea", "a band on tour", "a boxer", "three sisters", "a night shift nurse", "a retired pilot",
    "a chess player", "a border town", "a long road trip", "a quiet village", "a jazz singer",
]
WHEN = [
    "last night", "on a rainy sunday", "with my family", "at the cinema", "on a long flight", "after work",
    "over the weekend", "with my brother", "on television", "at a festival", "on a train", "this morning",
]
SPANS = ["over one summer", "through a long winter", "across the country", "over ten years", "in a single day"]
PLACES = ["a small village", "the city", "the mountains", "an old hotel", "a desert town", "a harbor", "the fifties"]
INTENSIFIERS = ["very", "really", "quite", "so", "extremely", "incredibly", "somewhat"]  # VADER boosters/dampeners


@functools.lru_cache(maxsize=1)
def vader_lexicon() -> dict[str, float]:
    """Word -> mean valence, read from the ``vader_lexicon.txt`` shipped inside the vaderSentiment package."""
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    lexicon = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            lexicon[parts[0].lower()] = float(parts[1])
    return lexicon


@dataclass(frozen=True)
class Pools:
    """Word pools split by polarity ("pos", "neg", "neu") as VADER's lexicon sees them."""

    adjectives: dict[str, tuple[str, ...]]
    verbs: dict[str, tuple[str, ...]]
    nouns: dict[str, tuple[str, ...]]
    aspects: tuple[str, ...]
    names: tuple[str, ...]
    roles: tuple[str, ...]
    subjects: tuple[str, ...]
    when: tuple[str, ...]
    spans: tuple[str, ...]
    places: tuple[str, ...]
    films: tuple[str, ...]
    genres: tuple[str, ...]


def _split(words: list[str], lexicon: dict[str, float]) -> dict[str, tuple[str, ...]]:
    pools: dict[str, list[str]] = {"pos": [], "neg": [], "neu": []}
    for word in dict.fromkeys(words):
        valence = lexicon.get(word)
        if valence is None:
            pools["neu"].append(word)
        elif valence >= POLAR_MIN:
            pools["pos"].append(word)
        elif valence <= -POLAR_MIN:
            pools["neg"].append(word)
    return {k: tuple(v) for k, v in pools.items()}


def _neutral(phrases: list[str], lexicon: dict[str, float]) -> tuple[str, ...]:
    return tuple(p for p in phrases if not any(w.lower() in lexicon for w in p.split()))


@functools.lru_cache(maxsize=1)
def pools() -> Pools:
    """The grammar's word pools, split by VADER valence (computed once per process)."""
    lex = vader_lexicon()
    return Pools(
        adjectives=_split(ADJECTIVES, lex),
        verbs=_split(VERBS, lex),
        nouns=_split(NOUNS, lex),
        aspects=_neutral(ASPECTS, lex),
        names=_neutral(NAMES, lex),
        roles=_neutral(ROLES, lex),
        subjects=_neutral(SUBJECTS, lex),
        when=_neutral(WHEN, lex),
        spans=_neutral(SPANS, lex),
        places=_neutral(PLACES, lex),
        films=_neutral(FILMS, lex),
        genres=_neutral(GENRES, lex),
    )


_OPPOSITE = {"pos": "neg", "neg": "pos"}


def was(noun: str) -> str:
    return "were" if noun.endswith("s") else "was"  # every plural aspect ends in "s"; no singular one does


def is_(noun: str) -> str:
    return "are" if noun.endswith("s") else "is"


class _Writer:
    """Writes one review with a given rng; each method returns one sentence (no trailing space)."""

    def __init__(self, rng: random.Random, p: Pools):
        self.rng, self.p = rng, p

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def polarity(self, tone: str) -> str:
        if tone == "mixed":
            return "pos" if self.rng.random() < 0.5 else "neg"
        return tone if self.rng.random() < TONE_AGREEMENT else _OPPOSITE[tone]

    def adj_phrase(self, pol: str, predicative: bool = True) -> str:
        """An adjective phrase VADER reads as ``pol``; predicative ones may be negated ("not very good")."""
        r = self.rng.random()
        if pol in _OPPOSITE and predicative and r < 0.08:  # "not bad" reads positive, "not good" negative
            return "not " + self.pick(self.p.adjectives[_OPPOSITE[pol]])
        adj = self.pick(self.p.adjectives[pol])
        if pol != "neu" and r < 0.4:
            return f"{self.pick(INTENSIFIERS)} {adj}"
        return adj

    def aspect_pair(self) -> tuple[str, str]:
        a = self.pick(self.p.aspects)
        b = self.pick(self.p.aspects)
        while b == a:
            b = self.pick(self.p.aspects)
        return a, b

    @staticmethod
    def article(phrase: str) -> str:
        vowel = phrase[0] in "aeiou" or phrase.startswith("hon")  # "an honest"
        return ("an " if vowel else "a ") + phrase

    # --- sentences -------------------------------------------------------------------------------------------
    def opener(self, tone: str) -> str:
        p, pick = self.p, self.pick
        return self.pick(
            [
                lambda: f"I watched this {pick(p.films)} {pick(p.when)}.",
                lambda: f"We saw this {pick(p.genres)} {pick(p.when)}.",
                lambda: f"I finally saw this {pick(p.films)} {pick(p.when)}.",
                lambda: f"This {pick(p.films)} is about {pick(p.subjects)}.",
                lambda: f"This {pick(p.genres)} follows {pick(p.subjects)} {pick(p.spans)}.",
                lambda: f"{pick(p.names)} portrays {pick(p.roles)} in this {pick(p.genres)}.",
                lambda: f"The {pick(p.films)} is set in {pick(p.places)}.",
                lambda: f"It is {self.article(pick(p.genres))} about {pick(p.subjects)}.",
            ]
        )()

    def opinion(self, tone: str) -> str:
        p, pick = self.p, self.pick
        pol = self.polarity(tone)
        a, b = self.aspect_pair()
        return self.pick(
            [
                lambda: f"The {a} {was(a)} {self.adj_phrase(pol)}.",
                lambda: f"The {a} {is_(a)} {self.adj_phrase(pol)}.",
                lambda: f"I thought the {a} {was(a)} {self.adj_phrase(pol)}.",
                lambda: f"The {a} and the {b} were {self.adj_phrase(pol)}.",
                lambda: f"{pick(p.names)} is {self.adj_phrase(pol)} as {pick(p.roles)}.",
                lambda: f"{pick(p.names)} gives {self.article(self.adj_phrase(pol, False))} performance.",
            ]
        )()

    def turn(self, tone: str) -> str:
        """A contrast: a neutral or opposite first clause, then the decisive clause after "but"."""
        pol = self.polarity(tone)
        first = "neu" if self.rng.random() < 0.5 else _OPPOSITE[pol]
        a, b = self.aspect_pair()
        return self.pick(
            [
                lambda: f"The {a} {was(a)} {self.adj_phrase(first)} but the {b} {was(b)} {self.adj_phrase(pol)}.",
                lambda: f"The {a} {is_(a)} {self.adj_phrase(first)}, but the {b} {is_(b)} {self.adj_phrase(pol)}.",
                lambda: f"It starts {self.adj_phrase('neu')} but the {b} {is_(b)} {self.adj_phrase(pol)}.",
                lambda: f"The {a} felt {self.adj_phrase(first)}, but the {b} {was(b)} {self.adj_phrase(pol)}.",
            ]
        )()

    def verdict(self, tone: str) -> str:
        p, pick = self.p, self.pick
        pol = self.polarity(tone)
        recommend = "I would recommend it to anyone." if pol == "pos" else "I would not recommend it."
        return self.pick(
            [
                lambda: f"Overall it was {self.article(self.adj_phrase(pol, False))} {pick(p.films)}.",
                lambda: f"I {pick(p.verbs[pol])} it.",
                lambda: f"I {pick(p.verbs[pol])} every minute of it.",
                lambda: f"It is {self.article(pick(p.nouns[pol]))}.",
                lambda: f"In the end it is {self.article(self.adj_phrase(pol, False))} {pick(p.genres)}.",
                lambda: recommend,
            ]
        )()

    def review(self) -> str:
        tone = self.rng.choices(list(TONE_WEIGHTS), weights=list(TONE_WEIGHTS.values()))[0]
        o, op, t, v = self.opener, self.opinion, self.turn, self.verdict
        layouts = [
            (o, t), (o, op, v), (o, t, v), (op, t), (t, v), (o, op, op), (op, v), (t, op), (o, op, t),
        ]  # fmt: skip
        while True:
            text = " ".join(sentence(tone) for sentence in self.pick(layouts))
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                return text


def iter_reviews(seed: int, stream: str = "corpus") -> Iterator[str]:
    """An endless deterministic stream of reviews; different ``stream`` names give independent streams."""
    writer = _Writer(random.Random(f"alignctl-review:{seed}:{stream}"), pools())
    while True:
        yield writer.review()


def generate_reviews(seed: int, n: int, stream: str = "corpus") -> list[str]:
    """The first ``n`` reviews of the ``stream`` for ``seed``."""
    it = iter_reviews(seed, stream)
    return [next(it) for _ in range(n)]
