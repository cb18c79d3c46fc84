"""The objective registry: name -> Objective (name == module name == the config's `objective=` option).

Each module holds only its math: a pure `loss(stats, *, divergence, **hyperparameters) -> ObjectiveOutput` and an
`OBJECTIVE` entry describing what it accepts and needs (alignctl.objectives.base).
"""

from __future__ import annotations

from alignctl.objectives import adpo, asft, d2o, disco, dpo, fdpg, fdpo, grpo, ipo, rpo, simpo, tdpo1, tdpo2
from alignctl.objectives.base import Objective

REGISTRY: dict[str, Objective] = {
    m.OBJECTIVE.name: m.OBJECTIVE for m in (dpo, ipo, fdpo, tdpo1, tdpo2, simpo, rpo, asft, adpo, d2o, grpo, disco, fdpg)
}


def get(name: str) -> Objective:
    """The registry entry for `name`; KeyError naming the valid objectives otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; choose one of: {', '.join(REGISTRY)}") from None


__all__ = ["REGISTRY", "Objective", "get"]
