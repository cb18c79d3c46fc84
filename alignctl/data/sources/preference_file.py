"""The user's own preference pairs at ``dataset.path`` (required): a .jsonl/.json/.parquet/.csv file or a
``save_to_disk`` folder (or a hub id), in one of TRL's preference formats, plain text or conversational:

- explicit prompt: columns ``prompt``, ``chosen``, ``rejected``: a prompt string with completion strings that
  continue it, or a prompt message list with completion message lists (the assistant's reply);
- implicit prompt: only ``chosen`` and ``rejected`` (whole texts or whole conversations sharing a beginning); the
  prompt is split off with TRL's ``maybe_extract_prompt`` / ``extract_prompt``: the longest shared beginning
  (characters for text, cut before a space; whole messages for conversations). So does a plain-text ``prompt``
  column beside conversational completions (TRL ignores it too). For plain text that beginning may end inside the
  reply: write the prompt out when you can (or use dataset=hh_rlhf for "Human:/Assistant:" dialogues);
- optional ``chosen_reward`` / ``rejected_reward`` numbers are kept, and an optional ``margin`` number (how much
  better chosen is: objective=reward_model's per-pair margin, as TRL's RewardTrainer reads it); other columns are
  dropped.

A pair whose implicit prompt comes out empty, a conversational prompt beside plain-text completions, and chosen and
rejected of different formats are DataErrors naming the row or column.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignctl.data.base import DatasetEntry
from alignctl.data.sources.reading import (
    NUMBER,
    TEXT_OR_MESSAGES,
    LocalFileConfig,
    message_form,
    read_source,
    row_error,
)

DESCRIPTION = "your own preference pairs: a .jsonl/.json/.parquet/.csv file or save_to_disk folder in TRL's format"
COLUMNS = {"chosen": TEXT_OR_MESSAGES, "rejected": TEXT_OR_MESSAGES}
OPTIONAL = {"prompt": TEXT_OR_MESSAGES, "chosen_reward": NUMBER, "rejected_reward": NUMBER, "margin": NUMBER}


@dataclass
class PreferenceFileConfig(LocalFileConfig):
    name: str = "preference_file"


def load(cfg: PreferenceFileConfig):
    from trl.data_utils import extract_prompt, maybe_extract_prompt

    where = f"dataset.path={cfg.path}"

    def prepare(batch: dict[str, list], rows: list[int], split: str) -> dict[str, list]:
        numbers = [key for key in ("chosen_reward", "rejected_reward", "margin") if key in batch]
        out: dict[str, list] = {key: [] for key in ("prompt", "chosen", "rejected", *numbers)}
        for i, row in enumerate(rows):
            example = {key: batch[key][i] for key in ("prompt", "chosen", "rejected") if key in batch}
            chosen, rejected = example["chosen"], example["rejected"]
            if isinstance(chosen, list) != isinstance(rejected, list):
                problem = f"chosen is {message_form(chosen)} but rejected is {message_form(rejected)}"
                raise row_error(where, "rejected", row, split, "the format of chosen", problem)
            if "prompt" in example and isinstance(example["prompt"], list) and not isinstance(chosen, list):
                problem = "the prompt is a message list but the completions are plain text"
                raise row_error(where, "prompt", row, split, "the format of chosen and rejected", problem)
            pair = maybe_extract_prompt(example) if "prompt" in example else extract_prompt(example)
            if not pair["prompt"] or not pair["chosen"] or not pair["rejected"]:
                problem = "chosen and rejected share no beginning to split off as the prompt"
                raise row_error(where, "chosen", row, split, "a pair with a shared prompt", problem)
            for key in ("prompt", "chosen", "rejected"):
                out[key].append(pair[key])
            for key in numbers:
                out[key].append(float(batch[key][i]))
        return out

    return read_source(cfg, COLUMNS, optional=OPTIONAL, prepare=prepare)


ENTRY = DatasetEntry(
    name="preference_file", schema=PreferenceFileConfig, description=DESCRIPTION, rows="preferences", load=load
)
