"""The exact-match reward: the prompt's question is recomputed, the completion's last "The answer is N" compared."""

from decimal import Decimal

import pytest

from alignctl.errors import DataError
from alignctl.rewards.arith_problems import Problem, parse_answer, parse_question
from alignctl.rewards.base import RewardConfig, RewardContext
from alignctl.rewards.exact_match import ENTRY, build, exact_match, final_answer, parse_reference

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


# --- reference answers (GSM8K) -----------------------------------------------------------------------------------
GSM8K_PROMPT = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in all?"
GSM8K_ANSWERS = {GSM8K_PROMPT: "72", "Weng earns $12 an hour. How much did she earn?": "10", "Big number?": "1,234"}


def gsm8k_reward():
    return build(RewardConfig(name="exact_match"), RewardContext(answers=GSM8K_ANSWERS.get))


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", 1.0),
        ("#### 72", 1.0),
        ("####72", 1.0),
        ("#### 72.", 1.0),  # a trailing period
        ("#### $72", 1.0),  # a leading dollar sign
        ("#### $ 72.00", 1.0),  # decimals compare numerically
        ("#### 72.0.", 1.0),
        ("#### 072", 1.0),
        ("The answer is 72.", 1.0),
        ("the answer is: 72", 1.0),  # an optional colon after the phrase
        ("So the answer is $72.", 1.0),
        ("#### 72 clips", 1.0),  # a unit after the number
        ("#### 72.5", 0.0),
        ("#### 7.2", 0.0),
        ("#### 720", 0.0),
        ("#### -72", 0.0),
        ("72", 0.0),  # a bare number is no answer
        ("The total is 72.", 0.0),
        ("#### seventy-two", 0.0),
        ("#### 72/1", 0.0),  # a fraction is no answer, not its numerator
        ("#### 72.0.1", 0.0),
        ("#### \uff17\uff12", 0.0),  # fullwidth digits
        ("", 0.0),
        ("####", 0.0),
        ("\x00\ufffd\u202e#### 72\U0001f600", 1.0),  # junk around a well-formed answer
        ("#### \U0001f600 72", 0.0),  # junk between the marker and the number
        # several answers: the last well-formed one counts, whichever marker it has
        ("#### 71\nThe answer is 72.", 1.0),
        ("The answer is 72.\n#### 71", 0.0),
        ("The answer is 71. Wait: #### 72", 1.0),
        ("#### 72 #### 73", 0.0),
        ("#### 72 then The answer is", 1.0),  # a dangling marker is skipped
        ("#### 72 then #### many", 1.0),
    ],
)
def test_gsm8k_completions_against_the_reference(completion, expected):
    assert gsm8k_reward()([GSM8K_PROMPT], [completion]) == [expected]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("#### 1,234", 1.0),  # thousands separators
        ("#### 1234", 1.0),
        ("The answer is $1,234.00.", 1.0),
        ("#### 1,234.", 1.0),
        ("#### 1,23", 0.0),  # not a thousands grouping: no answer
        ("#### 12,34", 0.0),
        ("#### 1234,567", 0.0),
        ("#### 1,2345", 0.0),
        ("#### 1.234", 0.0),  # a decimal point, not a separator
    ],
)
def test_thousands_separators(completion, expected):
    assert gsm8k_reward()(["Big number?"], [completion]) == [expected]


def test_what_final_answer_reads():
    assert final_answer("#### 12,345,678.50") == Decimal("12345678.5")
    assert final_answer("The answer is -$5.") == final_answer("The answer is $-5") == final_answer("#### - 5") == -5
    assert final_answer("#### 0") == final_answer("#### -0") == 0
    assert final_answer("#### " + "9" * 65) is None and final_answer("#### " + "0" * 100 + "7") == 7
    assert final_answer("#### 1." + "5" * 70) is None  # more than 64 significant digits
    assert final_answer(None) is None and final_answer(b"#### 72") is None
    assert final_answer("The ANSWER IS 9 and #### 10 and the answer is 11") == 11


@pytest.mark.parametrize(
    "reference, value", [("72", 72), (" 72 ", 72), ("1,234", 1234), ("$5.50", 5.5), ("-3", -3), ("18.", 18)]
)
def test_reference_answers_use_the_same_number_grammar(reference, value):
    assert parse_reference(reference) == Decimal(str(value))


def test_a_reference_that_is_no_number_is_a_data_error():
    reward = build(RewardConfig(name="exact_match"), RewardContext(answers={"q": "seventy-two"}.get))
    with pytest.raises(DataError, match="seventy-two"):
        reward(["q"], ["#### 72"])
    assert build(RewardConfig(name="exact_match"), RewardContext(answers={"q": 72}.get))(["q"], ["#### 72"]) == [1.0]


def test_prompts_without_a_reference_fall_back_to_the_arithmetic_question():
    reward = gsm8k_reward()
    prompts = [GSM8K_PROMPT, Q, "no question here"]
    completions = ["#### 72", " 3+8=11, carry 1; 2+5+1=8. The answer is 81.", "#### 72"]
    assert reward(prompts[:2], completions[:2]) == [1.0, 1.0]
    # with reference answers, a prompt that has neither is an error, not a silent 0 (the prompt changed on the way)
    with pytest.raises(DataError, match="no reference answer for prompt 'no question here'"):
        reward(prompts, completions)
    # without a lookup at all (toy_arith runs): the question in the prompt, as exact_match() does
    plain = build(RewardConfig(name="exact_match"), RewardContext())
    assert plain(prompts, completions) == exact_match(prompts, completions) == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        reward([Q], [])


def test_toy_arith_answers_in_gsm8k_form_count_too():
    assert exact_match([Q] * 4, [" #### 81", " The answer is 81.0", " The answer is 8,1", " The answer is 81.5"]) == [
        1.0, 1.0, 0.0, 0.0
    ]  # fmt: skip


def test_entry():
    assert ENTRY.name == "exact_match" and ENTRY.binary and ENTRY.schema is RewardConfig
    assert ENTRY.recipe(RewardConfig(name="exact_match"))["answer_format"] >= 2
