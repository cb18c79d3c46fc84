"""The objective registry: name -> Objective (name == module name == the config's `objective=` option).

Each module holds only its math: a pure `loss(stats, *, divergence, **hyperparameters)` and an `OBJECTIVE` entry
describing what it accepts and needs (alignctl.objectives.base). Every module here that defines `OBJECTIVE` is
registered: adding an objective is its module, its YAML and its test.
"""

from __future__ import annotations

import importlib
import pkgutil

from alignctl.objectives.base import Objective


def _discover() -> dict[str, Objective]:
    found: dict[str, Objective] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        entry = getattr(importlib.import_module(f"{__name__}.{info.name}"), "OBJECTIVE", None)
        if isinstance(entry, Objective):
            if entry.name != info.name:
                raise RuntimeError(f"alignctl.objectives.{info.name}.OBJECTIVE is named {entry.name!r}, not its module's")
            found[entry.name] = entry
    return found


REGISTRY: dict[str, Objective] = _discover()


def get(name: str) -> Objective:
    """The registry entry for `name`; KeyError naming the valid objectives otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; choose one of: {', '.join(REGISTRY)}") from None


__all__ = ["REGISTRY", "Objective", "get"]
