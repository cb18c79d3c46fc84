"""The sentiment reward is VADER's compound score of prompt + completion."""

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from alignctl.rewards.sentiment import sentiment


def test_matches_vader_compound_of_the_whole_text():
    vader = SentimentIntensityAnalyzer()
    prompts = ["The acting was", "The plot was", "I watched this film", "The cast"]
    completions = [" wonderful and the music was great.", " boring and the ending was awful.", " on a train.", ""]
    scores = sentiment(prompts, completions)
    expected = [vader.polarity_scores(p + c)["compound"] for p, c in zip(prompts, completions)]
    assert scores == pytest.approx(expected)
    assert scores[0] > 0.5 and scores[1] < -0.5 and scores[2] == 0.0 and scores[3] == 0.0
    assert all(isinstance(s, float) and -1.0 <= s <= 1.0 for s in scores)


def test_prompt_is_part_of_what_is_scored():
    # "not" in the prompt negates the completion's "good": the whole review is negative
    assert sentiment(["The film was not"], [" good."])[0] < 0 < sentiment([""], [" good."])[0]
    # a shared prompt shifts both completions alike: the better completion stays better
    a, b = sentiment(["I loved the music."] * 2, [" The plot was great.", " The plot was dull."])
    assert a > b


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        sentiment(["a", "b"], ["c"])
    assert sentiment([], []) == []
