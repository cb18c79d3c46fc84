"""The function reward: a user's (prompts, completions) -> scores, imported by module name or from a .py file."""

import itertools
import sys

import numpy as np
import pytest
import torch

from alignctl.errors import UsageError
from alignctl.rewards.base import RewardContext
from alignctl.rewards.function import ENTRY, FunctionConfig, build

SOURCE = """
import math

def length(prompts, completions):
    return [float(len(c)) for c in completions]

def trl_style(prompts, completions, **kwargs):
    return [1.0 if p.endswith("?") else 0 for p, c in zip(prompts, completions)]

class Scorer:
    @staticmethod
    def score(prompts, completions):
        return tuple(c.count("good") for c in completions)

def as_numpy(prompts, completions):
    import numpy
    return numpy.arange(len(completions), dtype=numpy.float32)

def as_tensor(prompts, completions):
    import torch
    return torch.ones(len(completions)) * 0.5

def as_bools(prompts, completions):
    return [c == "yes" for c in completions]

def one_short(prompts, completions):
    return [0.0] * (len(completions) - 1)

def with_nan(prompts, completions):
    return [0.0, math.nan][: len(completions)]

def with_inf(prompts, completions):
    return [-math.inf] * len(completions)

def with_text(prompts, completions):
    return [1.0, "2"][: len(completions)]

def with_none(prompts, completions):
    return [None] * len(completions)

def a_float(prompts, completions):
    return 1.0

def a_string(prompts, completions):
    return "1"

def a_matrix(prompts, completions):
    import numpy
    return numpy.zeros((len(completions), 1))

def mutates(prompts, completions):
    completions.clear()
    return []

NOT_CALLABLE = 3

def one_argument(completions):
    return [0.0] * len(completions)

def keyword_only(*, prompts, completions):
    return [0.0] * len(completions)
"""
_counter = itertools.count()


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A fresh, uniquely named module in tmp_path, importable through sys.path (removed afterwards)."""
    name = f"user_rewards_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def reward(value):
    return build(FunctionConfig(function=value), RewardContext())


def one_line_usage_error(fn, *needles):
    with pytest.raises(UsageError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message
    return message


def test_module_callable_scores(module):
    assert reward(f"{module}:length")(["a", "b"], ["xyz", ""]) == [3.0, 0.0]
    assert reward(f"{module}:trl_style")(["what?", "no"], ["a", "b"]) == [1.0, 0.0]
    assert reward(f"{module}:Scorer.score")(["", ""], ["good good", "bad"]) == [2.0, 0.0]  # dotted attribute
    assert reward(f"{module}:as_numpy")(["", "", ""], ["", "", ""]) == [0.0, 1.0, 2.0]
    assert reward(f"{module}:as_tensor")(["", ""], ["", ""]) == [0.5, 0.5]
    assert reward(f"{module}:as_bools")(["", ""], ["yes", "no"]) == [1.0, 0.0]
    scores = reward(f"{module}:length")([], [])
    assert scores == [] and all(isinstance(s, float) for s in reward(f"{module}:Scorer.score")([""], ["good"]))


def test_the_callers_lists_are_not_the_functions(module):
    completions = ["a"]
    with pytest.raises(UsageError):  # it empties its own copy, so it returns 0 scores for 1 completion
        reward(f"{module}:mutates")([""], completions)
    assert completions == ["a"]


def test_a_file_path_form(tmp_path):
    path = tmp_path / "scripts" / "my_reward.py"
    path.parent.mkdir()
    path.write_text(SOURCE)
    assert reward(f"{path}:length")(["p"], ["four"]) == [4.0]
    assert reward(f"{path}:Scorer.score")(["p"], ["good"]) == [1.0]


def test_a_relative_file_path_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "rel_reward.py").write_text(SOURCE)
    monkeypatch.chdir(tmp_path)
    assert reward("rel_reward.py:length")([""], ["ab"]) == [2.0]
    assert reward("./rel_reward.py:length")([""], ["ab"]) == [2.0]


def test_the_config_imports_nothing_build_does():
    cfg = FunctionConfig(function="alignctl_no_such_module:f")  # composes fine: nothing imported yet
    assert "alignctl_no_such_module" not in sys.modules
    one_line_usage_error(lambda: build(cfg, RewardContext()), "reward.function=alignctl_no_such_module:f")


@pytest.mark.parametrize(
    "value, needles",
    [
        ("???", ["reward.function is missing", "<module>:<callable>"]),
        ("", ["reward.function is missing"]),
        ("my_module", ["reward.function=my_module", "names no callable", "<module>:<callable>"]),
        ("my_module:", ["reward.function=my_module:", "names no callable"]),
        (":fn", ["reward.function=:fn", "names no callable"]),
        ("my module:fn", ["reward.function=my module:fn", "not a module name or a .py file"]),
        ("mod:fn()", ["reward.function=mod:fn()", "names no callable"]),
    ],
)
def test_values_that_name_no_callable_fail_when_the_config_is_made(value, needles):
    one_line_usage_error(lambda: FunctionConfig(function=value), *needles)


def test_import_failures_name_the_field_the_value_and_the_reason(module, tmp_path):
    one_line_usage_error(
        lambda: reward("alignctl_no_such_module:f"),
        "reward.function=alignctl_no_such_module:f", "cannot import module alignctl_no_such_module",
        "No module named 'alignctl_no_such_module'",
    )  # fmt: skip
    for attr, needle in (
        ("missing", "no attribute missing"),
        ("Scorer.nope", "no attribute Scorer.nope"),
        ("NOT_CALLABLE", "NOT_CALLABLE is not callable (int object)"),
        ("one_argument", "one_argument cannot be called as one_argument(prompts, completions)"),
    ):
        one_line_usage_error(lambda: reward(f"{module}:{attr}"), f"reward.function={module}:{attr}", needle)
    one_line_usage_error(lambda: reward(f"{module}:keyword_only"), "keyword_only cannot be called as")
    (tmp_path / "broken_at_import.py").write_text("import alignctl_missing_dependency\n")
    one_line_usage_error(
        lambda: reward("broken_at_import:f"), "reward.function=broken_at_import:f", "alignctl_missing_dependency"
    )
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('needs a GPU\\nand more')\n")
    one_line_usage_error(lambda: reward("raises_at_import:f"), "RuntimeError: needs a GPU")
    sys.modules.pop("broken_at_import", None)
    sys.modules.pop("raises_at_import", None)


def test_file_failures(tmp_path):
    missing = tmp_path / "nope.py"
    one_line_usage_error(lambda: reward(f"{missing}:f"), f"reward.function={missing}:f", "does not exist")
    (tmp_path / "notes.txt").write_text("x = 1")
    one_line_usage_error(lambda: reward(f"{tmp_path}/notes.txt:f"), "not a .py file")
    (tmp_path / "syntax.py").write_text("def f(:\n    pass\n")
    one_line_usage_error(lambda: reward(f"{tmp_path}/syntax.py:f"), "reward.function=", "SyntaxError", "line 1")
    (tmp_path / "ok.py").write_text("x = 1\n")
    one_line_usage_error(lambda: reward(f"{tmp_path}/ok.py:f"), "no attribute f")
    one_line_usage_error(lambda: reward(f"{tmp_path}/ok.py:x"), "x is not callable (int object)")


@pytest.mark.parametrize(
    "attr, needles",
    [
        ("one_short", ["returned 1 scores for 2 completions"]),
        ("with_nan", ["returned a non-finite or non-numeric score at index 1"]),
        ("with_inf", ["non-finite or non-numeric score at index 0"]),
        ("with_text", ["non-finite or non-numeric score at index 1"]),
        ("with_none", ["non-finite or non-numeric score at index 0"]),
        ("a_float", ["returned a float, not a list of 2 scores"]),
        ("a_string", ["returned a str, not a list of 2 scores"]),
        ("a_matrix", ["returned a ndarray, not a list of 2 scores"]),
    ],
)
def test_bad_results_fail_at_call_time(module, attr, needles):
    fn = reward(f"{module}:{attr}")  # builds: the name is fine
    one_line_usage_error(lambda: fn(["a", "b"], ["c", "d"]), f"reward.function={module}:{attr} returned", *needles)


def test_length_mismatch_of_the_inputs_is_an_error(module):
    with pytest.raises(ValueError):
        reward(f"{module}:length")(["a", "b"], ["c"])


def test_recipe_hashes_the_source(module, tmp_path):
    first = ENTRY.recipe(FunctionConfig(function=f"{module}:length"))
    assert first["function"] == f"{module}:length" and "source" in first
    (tmp_path / f"{module}.py").write_text(SOURCE + "\n# edited\n")
    assert ENTRY.recipe(FunctionConfig(function=f"{module}:length"))["source"] != first["source"]
    assert "source" in ENTRY.recipe(FunctionConfig(function=f"{tmp_path}/{module}.py:length"))


def test_numpy_and_torch_scalars_are_numbers():
    from alignctl.rewards.function import check_scores

    assert check_scores("m:f", [np.float32(0.5), torch.tensor(2.0), np.int64(3), 1], 4) == [0.5, 2.0, 3.0, 1.0]
