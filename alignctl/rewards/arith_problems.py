"""Seeded arithmetic questions, their worked solutions, and the parsers the ``exact_match`` reward uses (here,
beside that reward, since the toy_arith dataset writes this format and the reward reads it).

A question is a prompt ``"Q: 23+58=? A:"``; its worked solution (the completion, with a leading space) adds or
subtracts column by column, units first, and ends on one parseable sentence::

    Q: 23+58=? A: 3+8=11, carry 1; 2+5+1=8. The answer is 81.
    Q: 82-57=? A: 12-7=5, borrow 1; 8-5-1=2. The answer is 25.
    Q: 99+99=? A: 9+9=18, carry 1; 9+9+1=19. The answer is 198.

Every column is one short step whose digits the model can copy or look up (a one-digit sum or difference), so
a ~1M-parameter model learns the format quickly and the arithmetic only partly: what makes it a testbed for
pass@k and online RL. Subtraction is ``a - b`` with ``a >= b`` (the answer is never negative), and leading
zeros of the answer are dropped (``52-48`` is 4). The final answer is the last ``"The answer is N"`` of a text.

Everything here is pure Python and cheap to import (the reward imports it); nothing draws on global RNG state.
Determinism: ``random.Random`` seeded with a string (sha512-based) is stable across runs and Python versions.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PROBLEMS_VERSION = 1  # bump on any change to questions or worked solutions: it is part of every cache recipe
OPERATIONS = "+-"
MAX_OPERAND_DIGITS = 18  # longest operand :func:`parse_question` accepts; longer questions are not ours
MAX_ANSWER_DIGITS = 64  # longest final answer :func:`parse_answer` accepts (longer is garbage, not a number)

_QUESTION = re.compile(r"Q:\s*([0-9]{1,%d})\s*([+-])\s*([0-9]{1,%d})\s*=\s*\?\s*A:" % ((MAX_OPERAND_DIGITS,) * 2))
# "The answer is N" with N a whole ASCII number: not followed by more digits or a decimal/thousands part, so
# "8.1" or "1,000" or a 65-digit run is no answer at all (rather than a wrong prefix of one).
_ANSWER = re.compile(r"the answer is\s*(-?)\s*([0-9]+)(?![0-9]|[.,][0-9])", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Problem:
    a: int
    op: str  # "+" or "-"
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def prompt(self) -> str:
        return f"Q: {self.a}{self.op}{self.b}=? A:"

    @property
    def width(self) -> int:
        """Columns of the worked solution (digits of the longer operand)."""
        return max(len(str(self.a)), len(str(self.b)))

    def solution(self, slip: tuple[int, int] | None = None, misfact: Misfact | None = None) -> str:
        """The worked solution: the completion to the prompt, starting with a space.

        ``slip=(column, delta)`` writes a careless one: the result of that column (0 = units) is off by ``delta``
        (turned around where it would leave the column's range), and everything after it, carries and the
        final answer included, follows from the slip as written. ``misfact(op, terms)`` is asked at every
        column with the column's terms as written (two digits, then the carry or borrow) and returns the offset
        with which that column's result is written (0: right): a writer with misremembered facts."""
        fact = None if misfact is None else functools.partial(misfact, self.op)
        steps, answer = (_add_steps if self.op == "+" else _sub_steps)(self.a, self.b, self.width, slip, fact)
        return f" {steps}. The answer is {answer}."

    def text(self, slip: tuple[int, int] | None = None, misfact: Misfact | None = None) -> str:
        """Prompt + worked solution: one pretraining document."""
        return self.prompt + self.solution(slip, misfact)


Misfact = Callable[[str, tuple[int, ...]], int]


def _digits(n: int, width: int) -> list[int]:
    """Units first, zero-padded to ``width``."""
    return [(n // 10**i) % 10 for i in range(width)]


def _offset(value: int, delta: int, hi: int) -> int:
    return value + delta if 0 <= value + delta <= hi else value - delta


def _slipped(value: int, column: int, terms: list[int], slip, misfact, hi: int) -> int:
    misremembered = 0 if misfact is None else misfact(tuple(terms))
    if misremembered:  # a careless slip on top could land back on the right result: one error per column
        return _offset(value, misremembered, hi)
    if slip is not None and slip[0] == column:
        return _offset(value, slip[1], hi)
    return value


def _add_steps(a: int, b: int, width: int, slip: tuple[int, int] | None, misfact) -> tuple[str, int]:
    steps, carry, answer = [], 0, 0
    for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
        terms = [x, y] + [1] * carry
        s = _slipped(sum(terms), i, terms, slip, misfact, 19)
        step = "+".join(map(str, terms)) + f"={s}"
        answer += (s % 10) * 10**i
        carry = int(s >= 10)
        if carry and i < width - 1:  # the last column writes its carry as the answer's leading digit
            step += ", carry 1"
        steps.append(step)
    return "; ".join(steps), answer + carry * 10**width


def _sub_steps(a: int, b: int, width: int, slip: tuple[int, int] | None, misfact) -> tuple[str, int]:
    if a < b:
        raise ValueError(f"subtraction needs a >= b, got {a}-{b}")
    steps, borrow, answer = [], 0, 0
    for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
        top = x + 10 if x - borrow < y else x
        terms = [top, y] + [1] * borrow
        d = _slipped(top - y - borrow, i, terms, slip, misfact, 9)
        step = "-".join(map(str, terms)) + f"={d}"
        answer += d * 10**i
        borrow = int(top != x)
        if borrow:
            step += ", borrow 1"
        steps.append(step)
    return "; ".join(steps), answer


# --- question sets ---------------------------------------------------------------------------------------------
TEST_SHARE = 0.1  # share of all questions on the held-out side of the split (by a hash of seed and question)
SIDES = ("train", "test")
_ENUMERATE_MAX = 200_000  # question sets up to this size are enumerated and shuffled, larger ones sampled


def _check(digits: int, operations: str) -> None:
    if not 1 <= digits <= MAX_OPERAND_DIGITS:
        raise ValueError(f"digits must lie in [1, {MAX_OPERAND_DIGITS}], got {digits}")
    if not operations or set(operations) - set(OPERATIONS) or len(set(operations)) != len(operations):
        raise ValueError(f"operations must be distinct characters of {OPERATIONS!r}, got {operations!r}")


def _operand_range(digits: int) -> tuple[int, int]:
    """Smallest and largest ``digits``-digit operand (1 digit: 0-9)."""
    return (10 ** (digits - 1) if digits > 1 else 0), 10**digits - 1


def num_problems(digits: int, operations: str) -> int:
    """How many distinct questions have two ``digits``-digit operands and an operation from ``operations``."""
    _check(digits, operations)
    lo, hi = _operand_range(digits)
    n = hi - lo + 1
    return sum(n * n if op == "+" else n * (n + 1) // 2 for op in operations)


def side_of(problem: Problem, seed: int) -> str:
    """"test" for about ``TEST_SHARE`` of all questions, else "train": a fixed property of (seed, question), so
    the held-out side never depends on how many questions anyone asks for."""
    key = f"alignctl-arith-split:{seed}:{problem.a}{problem.op}{problem.b}".encode()
    h = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    return "test" if h < TEST_SHARE * 2**64 else "train"


def _shuffled(rng: random.Random, digits: int, op: str) -> Iterator[Problem]:
    """Every ``digits``-digit question of ``op`` once, in a seeded order (small sets: a shuffle of all of them;
    large sets: uniform draws, duplicates skipped)."""
    lo, hi = _operand_range(digits)
    if num_problems(digits, op) <= _ENUMERATE_MAX:
        span = range(lo, hi + 1)
        pool = [Problem(a, op, b) for a in span for b in span if op == "+" or a >= b]
        rng.shuffle(pool)
        yield from pool
        return
    seen: set[Problem] = set()
    while True:  # the set is large: every draw is new with probability close to 1
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        p = Problem(max(a, b), op, min(a, b)) if op == "-" else Problem(a, op, b)
        if p not in seen:
            seen.add(p)
            yield p


def problems(seed: int, digits: int, operations: str, n: int, side: str) -> list[Problem]:
    """The first ``n`` questions on ``side`` ("train" or "test", see :func:`side_of`) in a seeded order: two
    ``digits``-digit operands (1 digit: 0-9), the operations of ``operations`` taking turns at random so every
    prefix is balanced (until one runs out). A longer list starts with the shorter one. Raises ValueError when
    fewer than ``n`` such questions exist."""
    _check(digits, operations)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    def rng(*tag: str) -> random.Random:
        return random.Random(":".join(["alignctl-arith", str(PROBLEMS_VERSION), str(seed), str(digits), side, *tag]))

    streams = {op: (p for p in _shuffled(rng(op), digits, op) if side_of(p, seed) == side) for op in operations}
    turns = rng(operations)
    out: list[Problem] = []
    while len(out) < n and streams:
        op = turns.choice(sorted(streams))
        p = next(streams[op], None)
        if p is None:
            del streams[op]
        else:
            out.append(p)
    if len(out) < n:
        raise ValueError(
            f"only {len(out)} distinct {digits}-digit {operations!r} questions on the {side} side, need {n}"
        )
    return out


# --- parsing (the reward's side) -------------------------------------------------------------------------------
def parse_question(prompt: str) -> Problem | None:
    """The question a prompt asks (its last ``"Q: a op b=? A:"``), or None when it asks none we can answer."""
    if not isinstance(prompt, str):
        return None
    found = _QUESTION.findall(prompt)
    if not found:
        return None
    a, op, b = found[-1]
    return Problem(int(a), op, int(b))


def parse_answer(text: str) -> int | None:
    """The final answer of a completion: N of its last ``"The answer is N"`` (case-insensitive; spaces around
    N and its minus sign allowed; ASCII digits only); None when there is none or N is absurdly long."""
    if not isinstance(text, str):
        return None
    found = _ANSWER.findall(text)
    if not found:
        return None
    sign, digits = found[-1]
    digits = digits.lstrip("0") or "0"
    if len(digits) > MAX_ANSWER_DIGITS:
        return None
    return -int(digits) if sign else int(digits)
