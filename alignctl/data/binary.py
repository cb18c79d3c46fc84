"""Preference pairs -> binary feedback (KTO's data kind): each pair becomes two rows of prompt, completion, label,
its chosen completion desirable (label True) and its rejected one undesirable (False).

The layout of TRL's `unpair_preference_dataset`, over each whole split: the chosen rows in the pairs' order, then the
rejected rows in the same order. Reward columns are dropped (a binary row carries only its label).
"""

from __future__ import annotations

from typing import Any


def from_pairs(pairs: Any) -> Any:
    """A DatasetDict (or Dataset) of prompt, chosen, rejected -> the same splits as prompt, completion, label."""
    from datasets import Dataset, DatasetDict  # deferred: datasets is heavy

    def split(ds: Any) -> Any:
        prompts = list(ds["prompt"])
        return Dataset.from_dict({
            "prompt": prompts + prompts,
            "completion": list(ds["chosen"]) + list(ds["rejected"]),
            "label": [True] * len(ds) + [False] * len(ds),
        })  # fmt: skip

    if isinstance(pairs, Dataset):
        return split(pairs)
    return DatasetDict({name: split(ds) for name, ds in pairs.items()})
