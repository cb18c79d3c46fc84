"""Anthropic HH-RLHF (Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF"), the dialogue task
of the DPO paper: ``Anthropic/hh-rlhf``, splits train / test, columns ``chosen`` and ``rejected``, each a whole
dialogue ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` ending in the assistant reply being compared.

Rows: plain-text preferences. The shared prompt is split off as the DPO paper's reference code does
(``extract_anthropic_prompt``: the text up to and including the last ``"\\n\\nAssistant:"``, kept as text, the
completions keep their leading space), with the prefix taken from *both* dialogues, as TRL's example script
``examples/datasets/hh-rlhf-helpful-base.py`` does (``common_start`` cut back to the last assistant marker):

    prompt   = the longest prefix of chosen and of rejected that ends in "\\n\\nAssistant:"
    chosen   = chosen[len(prompt):]       e.g. " Sure, here is a recipe..."
    rejected = rejected[len(prompt):]

Unlike that script the rows stay plain text (not converted to messages), so the prompt keeps the dataset's own
"Human:/Assistant:" format, as in the DPO paper; and a pair whose dialogues share no such prefix is a DataError
naming its row (TRL's script would silently cut it at the wrong place). ``data_dir`` picks one subset
(``helpful-base``, ``harmless-base``, ``helpful-online``, ``helpful-rejection-sampled``); None reads them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignctl.data.base import DatasetEntry, SourceDatasetConfig
from alignctl.data.sources.reading import TEXT, read_source, row_error

DESCRIPTION = "Anthropic HH-RLHF (Bai et al. 2022): chosen/rejected dialogues, shared prompt split off"
MARKER = "\n\nAssistant:"


@dataclass
class HhRlhfConfig(SourceDatasetConfig):
    name: str = "hh_rlhf"
    path: str = "Anthropic/hh-rlhf"
    data_dir: str | None = None  # one subset of the hub dataset (e.g. helpful-base); None: all of them


def split_dialogues(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen completion, rejected completion), or None when the two share no prefix ending in MARKER."""
    end = len(chosen)
    while (start := chosen.rfind(MARKER, 0, end)) >= 0:
        cut = start + len(MARKER)
        if rejected.startswith(chosen[:cut]):
            return chosen[:cut], chosen[cut:], rejected[cut:]
        end = start
    return None


def load(cfg: HhRlhfConfig):
    def prepare(batch: dict[str, list], rows: list[int], split: str) -> dict[str, list]:
        out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": []}
        for chosen, rejected, row in zip(batch["chosen"], batch["rejected"], rows):
            parts = split_dialogues(chosen, rejected)
            if parts is None:
                raise row_error(
                    f"dataset.path={cfg.path}", "chosen", row, split, "a dialogue sharing its prompt with rejected",
                    f"chosen and rejected share no prefix ending in {MARKER!r}",
                )  # fmt: skip
            for key, value in zip(out, parts):
                out[key].append(value)
        return out

    return read_source(cfg, {"chosen": TEXT, "rejected": TEXT}, data_dir=cfg.data_dir, prepare=prepare)


ENTRY = DatasetEntry(name="hh_rlhf", schema=HhRlhfConfig, description=DESCRIPTION, rows="preferences", load=load)
