"""Experiment presets (+experiment=<name>): every arm of every preset composes into a valid run, `alignctl ls
experiment` names the paper each follows, and an unknown name lists the valid ones."""

import itertools
from importlib import resources

import pytest
from omegaconf import OmegaConf

from alignctl.cli import listing
from alignctl.cli import main as cli
from alignctl.config import compose
from alignctl.run import launch

EXPERIMENTS = sorted(listing.options("experiment"))


def sweep_params(name):
    return OmegaConf.load(resources.files("alignctl.conf") / "experiment" / f"{name}.yaml").hydra.sweeper.params


def test_the_presets_the_papers_need_are_there():
    assert {"fdpo_divergences", "tdpo", "dph_rl", "disco_vs_grpo", "simpo", "label_noise"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_preset_declares_its_comparison(name):
    """The claim the sweep tests, its source and the metrics its verdict reads, in the preset (config.comparison)."""
    cfg = compose.compose_one([f"+experiment={name}"]).comparison
    assert cfg.claim and len(cfg.claim) > 40 and "arXiv" in cfg.source and cfg.metrics


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_arm_and_seed_composes(name):
    params = sweep_params(name)
    values = [[f"{key}={v}" for v in str(choices).split(",")] for key, choices in params.items()]
    jobs = [compose.compose_one([f"+experiment={name}", *job]) for job in itertools.product(*values)]
    assert len(jobs) == len(list(itertools.product(*values))) and len(jobs) >= 6
    assert sorted({job.train.seed for job in jobs}) == [0, 1, 2]
    arms = {(repr(job.objective), job.divergence.name, job.divergence.alpha, job.train.learning_rate,
             job.dataset.label_noise) for job in jobs}  # fmt: skip
    assert len(arms) == len(jobs) // 3  # every arm is a different run


@pytest.mark.parametrize(("name", "arm", "expected"), [
    ("fdpo_divergences", "alpha0.3", ("fdpo", "alpha", 0.3)),
    ("fdpo_divergences", "js", ("fdpo", "js", None)),
    ("tdpo", "tdpo2_alpha0.1", ("tdpo2", "forward_kl", None)),
    ("dph_rl", "forward_kl", ("grpo", "forward_kl", None)),
    ("disco_vs_grpo", "grpo", ("grpo", "none", None)),
    ("simpo", "simpo_beta10", ("simpo", "none", None)),
    ("simpo", "dpo", ("dpo", "reverse_kl", None)),
])  # fmt: skip
def test_arms_set_what_their_names_say(name, arm, expected):
    cfg = compose.compose_one([f"+experiment={name}", f"+arm/{name}={arm}"])
    assert (cfg.objective.name, cfg.divergence.name, cfg.divergence.alpha) == expected


def test_online_presets_report_pass_at_k_up_to_32():
    for name in ("dph_rl", "disco_vs_grpo"):
        cfg = compose.compose_one([f"+experiment={name}"])
        assert cfg.eval.samples_per_prompt >= 32 and cfg.dataset.name == "toy_arith"


def test_ls_experiment_names_each_paper(capsys):
    assert cli.main(["ls", "experiment"]) == 0
    out = capsys.readouterr().out
    for name, paper in [("fdpo_divergences", "2309.16240"), ("tdpo", "2404.11999"), ("dph_rl", "2509.07430"),
                        ("disco_vs_grpo", "2505.12366"), ("simpo", "2405.14734")]:  # fmt: skip
        assert name in out and paper in out


def test_an_unknown_experiment_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "+experiment=fdpo_divergence"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "experiment=fdpo_divergence is not a valid option" in err and "fdpo_divergences" in err


def test_a_preset_sweep_is_validated_job_by_job_before_it_runs():
    """`alignctl train -m +experiment=...` composes every arm x seed up front, as Hydra's sweeper will run them; a
    command-line value replaces the preset's (one seed instead of three)."""
    assert len(launch.validate(["+experiment=fdpo_divergences"], multirun=True)) == 18
    one_seed = launch.validate(["+experiment=dph_rl", "train.seed=0"], multirun=True)
    assert [(job.divergence.name, job.train.seed) for job in one_seed] == [
        ("none", 0), ("reverse_kl", 0), ("forward_kl", 0), ("js", 0)
    ]
    with pytest.raises(compose.UsageError, match="objective.beta=-1"):
        launch.validate(["+experiment=fdpo_divergences", "objective.beta=-1"], multirun=True)
