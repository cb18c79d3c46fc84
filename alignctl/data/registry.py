"""The dataset registry: option name -> DatasetEntry (name == module name == the config's `dataset=` option).

Every module of alignctl.data.sources and the embedded tasks (alignctl.data.tasks.toy_*) that defines `ENTRY` is
registered: adding a dataset is its module, its YAML and its test.
"""

from __future__ import annotations

import importlib
import pkgutil

from alignctl.data.base import DatasetEntry

_PACKAGES = ("alignctl.data.tasks", "alignctl.data.sources")


def _discover() -> dict[str, DatasetEntry]:
    found: dict[str, DatasetEntry] = {}
    for package_name in _PACKAGES:
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            entry = getattr(importlib.import_module(f"{package_name}.{info.name}"), "ENTRY", None)
            if isinstance(entry, DatasetEntry):
                if entry.name != info.name:
                    raise RuntimeError(f"{package_name}.{info.name}.ENTRY is named {entry.name!r}, not its module's")
                found[entry.name] = entry
    return found


REGISTRY: dict[str, DatasetEntry] = _discover()


def get(name: str) -> DatasetEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; choose one of: {', '.join(REGISTRY)}") from None


def data_kinds(entry: DatasetEntry) -> tuple[str, ...]:
    """What a dataset can feed objectives: pairs, ranked candidates and negatives (read from preference rows, or
    sampled from the SFT model and scored by the reward for prompt rows), prompts to sample groups for, and
    completions to imitate (objective=sft) where the rows have them."""
    kinds = ("pairs", "candidates", "negatives", "groups")
    return (*kinds, "sft") if entry.rows == "preferences" or entry.completions else kinds
