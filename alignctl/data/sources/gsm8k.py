"""GSM8K grade-school math word problems (Cobbe et al. 2021): ``openai/gsm8k``, config ``main`` (or
``socratic``), splits train / test, columns ``question`` and ``answer`` (a worked solution ending in
``"#### <number>"``, e.g. ``"...so she makes 9 * 2 = $<<9*2=18>>18.\\n#### 18"``).

Rows: plain-text prompts, for verifiable rewards (exact_match) and online RL::

    prompt     = "Question: " + question (stripped) + "\\nAnswer:"
    answer     = the number after the last "####", commas removed ("#### 1,234" -> "1234")
    completion = " " + the worked solution as it is (its <<...>> calculator notes and final "#### ..." kept)

The completion continues the prompt (objective=sft can imitate it) and ends in the "####" marker exact_match
reads. A solution without "####" and a number after it is a DataError naming the row.
``ENTRY.answers(cfg)`` looks a prompt's answer up among the loaded rows of both splits (None for any other).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from alignctl.data.base import DatasetEntry, SourceDatasetConfig
from alignctl.data.sources.reading import TEXT, read_source, row_error

DESCRIPTION = "GSM8K math word problems (Cobbe et al. 2021): questions with exact final answers, worked solutions"
MARKER = "####"
NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


@dataclass
class Gsm8kConfig(SourceDatasetConfig):
    name: str = "gsm8k"
    path: str = "openai/gsm8k"
    subset: str = "main"  # the hub dataset's config: main, or socratic (solutions as sub-question steps)


def prompt_of(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def final_answer(solution: str) -> str | None:
    """The number after the solution's last "####", commas removed; None when there is none."""
    if MARKER not in solution:
        return None
    answer = solution.rsplit(MARKER, 1)[1].strip().replace(",", "")
    return answer if NUMBER.fullmatch(answer) else None


def load(cfg: Gsm8kConfig):
    def prepare(batch: dict[str, list], rows: list[int], split: str) -> dict[str, list]:
        out: dict[str, list] = {"prompt": [], "answer": [], "completion": []}
        for question, solution, row in zip(batch["question"], batch["answer"], rows):
            answer = final_answer(solution)
            if answer is None:
                tail = solution.rsplit("\n", 1)[-1][-60:]
                raise row_error(
                    f"dataset.path={cfg.path}", "answer", row, split, f"a solution ending in '{MARKER} <number>'",
                    f"its last line is {tail!r}",
                )  # fmt: skip
            out["prompt"].append(prompt_of(question))
            out["answer"].append(answer)
            out["completion"].append(" " + solution)
        return out

    return read_source(cfg, {"question": TEXT, "answer": TEXT}, subset=cfg.subset, prepare=prepare)


def answers(cfg: Gsm8kConfig) -> Callable[[str], str | None]:
    """prompt -> its reference answer, from the loaded train and test rows; None for a prompt not among them."""
    table: dict[str, str] = {}
    for split in load(cfg).values():
        for prompt, answer in zip(split["prompt"], split["answer"]):
            table.setdefault(prompt, answer)
    return table.get


ENTRY = DatasetEntry(
    name="gsm8k", schema=Gsm8kConfig, description=DESCRIPTION, rows="prompts", load=load,
    rewards=("exact_match", "function", "classifier"), answers=answers, completions=True,
)  # fmt: skip
