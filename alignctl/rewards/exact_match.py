"""Exact-match reward for verifiable answers: 1.0 when a completion's final answer equals the expected answer,
else 0.0 (a binary reward: pass@k is defined for it).

The expected answer, for each prompt:

- the dataset's reference answer, ``context.answers(prompt)``, when the run's dataset supplies one (GSM8K: the
  number after the reference solution's ``####``, e.g. ``"72"``);
- otherwise the answer to the prompt's own arithmetic question (``toy_arith``: the last ``"Q: 23+58=? A:"`` of
  the prompt is parsed and computed, so that task needs no lookup table);
- a prompt with neither scores 0.0 when the dataset has no reference answers (toy_arith); when it has them, such a
  prompt is a :class:`~alignctl.errors.DataError` naming it (prompts that reach the reward changed on the way, or
  do not come from the dataset: every completion would silently score 0).

The completion's final answer (:func:`final_answer`) is the number right after the *last* answer marker that is
followed by a well-formed number. The markers are ``####`` (GSM8K's) and ``The answer is`` (case-insensitive, an
optional ``:`` after it); whichever occurs last in the text counts, and a marker with no well-formed number after
it is skipped (``"The answer is 81. The answer is"`` answers 81). The worked steps before it are not checked.
Spaces are allowed between the marker, the sign, a ``$`` and the digits. A well-formed number is:

- an optional minus sign, before or after an optional ``$`` (``-5``, ``- 5``, ``-$5``, ``$-5``, ``$ 5``);
- ASCII digits only (fullwidth or Arabic-Indic digits are not digits here), either plain (``1234``, leading zeros
  allowed: ``081`` is 81) or grouped by commas into thousands (``1,234``, ``12,345,678``; ``1,23`` and ``1234,567``
  are not numbers);
- an optional decimal part, a ``.`` and digits (``72.50``); decimals compare numerically, ``72.0`` equals ``72``
  and ``72.50`` equals ``72.5``;
- not followed by another digit or by ``.``, ``,`` or ``/`` and a digit (``8.1.2``, ``8,1``, ``3/4`` are no
  answer at all, rather than a wrong prefix of one); anything else may follow: a trailing ``.``, a unit, a
  closing bracket, end of text;
- at most 64 significant digits (longer is garbage, not a number).

Anything else (no marker, empty or garbage text, non-string values) scores 0.0: the reward never raises on model
output. A reference answer is read with the same number grammar, on its own (surrounding spaces and a trailing
``.`` allowed, no marker needed); one that is not a number is a :class:`~alignctl.errors.DataError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

from alignctl.errors import DataError
from alignctl.rewards.arith_problems import parse_question
from alignctl.rewards.base import Reward, RewardConfig, RewardContext, RewardEntry

Answers = Callable[[str], "str | None"]  # prompt -> reference answer, or None where the dataset has none
ANSWER_FORMAT_VERSION = 2  # bump when what counts as an answer changes: it is part of the reward's cache recipe
MAX_ANSWER_DIGITS = 64

# sign / "$" in either order, then the digits: thousands-grouped or plain, then an optional decimal part; not the
# prefix of a longer number ("8.1.2", "8,1", "3/4").
_NUMBER = (
    r"(?:(?P<sign1>-)\s*\$?|\$?\s*(?P<sign2>-)?)\s*"
    r"(?P<int>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<frac>[0-9]+))?"
    r"(?![0-9]|[.,/][0-9])"
)
_MARKED = re.compile(r"(?:####|the answer is\s*:?)\s*" + _NUMBER, re.IGNORECASE)
_REFERENCE = re.compile(r"\s*" + _NUMBER + r"\s*\.?\s*")


def _value(match: re.Match[str]) -> Decimal | None:
    digits = match["int"].replace(",", "").lstrip("0")
    frac = (match["frac"] or "").rstrip("0")
    if len(digits) + len(frac) > MAX_ANSWER_DIGITS:
        return None
    value = Decimal(f"{digits or '0'}.{frac or '0'}")
    return -value if match["sign1"] or match["sign2"] else value


def final_answer(text: str) -> Decimal | None:
    """The completion's final answer (see the module docstring for what is accepted), or None when it has none."""
    if not isinstance(text, str):
        return None
    last = None
    for last in _MARKED.finditer(text):
        pass
    return None if last is None else _value(last)


def parse_reference(answer: str) -> Decimal | None:
    """A dataset's reference answer (``"72"``, ``"1,234"``, ``"$5.50"``) as a number; None when it is none."""
    match = _REFERENCE.fullmatch(answer) if isinstance(answer, str) else None
    return None if match is None else _value(match)


def exact_match(prompts: list[str], completions: list[str], answers: Answers | None = None) -> list[float]:
    """1.0 for each completion whose final answer equals its prompt's expected answer, else 0.0.

    ``answers`` (prompt -> reference answer string or None) is the dataset's lookup; without it, or where it
    gives None, the expected answer is that of the prompt's arithmetic question (toy_arith)."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    return [_score(_expected(p, answers), c) for p, c in zip(prompts, completions)]


def _expected(prompt: str, answers: Answers | None) -> Decimal | None:
    reference = answers(prompt) if answers is not None and isinstance(prompt, str) else None
    if isinstance(reference, int) and not isinstance(reference, bool):
        reference = str(reference)
    if reference is not None:
        value = parse_reference(reference)
        if value is None:
            raise DataError(f"reference answer {str(reference)[:80]!r} is not a number (prompt {prompt[:60]!r})")
        return value
    question = parse_question(prompt)
    if question is None and answers is not None:
        shown = prompt[:60] if isinstance(prompt, str) else type(prompt).__name__
        raise DataError(
            f"exact_match has no reference answer for prompt {shown!r}: the dataset's answers do not list it and it "
            "asks no arithmetic question"
        )
    return None if question is None else Decimal(question.answer)


def _score(expected: Decimal | None, completion: str) -> float:
    if expected is None:
        return 0.0
    answer = final_answer(completion)
    return 1.0 if answer is not None and answer == expected else 0.0


def build(cfg: RewardConfig, context: RewardContext) -> Reward:
    answers = context.answers

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        return exact_match(prompts, completions, answers)

    return reward


ENTRY = RewardEntry(
    name="exact_match",
    schema=RewardConfig,
    description="1.0 when the completion's final answer (last \"The answer is N\" or \"#### N\") equals the "
    "reference answer (GSM8K) or the prompt's arithmetic answer (toy_arith), else 0.0.",
    build=build,
    binary=True,
    scores_any_text=False,
    recipe=lambda cfg: {"name": cfg.name, "answer_format": ANSWER_FORMAT_VERSION},
)
