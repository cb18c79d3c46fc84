"""Sentiment reward: VADER compound score of the whole text (prompt + completion), in [-1, 1].

VADER (Hutto & Gilbert, 2014) is a lexicon- and rule-based sentiment model that ships with its PyPI package,
so it works offline and is deterministic. It stands in for the sentiment classifier of the controlled-sentiment
experiment of the DPO paper (Rafailov et al., 2023, section 6.1), which scores the whole review: the IMDB
prefix together with the generated continuation. We do the same, for two reasons: VADER's rules act across the
prompt/completion boundary (negation "not" + "bad", "but" shifting weight to the later clause, boosters such as
"very"), so scoring the completion alone would misread it; and for a preference pair the prompt is shared, so
including it never flips which completion is better for the same prompt, while it does make the reward the
sentiment of what a reader actually reads.

Texts are joined as ``prompt + completion`` with no separator, TRL's convention for standard (non-chat)
prompt-completion data: completions carry their own leading space.
"""

from __future__ import annotations

import functools

from alignctl.rewards.base import Reward, RewardConfig, RewardContext, RewardEntry


@functools.lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(prompts: list[str], completions: list[str]) -> list[float]:
    """VADER compound score of ``prompt + completion`` for each pair, in [-1, 1] (positive = positive review)."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(p + c)["compound"]) for p, c in zip(prompts, completions)]


def build(cfg: RewardConfig, context: RewardContext) -> Reward:
    return sentiment


ENTRY = RewardEntry(
    name="sentiment",
    schema=RewardConfig,
    description="VADER compound sentiment of prompt + completion, in [-1, 1] (vaderSentiment, lexicon-based, offline).",
    build=build,
)
