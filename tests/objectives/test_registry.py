"""The registry and the contract every objective module follows."""

from __future__ import annotations

import importlib
import inspect

import pytest

from alignctl import objectives
from alignctl.divergences import NAMES
from alignctl.objectives.base import DATA_KINDS, Objective

EXPECTED = {  # name -> (hyperparameter defaults, data kind, needs_reference, accepted divergences)
    "dpo": ({"beta": 0.1}, "pairs", True, set(NAMES)),
    "ipo": ({"tau": 0.1}, "pairs", True, set(NAMES)),
    "fdpo": ({"beta": 0.1}, "pairs", True, set(NAMES)),
    "tdpo1": ({"beta": 0.1}, "pairs", True, set(NAMES)),
    "tdpo2": ({"beta": 0.1, "alpha": 0.5}, "pairs", True, set(NAMES)),
    "simpo": ({"beta": 2.0, "gamma_beta_ratio": 0.5}, "pairs", False, set()),
    "rpo": ({"beta": 0.01, "eta": 0.005}, "pairs", True, {"reverse_kl"}),
    "asft": ({"lam": 0.1}, "pairs", False, set()),
    "adpo": ({"tau": 10.0, "beta_r": 0.5, "zscore": False}, "candidates", True, {"reverse_kl"}),
    "d2o": ({"beta": 0.1, "alpha": 0.1}, "negatives", True, {"reverse_kl"}),
    # online: its divergence term reads stored log-probs; `none` is plain GRPO/DAPO
    "grpo": ({"divergence_coef": 0.01}, "groups", False, {*NAMES, "none"}),
    "disco": (
        {"score": "logL", "dro": True, "tau": None, "delta": 1e-4, "constraint_weight": 1e3, "positive_threshold": 0.5},
        "groups", False, set(),
    ),
    "fdpg": ({"beta": 0.1}, "groups", True, set(NAMES)),  # pi_0's log-probs of the policy's samples
}


def test_registry_keys_are_module_names():
    assert set(objectives.REGISTRY) == set(EXPECTED)
    for name, entry in objectives.REGISTRY.items():
        module = importlib.import_module(f"alignctl.objectives.{name}")
        assert entry is module.OBJECTIVE and entry.name == name and entry.loss is module.loss
        assert objectives.get(name) is entry


def test_get_unknown_lists_valid_names():
    with pytest.raises(KeyError, match="dpo.*d2o"):
        objectives.get("orpo")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entry_and_signature(name):
    defaults, data, needs_ref, divs = EXPECTED[name]
    entry: Objective = objectives.REGISTRY[name]
    assert entry.data == data and entry.data in DATA_KINDS
    assert entry.needs_reference is needs_ref
    assert set(entry.divergences) == divs and set(entry.divergences) <= {*NAMES, "none"}
    assert entry.needs_token_divergence == name.startswith("tdpo")
    assert entry.description and "\n" not in entry.description
    params = list(inspect.signature(entry.loss).parameters.values())
    assert params[0].kind is params[0].POSITIONAL_OR_KEYWORD
    assert params[1].name == "divergence" and params[1].kind is params[1].KEYWORD_ONLY
    assert params[1].default is inspect.Parameter.empty  # the caller always says which divergence (or None)
    hyper = {p.name: p.default for p in params[2:]}
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:])
    assert hyper == defaults
    doc = inspect.getmodule(entry.loss).__doc__
    assert "arXiv" in doc


def test_default_divergences():
    got = {n: e.default_divergence for n, e in objectives.REGISTRY.items()}
    assert got == {"dpo": "reverse_kl", "ipo": "reverse_kl", "fdpo": "js", "tdpo1": "forward_kl",
                   "tdpo2": "forward_kl", "simpo": "none", "rpo": "reverse_kl", "asft": "none",
                   "adpo": "reverse_kl", "d2o": "reverse_kl", "grpo": "forward_kl",
                   "disco": "none", "fdpg": "js"}
