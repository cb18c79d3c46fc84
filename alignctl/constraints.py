"""Value rules of config fields, declared once, in the field's annotation: ``beta: Annotated[float, Positive] = 0.1``
(an objective's hyperparameter in its loss signature, any other group's field in its schema dataclass). The range
checks, `alignctl ls`, `--help` and the docs tables read them from there. Any numeric field must also be finite."""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignctl.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A value rule: `holds(value)`, and `text` finishes "it must ..." in the error line and reads as the range in
    listings (e.g. "be > 0")."""

    text: str
    holds: Callable[[float], bool]

    def __repr__(self) -> str:
        return self.text


Positive = Rule("be > 0", lambda v: v > 0)
NonNegative = Rule("be >= 0", lambda v: v >= 0)
AtLeastOne = Rule("be >= 1", lambda v: v >= 1)
BelowHalf = Rule("lie in [0, 0.5)", lambda v: 0 <= v < 0.5)  # a share of flipped labels: 0.5 would be noise
OpenUnit = Rule("lie in (0, 1)", lambda v: 0 < v < 1)
UnitBelowOne = Rule("lie in [0, 1)", lambda v: 0 <= v < 1)
Probability = Rule("lie in [0, 1]", lambda v: 0 <= v <= 1)


def rule_of(annotation: Any) -> Rule | None:
    """The Rule an `Annotated[T, rule]` annotation carries, else None."""
    if typing.get_origin(annotation) is typing.Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Rule)), None)
    return None


def field_rules(cls: type) -> dict[str, Rule]:
    """field name -> Rule, for the fields of a dataclass that declare one (inherited fields included)."""
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, str):  # `from __future__ import annotations`: evaluate this one field only
                annotation = eval(annotation, vars(sys.modules[klass.__module__]))  # our own source's annotation
            rule = rule_of(annotation)
            if rule is not None:
                rules[name] = rule
            else:
                rules.pop(name, None)
    return rules


def check_ranges(group: str, node: Any) -> None:
    """Every numeric field of a config dataclass is finite and meets its declared Rule."""
    rules = field_rules(type(node))
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{group}.{f.name}={value} is not a finite number")
        rule = rules.get(f.name)
        if rule is not None and not rule.holds(value):
            raise ConfigError(f"{group}.{f.name}={value} is out of range; it must {rule.text}")


def ranged(group: str, choices: dict[str, tuple[str, ...]] | None = None):
    """A dataclass __post_init__ that checks ranges and the given string fields' choices."""

    def __post_init__(self) -> None:
        check_ranges(group, self)
        for name, valid in (choices or {}).items():
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"{group}.{name}={getattr(self, name)!r} is not valid; choose one of: {', '.join(valid)}"
                )

    return __post_init__
