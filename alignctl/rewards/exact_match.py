"""Exact-match reward for the embedded arithmetic task (``toy_arith``): 1.0 when the completion's final answer
equals the question's answer, else 0.0.

The expected answer comes from the prompt itself: the question (``"Q: 23+58=? A:"``, the last one in the
prompt) is parsed and computed, so the reward needs no lookup table and works on any prompt of that form. The
completion's final answer is N of its last ``"The answer is N"`` (case-insensitive, spaces around N and its
minus sign allowed, ASCII digits only, a whole number: ``"8.1"`` or ``"1,000"`` is no answer); the worked steps
before it are not checked. Anything else (no such sentence, a prompt with no question, empty or garbage text,
absurdly long numbers, non-string values) scores 0.0: the reward never raises on model output.
"""

from __future__ import annotations

from alignctl.data.tasks.arith_problems import parse_answer, parse_question


def exact_match(prompts: list[str], completions: list[str]) -> list[float]:
    """1.0 for each completion whose final answer is the answer to its prompt's question, else 0.0."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    return [_score(p, c) for p, c in zip(prompts, completions)]


def _score(prompt: str, completion: str) -> float:
    question = parse_question(prompt)
    if question is None:
        return 0.0
    answer = parse_answer(completion)
    return 1.0 if answer is not None and answer == question.answer else 0.0
