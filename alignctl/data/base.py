"""What every dataset option shares: its config fields, its registry entry, and the row formats it returns.

A dataset option is a module with an `ENTRY: DatasetEntry` (registered in alignctl.data.registry) and a YAML in
conf/dataset/. Its `load(cfg)` returns a `datasets.DatasetDict` with "train" and "test" splits in TRL's formats:

- rows="preferences": columns prompt, chosen, rejected; plain text (prompt a string, completions strings that
  continue it) or conversational (prompt a list of {"role", "content"} messages, chosen/rejected lists with the
  assistant's message). Optional chosen_reward / rejected_reward floats.
- rows="prompts": column prompt (text or messages), plus optional columns the dataset's rewards read (e.g. answer).
- rows="binary": columns prompt, completion, label (bool: True = desirable); TRL's unpaired preference format,
  plain text or conversational (completion then a list with the assistant's message).

Conversational rows are rendered to text with the tokenizer's chat template later (alignctl.data.chat), so a
loader never needs a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

from alignctl.constraints import BelowHalf, NonNegative, Positive, check_ranges
from alignctl.errors import ConfigError
from alignctl.rewards import registry as reward_registry

ROW_KINDS = ("preferences", "prompts", "binary")


def label_noise_field() -> Any:
    """Every dataset's `label_noise: Annotated[float, BelowHalf]` field: the share of training rows whose preference
    labels are reversed (alignctl.run.build.flip_labels: round(share * rows) rows drawn with train.seed), for objectives
    trained on preference pairs or ranked candidates; the held-out split keeps its true labels. Not in the config's
    repr: the labels are flipped after the rows are built, so the noise is no part of the data's identity in cache keys
    (repr(cfg.dataset): rendered rows, sampled pairs) and every noise level reads the same cached rows."""
    return field(default=0.0, repr=False)


@dataclass
class SourceDatasetConfig:
    """Fields of every dataset read from the hub or a local file (everything but the embedded toy tasks)."""

    name: str = "???"
    path: str = "???"  # hub id, or a local .jsonl/.json/.parquet/.csv file or a `save_to_disk` folder
    split: str = "train"  # the split training reads
    test_split: str | None = "test"  # the held-out split eval reads; None: cut test_size rows off `split`
    # with test_split=None (or a one-split source such as a file): share (<1) or count (>=1)
    test_size: Annotated[float, Positive] = 0.05
    # keep at most this many rows of each split (the first ones, in source order)
    max_rows: Annotated[int | None, Positive] = None
    seed: Annotated[int, NonNegative] = 0  # the seed of the test_size cut
    # Sampling pairs / candidates / self-samples from the SFT model (prompt datasets; alignctl.data.sampled):
    samples_per_prompt: Annotated[int, Positive] = 4  # continuations scored per prompt; best vs worst is one pair
    # ranked continuations per prompt kept for listwise objectives (ADPO)
    candidates_per_prompt: Annotated[int, Positive] = 4
    self_samples: Annotated[int, Positive] = 4  # self-samples per negative (D2O)
    max_new_tokens: Annotated[int, Positive] = 64  # completion budget when sampling (pairs, online RL, eval)
    label_noise: Annotated[float, BelowHalf] = label_noise_field()  # share of flipped training labels (see there)

    def __post_init__(self) -> None:

        check_ranges("dataset", self)
        for key, least in (("samples_per_prompt", 2), ("candidates_per_prompt", 2)):
            if getattr(self, key) < least:
                raise ConfigError(f"dataset.{key}={getattr(self, key)} is out of range; it must be >= {least}")


@dataclass(frozen=True)
class DatasetEntry:
    """A registry entry: how to load the dataset and what it provides."""

    name: str
    schema: type  # the config dataclass (a SourceDatasetConfig subclass for hub/file datasets)
    description: str
    rows: str  # one of ROW_KINDS: what `load` returns
    load: Callable[[Any], Any]  # cfg.dataset -> DatasetDict(train=..., test=...)
    # Reward options that can score this dataset's completions; None: every reward that scores any text.
    rewards: tuple[str, ...] | None = None
    # Reference answers for verifiable rewards (exact_match): cfg.dataset -> (prompt -> answer string or None).
    answers: Callable[[Any], Callable[[str], str | None]] | None = None
    # Embedded tasks (model=tiny): cfg -> the locally built base model directory.
    embedded_model: Callable[[Any], Any] | None = None
    # Held-out prompt splits beyond "test" that eval also samples (toy_arith: "ood"): load() returns them too.
    extra_splits: tuple[str, ...] = ()
    # "prompts" rows also carry a `completion` column (a reference answer to imitate: objective=sft can use it)
    completions: bool = False
    # Train prompts for sampled data when more than load()'s train split may be needed (toy_sentiment's endless
    # held-out stream: prompts whose samples all tie give no pair, and the next prompt is taken): cfg -> iterable.
    prompt_stream: Callable[[Any], Any] | None = None

    def accepted_rewards(self) -> tuple[str, ...]:
        """The reward options this dataset can be scored by."""
        return self.rewards if self.rewards is not None else reward_registry.any_text()
