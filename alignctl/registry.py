"""Registries by discovery: every module of a package that defines an entry under a known name is registered, so
adding an objective, a dataset or a reward is its module, its YAML and its test, never a line in a table."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

T = TypeVar("T")


def discover(packages: tuple[str, ...], attribute: str, kind: type[T]) -> dict[str, T]:
    """name -> entry for every module `<package>.<name>` (not starting with "_") whose `attribute` is a `kind`;
    the entry's `name` must be its module's name (one name everywhere)."""
    found: dict[str, T] = {}
    for package_name in packages:
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            entry = getattr(importlib.import_module(f"{package_name}.{info.name}"), attribute, None)
            if isinstance(entry, kind):
                if entry.name != info.name:
                    raise RuntimeError(f"{package_name}.{info.name}.{attribute} is named {entry.name!r}, not its module's")
                found[entry.name] = entry
    return found


def lookup(registry: dict[str, T], name: str, what: str) -> T:
    """The entry for `name`; a KeyError naming the valid options otherwise."""
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}") from None
