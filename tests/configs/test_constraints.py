"""Value rules declared in annotations (alignctl.constraints): read from dataclass fields and loss signatures,
inherited, checked with one line naming the field, the value and the rule; every numeric option declares one."""

import dataclasses
from dataclasses import dataclass
from typing import Annotated

import pytest

from alignctl import constraints, objectives
from alignctl.config import schema
from alignctl.constraints import BelowHalf, NonNegative, Positive, check_ranges, field_rules
from alignctl.data import registry as data_registry
from alignctl.errors import ConfigError
from alignctl.models import schema as model_schema


@dataclass
class _Base:
    steps: Annotated[int, Positive] = 1
    seed: Annotated[int, NonNegative] = 0
    plain: float = -3.0  # no rule: any finite value


@dataclass
class _Child(_Base):
    noise: Annotated[float, BelowHalf] = 0.0
    seed: int = 0  # redeclared without a rule: the child's declaration wins


def test_rules_come_from_annotations_and_are_inherited():
    assert field_rules(_Base) == {"steps": Positive, "seed": NonNegative}
    assert field_rules(_Child) == {"steps": Positive, "noise": BelowHalf}
    # string annotations (`from __future__ import annotations` modules) are evaluated field by field
    assert field_rules(model_schema.TinyModelConfig)["hidden_size"] is Positive


@pytest.mark.parametrize("node,line", [
    (_Child(steps=0), "g.steps=0 is out of range; it must be > 0"),
    (_Child(noise=0.5), "g.noise=0.5 is out of range; it must lie in [0, 0.5)"),
    (_Base(seed=-1), "g.seed=-1 is out of range; it must be >= 0"),
    (_Base(plain=float("nan")), "g.plain=nan is not a finite number"),
])  # fmt: skip
def test_out_of_range_is_one_line(node, line):
    with pytest.raises(ConfigError) as e:
        check_ranges("g", node)
    assert str(e.value) == line


def test_in_range_passes():
    check_ranges("g", _Child(steps=3, noise=0.49, seed=-5, plain=-1e9))  # the child's seed has no rule


def test_an_objectives_rules_are_its_signatures():
    dpo = schema.objective_schema(objectives.get("dpo"))
    assert field_rules(dpo) == {"beta": Positive}
    with pytest.raises(ConfigError, match=r"objective.beta=0.0 is out of range; it must be > 0"):
        dpo(beta=0.0)
    adpo = {name: rule for name, _, rule in schema.hyperparameter_rules(objectives.get("adpo"))}
    assert adpo["tau"] is Positive and adpo["zscore"] is None and "label_noise" not in adpo  # a dataset option now


@pytest.mark.parametrize("name", sorted(data_registry.REGISTRY))
def test_every_dataset_has_label_noise_in_0_to_one_half(name):
    cls = data_registry.get(name).schema
    assert field_rules(cls)["label_noise"] is BelowHalf
    assert {f.name: f.default for f in dataclasses.fields(cls)}["label_noise"] == 0.0


# Numeric options that may take any finite value (no rule), each for a reason.
UNCONSTRAINED = {
    ("disco", "positive_threshold"),  # a reward threshold: rewards may be negative
}


def _schemas():
    fixed = [schema.TrainConfig, schema.EvalConfig, schema.LauncherConfig, schema.DistributedConfig,
             model_schema.LoraConfig, model_schema.TinyModelConfig, model_schema.TinyLargeModelConfig,
             model_schema.HFModelConfig]  # fmt: skip
    yield from ((cls.__name__, cls) for cls in fixed)
    yield from ((name, entry.schema) for name, entry in data_registry.REGISTRY.items())
    yield from ((name, schema.objective_schema(entry)) for name, entry in objectives.REGISTRY.items())


@pytest.mark.parametrize("owner,cls", list(_schemas()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_numeric_option_declares_a_rule(owner, cls):
    """A new numeric hyperparameter or setting cannot silently go unchecked: it declares its rule (or is listed
    above with the reason it has none)."""
    rules = field_rules(cls)
    hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    numeric = [name for name, hint in hints.items() if ("int" in hint or "float" in hint) and "bool" not in hint]
    missing = [name for name in numeric if name not in rules and (owner, name) not in UNCONSTRAINED]
    assert missing == []


def test_rule_texts_read_as_ranges():
    assert [r.text for r in (constraints.Positive, constraints.UnitBelowOne)] == ["be > 0", "lie in [0, 1)"]
