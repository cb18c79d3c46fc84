"""The exact-match reward: the prompt's question is recomputed, the completion's last "The answer is N" compared."""

import pytest

from alignctl.data.tasks.arith_problems import Problem, parse_answer, parse_question
from alignctl.rewards.exact_match import exact_match

Q = "Q: 23+58=? A:"  # 81


@pytest.mark.parametrize(
    "completion, expected",
    [
        (" 3+8=11, carry 1; 2+5+1=8. The answer is 81.", 1.0),  # the format the base model writes
        (" The answer is 81", 1.0),  # no steps, no final period
        (" the answer is   81 .", 1.0),  # case and spaces around the number
        (" The answer is 081.", 1.0),  # the same number
        (" 3+8=12, carry 1; 2+5+1=8. The answer is 82.", 0.0),  # wrong
        (" 3+8=11. The answer is 71. No wait, The answer is 81.", 1.0),  # the last answer counts
        (" The answer is 81. The answer is 82.", 0.0),
        (" The answer is 81. The answer is", 1.0),  # a dangling last phrase has no number: not an answer
        (" 81", 0.0),  # a bare number is not an answer
        ("", 0.0),
        ("   ", 0.0),
        (" The answer is eighty-one.", 0.0),
        (" The answer is 8.1", 0.0),  # not a whole number, and not its prefix 8 either
        (" The answer is 81.5", 0.0),
        (" The answer is 8,1", 0.0),
        (" The answer is -81.", 0.0),
        (" The answer is \uff18\uff11.", 0.0),  # fullwidth digits are not ASCII digits
        (" The answer is \u0668\u0661.", 0.0),  # nor Arabic-Indic ones (Python's \d would take them)
        ("\ufffd\x00\u202e The answer is \U0001f600 81 \ufffd", 0.0),  # junk between "is" and the number
        ("\ufffd\x00\u202e\U0001f600 The answer is 81\ufffd", 1.0),  # junk around a well-formed answer
        (" The answer is " + "9" * 5000, 0.0),  # absurdly long: no int() conversion limit error
        (" The answer is " + "0" * 5000 + "81", 1.0),  # leading zeros are not length
        (" <|eos|> The answer is 81 <|pad|>", 1.0),
    ],
)
def test_hand_written_completions(completion, expected):
    assert exact_match([Q], [completion]) == [expected]


def test_negative_answers_and_spaces_in_the_sign():
    prompt = "Q: 3-15=? A:"  # the generator never asks this, but the reward computes it all the same
    assert parse_question(prompt).answer == -12
    assert exact_match([prompt] * 4, [" The answer is -12.", " The answer is - 12.", " The answer is 12.", ""]) == [
        1.0, 1.0, 0.0, 0.0
    ]  # fmt: skip
    assert exact_match(["Q: 40-40=? A:"] * 2, [" The answer is 0.", " The answer is -0."]) == [1.0, 1.0]


def test_expected_answer_comes_from_the_prompt():
    prompts = ["Q: 99+99=? A:", "Q:82-57=?A:", "Q: 7+8=? A:", "Q: 123456789+987654321=? A:", "Q: 100-1=? A:"]
    answers = [198, 25, 15, 1111111110, 99]
    assert exact_match(prompts, [f" The answer is {a}." for a in answers]) == [1.0] * len(prompts)
    assert exact_match(prompts, [f" The answer is {a + 1}." for a in answers]) == [0.0] * len(prompts)
    # a prompt with several questions asks the last one (a few-shot prompt ends on the real question)
    few_shot = "Q: 1+1=? A: 1+1=2. The answer is 2.\nQ: 20+22=? A:"
    assert exact_match([few_shot, few_shot], [" The answer is 42.", " The answer is 2."]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "prompt",
    ["", "What is 2+2?", "Q: 23*58=? A:", "Q: abc+1=? A:", "Q: 1" + "2" * 30 + "+1=? A:", "\ufffd\x00", "Q: 23+58"],
)
def test_prompts_without_a_question_score_zero(prompt):
    assert parse_question(prompt) is None
    assert exact_match([prompt], [" The answer is 81."]) == [0.0]


def test_non_string_values_score_zero():
    assert exact_match([Q, Q, None, 5], [None, b" The answer is 81.", " The answer is 81.", " The answer is 81."]) == [
        0.0, 0.0, 0.0, 0.0
    ]  # fmt: skip
    assert parse_answer(81) is None


def test_every_worked_solution_scores_one():
    problems = [Problem(a, op, b) for a in range(0, 1000, 37) for b in range(0, 1000, 41) for op in "+-" if a >= b]
    prompts = [p.prompt for p in problems]
    assert exact_match(prompts, [p.solution() for p in problems]) == [1.0] * len(problems)
    # a careless solution (one column off by one) ends on a different, wrong answer
    careless = [p.solution((0, 1)) for p in problems]
    assert exact_match(prompts, careless) == [0.0] * len(problems)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        exact_match([Q, Q], [" The answer is 81."])
    assert exact_match([], []) == []
