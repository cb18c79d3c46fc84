"""Run and sweep directory names: what sets a run apart, and a sweep's own directory claimed once."""

import datetime

import hydra.core.utils
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from omegaconf import OmegaConf

from alignctl import objectives
from alignctl.config import compose
from alignctl.config.run_names import MAX_LENGTH, run_name
from alignctl.run import launch, rundir


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "dpo-reverse_kl"),
        (["objective=dpo", "objective.beta=0.3", "train.seed=2"], "dpo-reverse_kl-beta0.3-seed2"),
        (["dataset=toy_arith", "+model.lora.r=16"], "dpo-reverse_kl-toy_arith-r16"),
        (["dataset.path=/data/my pairs.jsonl", "model.path=runs/sft/model/"], "dpo-reverse_kl-my_pairs-model"),
        (["+experiment=tdpo", "+arm/tdpo=tdpo2_alpha0.1", "train.seed=1"], "dpo-reverse_kl-tdpo-tdpo2_alpha0.1-seed1"),
        (["+arm/dph_rl=reverse_kl", "train.seed=1"], "dpo-reverse_kl-seed1"),  # no part twice
        (["eval.enabled=false", "model.gradient_checkpointing=true"], "dpo-reverse_kl-no_enabled-gradient_checkpointing"),
        (["model.lora.target_modules=[q_proj,v_proj]"], "dpo-reverse_kl-target_modules_q_proj_v_proj"),
        # how a run resumes, threads or is tracked never tells two results apart; hydra.* is not the run's
        (["train.resume=auto", "train.num_threads=2", "tracking=none", "hydra.run.dir=x"], "dpo-reverse_kl"),
    ],
)
def test_run_name_says_what_sets_the_run_apart(overrides, expected):
    assert run_name("dpo", "reverse_kl", overrides) == expected


def test_run_name_leaves_out_excluded_keys_and_caps_its_length():
    assert run_name("fdpo", "js", ["train.seed=1", "objective.beta=0.2"], exclude=["train.seed"]) == "fdpo-js-beta0.2"
    long = run_name("dpo", "reverse_kl", [f"dataset.key{i}=value{i}" for i in range(40)])
    other = run_name("dpo", "reverse_kl", [f"dataset.key{i}=value{i}" for i in range(39)] + ["dataset.key39=x"])
    assert len(long) <= MAX_LENGTH and len(other) <= MAX_LENGTH and long != other  # cut, then told apart by hash


def test_the_configured_run_dir_names_the_divergence_used_and_the_overrides(tmp_path):
    overrides = ["objective=fdpo", "divergence=alpha", "divergence.alpha=0.3", "train.seed=2", "tracking=none"]
    with initialize_config_module(compose.CONFIG_MODULE, version_base=None):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
        cfg.hydra.overrides.task = overrides  # what Hydra's run sets; compose leaves it empty
        name = OmegaConf.select(cfg, "hydra.run.dir")
        auto = hydra_compose("config", overrides=["objective=tdpo2"], return_hydra_config=True)
        auto.hydra.overrides.task = ["objective=tdpo2"]
        auto_name = OmegaConf.select(auto, "hydra.run.dir")
    assert name.startswith("runs/") and name.endswith("-fdpo-alpha-alpha0.3-seed2")
    own = objectives.REGISTRY["tdpo2"].default_divergence  # divergence=auto names the objective's own divergence
    assert own != "auto" and auto_name.endswith(f"-tdpo2-{own}")


class FrozenClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 12, 1, 12, 0, 0)


def test_two_sweeps_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    """Hydra's ${now:} gives both the same sweep dir (and one multirun.yaml): each sweep claims its own first, and
    its jobs are named by the values swept, not by those every job shares."""
    monkeypatch.chdir(tmp_path)
    # the same second for both, as ${now:} gives two sweeps started together
    monkeypatch.setattr(hydra.core.utils, "datetime", FrozenClock)
    overrides = ["objective=fdpo", "divergence=alpha", "divergence.alpha=0.3,0.5", "train.max_steps=1"]
    jobs = launch.validate(overrides, multirun=True)
    first = launch._sweep_overrides(overrides, jobs)
    second = launch._sweep_overrides(overrides, jobs)
    dirs = [next(o for o in extra if o.startswith("hydra.sweep.dir=")) for extra in (first, second)]
    assert dirs[0] != dirs[1]
    base = dirs[0].split("=", 1)[1].strip("'")
    assert base == "runs/20261201-120000-sweep" and dirs[1] == f"hydra.sweep.dir='{base}-2'"
    assert (tmp_path / base).is_dir() and (tmp_path / f"{base}-2").is_dir()
    assert "hydra.job.config.override_dirname.exclude_keys=[divergence,objective,train.max_steps]" in first


def test_a_sweep_the_user_names_is_left_as_named_and_resume_needs_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = ["divergence=js,reverse_kl", f"hydra.sweep.dir={tmp_path / 'mine'}"]
    extra = launch._sweep_overrides(named, launch.validate(named, multirun=True))
    assert not any(o.startswith("hydra.sweep.dir=") for o in extra) and not (tmp_path / "runs").exists()
    resumed = ["divergence=js,reverse_kl", "train.resume=true"]
    with pytest.raises(compose.UsageError, match="name it with hydra.sweep.dir"):
        launch._sweep_overrides(resumed, launch.validate(resumed, multirun=True))


def test_claim_sweep_dir_counts_on(tmp_path):
    assert [rundir.claim_sweep_dir(tmp_path / "s").name for _ in range(3)] == ["s", "s-2", "s-3"]


def test_a_rank_removes_the_directory_it_named_itself_only_when_it_holds_nothing_but_empty_logs(tmp_path):
    # a rank other than 0 resolves ${now:} a second after rank 0: Hydra made that dir and opened an empty job log
    own = tmp_path / "20261202-073719-dpo"
    own.mkdir()
    (own / "compose.log").touch()
    rundir.remove_if_only_logs(own)
    assert not own.exists()
    kept = tmp_path / "20261202-073720-dpo"  # anything else in it (here a log with records): left alone
    kept.mkdir()
    (kept / "compose.log").write_text("WARNING something\n")
    rundir.remove_if_only_logs(kept)
    assert (kept / "compose.log").is_file()
    rundir.remove_if_only_logs(tmp_path / "missing")  # nothing to do
