"""Every shipped option composes into a valid RunConfig, and value rules hold."""

import pytest

from alignctl import objectives
from alignctl.cli import listing
from alignctl.config import compose
from alignctl.config import schema as config


def test_default_is_dpo_with_reverse_kl():
    cfg = compose.compose_one([])
    assert cfg.objective.name == "dpo" and cfg.divergence.name == "reverse_kl"
    assert cfg.dataset.name == "toy_sentiment" and cfg.model.name == "tiny"


# Options that need other groups to fit: a dataset with no pairs needs an online objective and its reward; a hub or
# file dataset needs a hub model (model=tiny is built from an embedded task); required paths need a value.
HF = ["model=hf", "model.path=some/model"]
FITTING = {
    ("objective", "sft"): ["dataset=tldr", *HF],
    ("dataset", "toy_arith"): ["objective=grpo", "reward=exact_match"],
    ("dataset", "gsm8k"): ["objective=grpo", "reward=exact_match", *HF],
    ("dataset", "preference_file"): ["dataset.path=pairs.jsonl", *HF],
    ("dataset", "prompt_file"): ["dataset.path=prompts.jsonl", *HF],
    ("dataset", "binary_file"): ["objective=kto", "dataset.path=feedback.jsonl", *HF],  # KTO's data only
    **{("dataset", name): HF for name in ("hh_rlhf", "ultrafeedback", "tldr", "imdb")},
    ("reward", "exact_match"): ["objective=grpo", "dataset=toy_arith"],
    ("reward", "classifier"): ["reward.path=some/classifier"],
    ("reward", "function"): ["reward.function=my_module:score"],
    ("model", "hf"): ["model.path=some/model"],
    # distillation teachers are checked when the config is composed: {model_dir} is a directory with a config.json
    ("objective", "dckd"): ["objective.teacher={model_dir}"],
    ("objective", "adpa"): ["objective.teacher={model_dir}", "objective.teacher_reference={model_dir}"],
}


@pytest.fixture(scope="module")
def fitting(tmp_path_factory):
    """FITTING's overrides of an option, with {model_dir} filled in."""
    model_dir = tmp_path_factory.mktemp("model-dir")
    (model_dir / "config.json").write_text("{}")
    return lambda group, name: [o.format(model_dir=model_dir) for o in FITTING.get((group, name), [])]


@pytest.mark.parametrize("option", list(listing.options("objective")))
def test_every_objective_composes_with_its_default_divergence(option, fitting):
    cfg = compose.compose_one([f"objective={option}", *fitting("objective", option)])
    entry = objectives.get(option)
    assert cfg.objective.name == option
    assert cfg.divergence.name == entry.default_divergence
    assert config.hyperparameters(cfg.objective).keys() <= set(entry.loss.__kwdefaults__ or {})


@pytest.mark.parametrize("option", [o for o in listing.options("divergence") if o != "auto"])
def test_every_divergence_composes_with_an_objective_that_accepts_it(option):
    accepting = [n for n, e in objectives.REGISTRY.items()
                 if option in (e.divergences or ("none",)) and not e.model_options]  # (teachers: no path to give)
    assert accepting, f"no objective accepts divergence={option}"
    cfg = compose.compose_one([f"objective={accepting[0]}", f"divergence={option}"])
    assert cfg.divergence.name == option


@pytest.mark.parametrize("group", ["reward", "dataset", "model"])
def test_every_other_option_composes(group):
    for option in listing.options(group):
        cfg = compose.compose_one([f"{group}={option}", *FITTING.get((group, option), [])])
        assert getattr(cfg, group).name == option


def test_every_registered_objective_ships_a_yaml_and_vice_versa():
    assert set(listing.options("objective")) == set(objectives.REGISTRY)


def test_yaml_defaults_equal_loss_signature_defaults(fitting):
    """An objective's YAML states its defaults; they must agree with the loss function's."""
    for name in listing.options("objective"):
        cfg = compose.compose_one([f"objective={name}", *fitting("objective", name)])
        assert config.hyperparameters(cfg.objective) == {
            k: v for k, v in (objectives.get(name).loss.__kwdefaults__ or {}).items() if k != "divergence"
        }


def test_overrides_reach_the_typed_config():
    cfg = compose.compose_one(["objective=fdpo", "divergence=alpha", "divergence.alpha=0.3", "train.max_steps=7"])
    assert (cfg.divergence.alpha, cfg.train.max_steps, cfg.objective.name) == (0.3, 7, "fdpo")
    assert cfg.divergence.build().alpha == 0.3
