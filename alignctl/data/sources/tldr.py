"""TL;DR summarization preferences (Stiennon et al. 2020, "Learning to summarize from human feedback"), the
summarization task of the DPO paper, in TRL's preprocessing: ``trl-lib/tldr-preference``, splits train /
validation, plain-text columns ``prompt`` (``"SUBREDDIT: r/...\\n\\nTITLE: ...\\n\\nPOST: ...\\n\\nTL;DR:"``),
``chosen`` and ``rejected`` (the two summaries, continuing the prompt).

Rows: plain-text preferences, the three columns as they are (other columns dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

from alignctl.data.base import DatasetEntry, SourceDatasetConfig
from alignctl.data.sources.reading import TEXT, read_source

DESCRIPTION = "Reddit TL;DR summaries (Stiennon et al. 2020), TRL's preference version: post -> better summary"


@dataclass
class TldrConfig(SourceDatasetConfig):
    name: str = "tldr"
    path: str = "trl-lib/tldr-preference"
    test_split: str | None = "validation"


def load(cfg: TldrConfig):
    return read_source(cfg, {"prompt": TEXT, "chosen": TEXT, "rejected": TEXT})


ENTRY = DatasetEntry(name="tldr", schema=TldrConfig, description=DESCRIPTION, rows="preferences", load=load)
