"""The dataset registry: option name -> DatasetEntry (name == module name == the config's `dataset=` option).

Every module of alignctl.data.sources and alignctl.data.tasks that defines `ENTRY` is registered: adding a dataset
is its module, its YAML and its test.
"""

from __future__ import annotations

from alignctl.data.base import DatasetEntry
from alignctl.registry import discover, lookup

REGISTRY: dict[str, DatasetEntry] = discover(("alignctl.data.tasks", "alignctl.data.sources"), "ENTRY", DatasetEntry)


def get(name: str) -> DatasetEntry:
    return lookup(REGISTRY, name, "dataset")


def data_kinds(entry: DatasetEntry) -> tuple[str, ...]:
    """What a dataset can feed objectives: pairs, binary feedback (each pair's chosen desirable, its rejected not),
    ranked candidates and negatives (read from preference rows, or sampled from the SFT model and scored by the
    reward for prompt rows), prompts to sample groups for, and completions to imitate (objective=sft) where the rows
    have them; binary rows feed only binary feedback."""
    if entry.rows == "binary":  # unpaired labelled completions: KTO's data, nothing to pair or rank
        return ("binary",)
    kinds = ("pairs", "binary", "candidates", "negatives", "groups")  # binary: each pair split in two rows
    return (*kinds, "sft") if entry.rows == "preferences" or entry.completions else kinds
