"""The review grammar: deterministic, balanced in VADER sentiment, pools decided by VADER's lexicon."""

import random

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from alignctl.data.tasks import review_grammar as g


@pytest.fixture(scope="module")
def vader():
    return SentimentIntensityAnalyzer()


def test_deterministic_for_a_seed_and_stream():
    assert g.generate_reviews(0, 50) == g.generate_reviews(0, 50)
    assert g.generate_reviews(0, 50) != g.generate_reviews(1, 50)
    assert g.generate_reviews(0, 50, stream="corpus") != g.generate_reviews(0, 50, stream="heldout-test")
    assert g.generate_reviews(0, 20) == g.generate_reviews(0, 50)[:20]  # a stream, not a batch


def test_shape_of_reviews():
    reviews = g.generate_reviews(0, 500)
    for text in reviews:
        assert g.MIN_WORDS <= len(text.split()) <= g.MAX_WORDS
        assert 1 <= text.count(".") <= 3 and text.endswith(".") and text[0].isupper()
    assert len(set(reviews)) > 490  # varied


def test_corpus_is_roughly_balanced_in_sentiment(vader):
    scores = [vader.polarity_scores(t)["compound"] for t in g.generate_reviews(0, 2000)]
    pos = sum(s > 0.05 for s in scores) / len(scores)
    neg = sum(s < -0.05 for s in scores) / len(scores)
    assert 0.4 < pos < 0.6 and 0.4 < neg < 0.6, (pos, neg)
    assert abs(sum(scores) / len(scores)) < 0.1


def test_pools_follow_vader_lexicon():
    lex = g.vader_lexicon()
    pools = g.pools()
    for group in (pools.adjectives, pools.verbs, pools.nouns):
        assert all(lex[w] >= g.POLAR_MIN for w in group["pos"])
        assert all(lex[w] <= -g.POLAR_MIN for w in group["neg"])
        assert all(w not in lex for w in group["neu"])
    assert len(pools.adjectives["pos"]) >= 30 and len(pools.adjectives["neg"]) >= 30
    assert len(pools.adjectives["neu"]) >= 20
    for phrases in (pools.aspects, pools.names, pools.subjects, pools.when, pools.places, pools.genres):
        assert phrases and all(w.lower() not in lex for p in phrases for w in p.split())
    assert "truly" not in g.INTENSIFIERS and all(w not in lex for w in g.INTENSIFIERS)


def test_openers_are_neutral_and_contrasts_turn(vader):
    writer = g._Writer(random.Random(0), g.pools())
    for _ in range(200):
        assert vader.polarity_scores(writer.opener("pos"))["compound"] == 0.0
    # the clause after "but" carries the review's tone most of the time
    agree = 0
    for tone, sign in (("pos", 1), ("neg", -1)):
        for _ in range(300):
            text = writer.turn(tone)
            assert " but " in text
            agree += sign * vader.polarity_scores(text)["compound"] > 0
    assert agree / 600 > 0.7
