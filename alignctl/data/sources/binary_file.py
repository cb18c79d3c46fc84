"""The user's own binary feedback at ``dataset.path`` (required): a .jsonl/.json/.parquet/.csv file or a
``save_to_disk`` folder (or a hub id) in TRL's unpaired preference format, plain text or conversational:

- columns ``prompt``, ``completion``, ``label``: a prompt string with a completion string that continues it, or a
  prompt message list with a completion message list (the assistant's reply); ``label`` true when the completion is
  desirable, false when it is not (a boolean; a CSV's words true/false, any case, are read as booleans);
- other columns are dropped.

Rows: binary feedback, for objective=kto (no pairs, candidates or prompts to sample from are derived from it). A
label that is not a boolean, a missing or empty prompt or completion, and a conversational prompt beside a
plain-text completion (or the reverse) are DataErrors naming the row, the column and the value.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignctl.data.base import DatasetEntry
from alignctl.data.sources.reading import (
    BOOLEAN,
    TEXT_OR_MESSAGES,
    LocalFileConfig,
    as_boolean,
    message_form,
    read_source,
    row_error,
)

DESCRIPTION = "your own binary feedback: prompt, completion, label (desirable or not) in a file, TRL's unpaired format"
COLUMNS = {"prompt": TEXT_OR_MESSAGES, "completion": TEXT_OR_MESSAGES, "label": BOOLEAN}


@dataclass
class BinaryFileConfig(LocalFileConfig):
    name: str = "binary_file"


def load(cfg: BinaryFileConfig):
    where = f"dataset.path={cfg.path}"

    def prepare(batch: dict[str, list], rows: list[int], split: str) -> dict[str, list]:
        out: dict[str, list] = {"prompt": [], "completion": [], "label": []}
        for i, row in enumerate(rows):
            prompt, completion = batch["prompt"][i], batch["completion"][i]
            if isinstance(prompt, list) != isinstance(completion, list):
                problem = f"the prompt is {message_form(prompt)} but the completion is {message_form(completion)}"
                raise row_error(where, "completion", row, split, "the format of the prompt", problem)
            out["prompt"].append(prompt)
            out["completion"].append(completion)
            out["label"].append(as_boolean(batch["label"][i]))  # checked: a bool or a CSV's true/false
        return out

    return read_source(cfg, COLUMNS, prepare=prepare)


ENTRY = DatasetEntry(name="binary_file", schema=BinaryFileConfig, description=DESCRIPTION, rows="binary", load=load)
