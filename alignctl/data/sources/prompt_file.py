"""The user's own prompts at ``dataset.path`` (required): a .jsonl/.json/.parquet/.csv file or a ``save_to_disk``
folder (or a hub id) with a ``prompt`` column, plain text or a message list (TRL's prompt-only format) in every
row; the other columns are kept as they are (a reward may read them).

Rows: prompts, for pairs sampled from the SFT model and scored by a reward, and for online RL.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignctl.data.base import DatasetEntry
from alignctl.data.sources.reading import TEXT_OR_MESSAGES, LocalFileConfig, read_source

DESCRIPTION = "your own prompts: a .jsonl/.json/.parquet/.csv file or save_to_disk folder with a prompt column"


@dataclass
class PromptFileConfig(LocalFileConfig):
    name: str = "prompt_file"


def load(cfg: PromptFileConfig):
    return read_source(cfg, {"prompt": TEXT_OR_MESSAGES}, keep_other_columns=True)


ENTRY = DatasetEntry(name="prompt_file", schema=PromptFileConfig, description=DESCRIPTION, rows="prompts", load=load)
