"""The reward registry: one name per option (module, registry key, conf/reward/<name>.yaml), and its dispatch."""

import dataclasses
import importlib
from importlib import resources

import pytest

from alignctl.rewards import registry
from alignctl.rewards.base import RewardConfig, RewardContext, RewardEntry
from alignctl.rewards.exact_match import exact_match
from alignctl.rewards.sentiment import sentiment


def yaml_description(name):
    first = (resources.files("alignctl.conf") / "reward" / f"{name}.yaml").read_text().splitlines()[0]
    return first.lstrip("# ").strip()


def test_every_option_is_its_module_and_ships_a_yaml():
    assert set(registry.REGISTRY) >= {"sentiment", "exact_match", "classifier", "function"}
    shipped = {e.name[: -len(".yaml")] for e in (resources.files("alignctl.conf") / "reward").iterdir()
               if e.name.endswith(".yaml")}  # fmt: skip
    assert shipped == set(registry.REGISTRY)
    for name, entry in registry.REGISTRY.items():
        assert isinstance(entry, RewardEntry) and entry.name == name
        assert importlib.import_module(f"alignctl.rewards.{name}").ENTRY is entry
        assert dataclasses.is_dataclass(entry.schema) and issubclass(entry.schema, RewardConfig)
        if entry.schema is not RewardConfig:  # an option with fields of its own names itself by default
            assert entry.schema.__dataclass_fields__["name"].default == name


@pytest.mark.parametrize("name", ["sentiment", "classifier", "function"])
def test_the_yaml_comment_is_the_entrys_description(name):
    assert yaml_description(name) == registry.get(name).description


def test_only_exact_match_is_binary():
    assert [n for n, e in registry.REGISTRY.items() if e.binary] == ["exact_match"]


def test_get_names_the_valid_options():
    assert registry.get("classifier").name == "classifier"
    with pytest.raises(KeyError, match="'vader'; choose one of: classifier, exact_match, function, sentiment"):
        registry.get("vader")


def test_build_dispatches_on_the_name(tmp_path, monkeypatch):
    prompts, completions = ["The film was", "Q: 2+2=? A:"], [" great.", " The answer is 4."]
    assert registry.build(RewardConfig(name="sentiment"))(prompts, completions) == sentiment(prompts, completions)
    assert registry.build(RewardConfig(name="exact_match"), RewardContext())(prompts, completions) == exact_match(
        prompts, completions
    )
    (tmp_path / "registry_user_reward.py").write_text("def f(prompts, completions):\n    return [7] * len(prompts)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    schema = registry.get("function").schema
    assert registry.build(schema(function="registry_user_reward:f"))(prompts, completions) == [7.0, 7.0]
    with pytest.raises(KeyError):
        registry.build(RewardConfig(name="nope"))


def test_recipes_are_json_and_name_the_option():
    import json

    assert registry.get("sentiment").recipe(RewardConfig()) == {"name": "sentiment"}
    for name in ("sentiment", "exact_match"):
        assert json.dumps(registry.get(name).recipe(RewardConfig(name=name)))
    recipe = registry.get("function").recipe(registry.get("function").schema(function="json:dumps"))
    assert recipe["name"] == "function" and recipe["function"] == "json:dumps" and json.dumps(recipe)
