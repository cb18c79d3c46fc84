"""UltraFeedback binarized (Cui et al. 2023; binarized for Zephyr, Tunstall et al. 2023):
``HuggingFaceH4/ultrafeedback_binarized``, preference splits train_prefs / test_prefs, columns ``prompt`` (str),
``chosen`` and ``rejected`` (whole conversations: the user's turn(s), then the assistant's reply being compared),
``score_chosen`` and ``score_rejected`` (GPT-4 ratings, 1-10).

Rows: conversational preferences, the split TRL's ``extract_prompt`` makes of these conversations::

    prompt          = chosen[:-1]        the messages before the final assistant message (the same in rejected)
    chosen          = [chosen[-1]]       [{"role": "assistant", "content": ...}]
    rejected        = [rejected[-1]]
    chosen_reward   = float(score_chosen)
    rejected_reward = float(score_rejected)

A row whose conversations do not end in an assistant message, have nothing before it, or differ before it, is a
DataError naming the row. Messages keep only their ``role`` and ``content``.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignctl.data.base import DatasetEntry, SourceDatasetConfig
from alignctl.data.sources.reading import MESSAGES, NUMBER, read_source, row_error

DESCRIPTION = "UltraFeedback binarized (Cui et al. 2023; Zephyr's prefs): conversational pairs with GPT-4 scores"


@dataclass
class UltrafeedbackConfig(SourceDatasetConfig):
    name: str = "ultrafeedback"
    path: str = "HuggingFaceH4/ultrafeedback_binarized"
    split: str = "train_prefs"
    test_split: str | None = "test_prefs"


COLUMNS = {"chosen": MESSAGES, "rejected": MESSAGES, "score_chosen": NUMBER, "score_rejected": NUMBER}


def _messages(messages: list[dict]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load(cfg: UltrafeedbackConfig):
    where = f"dataset.path={cfg.path}"
    expected = "a conversation ending in the assistant's reply, with the same messages before it in both"

    def prepare(batch: dict[str, list], rows: list[int], split: str) -> dict[str, list]:
        out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "chosen_reward": [], "rejected_reward": []}
        for chosen, rejected, score_chosen, score_rejected, row in zip(
            batch["chosen"], batch["rejected"], batch["score_chosen"], batch["score_rejected"], rows
        ):
            for column, conversation in (("chosen", chosen), ("rejected", rejected)):
                if conversation[-1]["role"] != "assistant":
                    problem = f"its last message has role {conversation[-1]['role']!r}"
                    raise row_error(where, column, row, split, expected, problem)
                if len(conversation) < 2:
                    raise row_error(where, column, row, split, expected, "it has no message before the reply")
            if _messages(chosen[:-1]) != _messages(rejected[:-1]):
                problem = "chosen and rejected differ before their final assistant message"
                raise row_error(where, "rejected", row, split, expected, problem)
            out["prompt"].append(_messages(chosen[:-1]))
            out["chosen"].append(_messages(chosen[-1:]))
            out["rejected"].append(_messages(rejected[-1:]))
            out["chosen_reward"].append(float(score_chosen))
            out["rejected_reward"].append(float(score_rejected))
        return out

    return read_source(cfg, COLUMNS, prepare=prepare)


ENTRY = DatasetEntry(
    name="ultrafeedback", schema=UltrafeedbackConfig, description=DESCRIPTION, rows="preferences", load=load
)
