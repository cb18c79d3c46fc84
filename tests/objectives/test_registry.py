"""The registry and the contract every objective module follows (each objective's own facts: its test file)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from alignctl import objectives
from alignctl.divergences import NAMES
from alignctl.objectives.base import DATA_KINDS, Objective


def test_registry_keys_are_module_names():
    for name, entry in objectives.REGISTRY.items():
        module = importlib.import_module(f"alignctl.objectives.{name}")
        assert entry is module.OBJECTIVE and entry.name == name and entry.loss is module.loss
        assert objectives.get(name) is entry


def test_get_unknown_lists_valid_names():
    with pytest.raises(KeyError, match="dpo.*d2o|d2o.*dpo"):
        objectives.get("no_such_objective")


@pytest.mark.parametrize("name", sorted(objectives.REGISTRY))
def test_entry_and_signature(name):
    entry: Objective = objectives.REGISTRY[name]
    assert entry.data in DATA_KINDS
    assert set(entry.divergences) <= {*NAMES, "none"}
    assert entry.default_divergence in (*entry.divergences, "none")
    assert entry.needs_token_divergence == (name.startswith("tdpo") or name == "dckd")  # dckd: teacher's, as TDPO's
    assert entry.description and "\n" not in entry.description
    params = list(inspect.signature(entry.loss).parameters.values())
    assert params[0].kind is params[0].POSITIONAL_OR_KEYWORD
    assert params[1].name == "divergence" and params[1].kind is params[1].KEYWORD_ONLY
    assert params[1].default is inspect.Parameter.empty  # the caller always says which divergence (or None)
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:])
    doc = inspect.getmodule(entry.loss).__doc__
    assert doc and ("arXiv" in doc or "TRL" in doc)  # the paper (or, for SFT, the trainer whose loss it is)
