"""IMDB movie reviews (Maas et al. 2011) as prompts for the controlled-sentiment task of the DPO, f-DPO and TDPO
papers: ``stanfordnlp/imdb``, splits train / test, columns ``text`` (the review) and ``label`` (unused here).

Rows: plain-text prompts, one per review: its first ``prompt_words`` words (default 8), ``<br />`` tags removed
and whitespace runs collapsed to one space (a review shorter than that is the whole review). The papers prompt
with prefixes of 2-8 *GPT-2 tokens*; a loader has no tokenizer, so this reads the prefix length as a fixed count
of whitespace-separated words: 8 words are about 10 GPT-2 tokens, a little longer than the papers' longest prefix
(set prompt_words=4 to stay within it). The policy continues the prefix; a sentiment reward scores it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from alignctl.constraints import Positive
from alignctl.data.base import DatasetEntry, SourceDatasetConfig
from alignctl.data.sources.reading import EXPECTED, TEXT, read_source, row_error

DESCRIPTION = "IMDB reviews (Maas et al. 2011): review openings as prompts, the DPO paper's controlled-sentiment task"
BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass
class ImdbConfig(SourceDatasetConfig):
    name: str = "imdb"
    path: str = "stanfordnlp/imdb"
    prompt_words: Annotated[int, Positive] = 8  # a prompt is the review's first prompt_words words


def review_opening(text: str, words: int) -> str:
    """The first ``words`` words of a review, ``<br />`` tags removed, single-spaced."""
    return " ".join(BREAK.sub(" ", text).split()[:words])


def load(cfg: ImdbConfig):
    def prepare(batch: dict[str, list], rows: list[int], split: str) -> dict[str, list]:
        prompts = []
        for text, row in zip(batch["text"], rows):
            prompt = review_opening(text, cfg.prompt_words)
            if not prompt:
                raise row_error(f"dataset.path={cfg.path}", "text", row, split, EXPECTED[TEXT], "only <br /> tags")
            prompts.append(prompt)
        return {"prompt": prompts}

    return read_source(cfg, {"text": TEXT}, prepare=prepare)


ENTRY = DatasetEntry(name="imdb", schema=ImdbConfig, description=DESCRIPTION, rows="prompts", load=load)
