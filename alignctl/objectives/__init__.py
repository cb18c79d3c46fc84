"""The objective registry: name -> Objective (name == module name == the config's `objective=` option).

Each module holds only its math: a pure `loss(stats, *, divergence, **hyperparameters)` and an `OBJECTIVE` entry
describing what it accepts and needs (alignctl.objectives.base). Every module here that defines `OBJECTIVE` is
registered: adding an objective is its module, its YAML and its test.
"""

from __future__ import annotations

from alignctl.objectives.base import Objective
from alignctl.registry import discover, lookup

REGISTRY: dict[str, Objective] = discover((__name__,), "OBJECTIVE", Objective)


def get(name: str) -> Objective:
    """The registry entry for `name`; KeyError naming the valid objectives otherwise."""
    return lookup(REGISTRY, name, "objective")


__all__ = ["REGISTRY", "Objective", "get"]
