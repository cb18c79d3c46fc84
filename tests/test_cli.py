"""CLI behaviour: bad input ends in one line naming field, value and choices, exit code 2, before any load."""

import pytest

from alignctl.cli import main as cli

pytestmark = pytest.mark.usefixtures("nothing_loads")  # tests/conftest.py: bad input fails before any load


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "objective=foo"], ["objective=foo", "dpo", "fdpo", "ipo"]),
        (["train", "objective.gamma=1"], ["objective.gamma", "beta"]),
        (["train", "train.max_stepz=3"], ["train.max_stepz", "max_steps"]),
        (["train", "nonsense=3"], ["nonsense", "objective", "train"]),
        (["train", "train.max_steps=abc"], ["train.max_steps", "abc"]),
        (["train", "divergence=alpha", "divergence.alpha=1.5"], ["divergence.alpha=1.5", "(0, 1)"]),
        (["train", "objective.beta=0"], ["objective.beta=0", "> 0"]),
        (["train", "objective=ipo", "objective.tau=-1"], ["objective.tau=-1", "> 0"]),
        (["train", "train.max_steps=0"], ["train.max_steps=0", "> 0"]),
        (["train", "divergence=kl"], ["divergence=kl", "reverse_kl", "forward_kl", "js", "alpha"]),
        (["train", "objective=dpo", "divergence=none"], ["divergence=none", "objective=dpo", "reverse_kl"]),
        (["train", "tracking=tensorboard"], ["tracking='tensorboard'", "wandb, none"]),
        (["train", "model.kernel=fast"], ["model.kernel='fast'", "fused, naive"]),
        (["train", "eval.rollout=fast"], ["eval.rollout='fast'", "transformers, vllm"]),
        (["train", "train.on_nonfinite=ignore"], ["train.on_nonfinite='ignore'", "stop, skip_step"]),
        (["train", "divergence=reverse_kl,js"], ["divergence", "-m"]),
        (["train", "-m", "divergence=reverse_kl,kl"], ["divergence=kl", "reverse_kl"]),
        (["train", "--frobnicate"], ["--frobnicate", "-m"]),
        (["train", "objective=sft"], ["dataset=toy_sentiment", "objective=sft", "hh_rlhf"]),
        (["train", "dataset=hh_rlhf"], ["model=tiny", "model=hf", "toy_sentiment"]),
        (["train", "model=hf"], ["model.path", "required"]),
        (["train", "dataset=/data/pairs.jsonl"], ["dataset=preference_file", "dataset.path=/data/pairs.jsonl"]),
        (["train", "model=EleutherAI/pythia-410m"], ["model=hf model.path=EleutherAI/pythia-410m"]),
        (["train", "model=hf", "model.path=m", "model.dtype=fp8"], ["model.dtype='fp8'", "bfloat16"]),
        (["train", "model=hf", "model.path=m", "model.lora.r=-1"], ["model.lora.r=-1", ">= 0"]),
        (["train", "model=hf", "model.path=m", "dataset=preference_file"], ["dataset.path", "required"]),
        (["train", "model=hf", "model.path=m", "dataset=tldr", "dataset.max_rows=0"], ["dataset.max_rows=0", "> 0"]),
        (["train", "reward=classifier"], ["reward.path"]),
        (["train", "reward=classifier", "reward.path=x", "reward.mode=prob"], ["reward.mode=prob", "pos_minus_neg"]),
        (["train", "reward=function", "reward.function=nocolon"], ["reward.function=nocolon", ":"]),
        (["train", "objective.beta=inf"], ["objective.beta=inf", "finite"]),
        (["train", "objective.beta=nan"], ["objective.beta=nan", "finite"]),
        (["train", "train.learning_rate=-inf"], ["train.learning_rate=-inf"]),
        (["train", "+objective.bta=0.5"], ["objective.bta", "beta"]),
        (["train", "+unknown.key=1"], ["unknown", "objective"]),
        (["train", "++unknown=1"], ["unknown", "train"]),
        (["train", "+train.max_stepz=3"], ["train.max_stepz", "max_steps"]),
        (["train", "beta=0.1"], ["beta", "did you mean objective.beta?"]),
        (["train", "model.chat_template={% if x %}"], ["model.chat_template", "quote"]),
        (["train", "model=hf", "model.path=modèle"], ["model.path=modèle", "non-ASCII", "model.path='modèle'"]),
        (["train", "objective=grpo", "model.reference=/x"], ["model.reference=/x", "objective=grpo"]),
        (["train", "objective=grpo", "dataset=toy_arith"], ["reward=sentiment", "dataset=toy_arith", "exact_match"]),
        (["train", "objective=grpo", "reward=exact_match"], ["reward=exact_match", "toy_sentiment", "sentiment"]),
        (["train", "objective=grpo", "divergence=kl"], ["divergence=kl", "forward_kl", "none"]),
        (["train", "objective=grpo", "train.batch_size=6"], ["train.batch_size=6", "train.num_generations=4"]),
        (["train", "objective=grpo", "objective.divergence_coef=-1"], ["objective.divergence_coef=-1", ">= 0"]),
        (["train", "objective=grpo", "train.num_generations=0"], ["train.num_generations=0", "> 0"]),
        (["fly"], ["fly", "train", "eval", "ls"]),
        (["ls", "objectives"], ["objectives", "objective"]),
        (["eval"], ["run_dir", "model_dir"]),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, expected):
    code, err = run_cli(capsys, *argv)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("alignctl: error: ")
    for fragment in expected:
        assert fragment in err, (fragment, err)


def test_eval_of_missing_run_dir(capsys, tmp_path):
    code, err = run_cli(capsys, "eval", f"run_dir={tmp_path / 'nope'}")
    assert code == 2 and "not an alignctl run directory" in err and len(err.splitlines()) == 1


def test_eval_of_corrupt_run_dir(capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("objective: [unclosed\n")
    code, err = run_cli(capsys, "eval", f"run_dir={tmp_path}")
    assert code == 2 and "corrupt" in err and len(err.splitlines()) == 1


def test_eval_of_model_dir_that_is_not_a_model(capsys, tmp_path):
    code, err = run_cli(capsys, "eval", f"model_dir={tmp_path}", f"eval.reference={tmp_path}")
    assert code == 2 and "config.json" in err


def test_help_and_ls(capsys):
    assert cli.main([]) == 0
    assert "alignctl train" in capsys.readouterr().out
    assert cli.main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "objective" in out and "divergence" in out
    assert cli.main(["ls", "objective"]) == 0
    out = capsys.readouterr().out
    for name in ("dpo", "fdpo", "ipo", "reverse_kl", "pairs"):
        assert name in out


def test_eval_of_a_run_takes_only_eval_overrides(capsys, tmp_path):
    from alignctl.config import compose

    compose.save_resolved(compose.compose_one([]), tmp_path)
    code, err = run_cli(capsys, "eval", f"run_dir={tmp_path}", "objective.beta=5")
    assert code == 2 and "objective.beta=5" in err and "eval.*" in err
    code, err = run_cli(capsys, "eval", f"run_dir={tmp_path}", "eval.num_prompt=8")
    assert code == 2 and "unknown key eval.num_prompt" in err and "num_prompts" in err and "corrupt" not in err


def test_version_and_help_of_every_command(capsys):
    from importlib.metadata import version

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"alignctl {version('alignctl')}"
    assert cli.main(["train", "--help", "objective=ipo"]) == 0
    out = capsys.readouterr().out
    assert "usage: alignctl train" in out and "tau: 0.1" in out and "max_steps: 200" in out
    assert cli.main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: alignctl eval" in out and "num_prompts: 64" in out
    assert cli.main(["ls", "--help"]) == 0
    assert "usage: alignctl ls" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["train", "+objective.bta=0.5", "train.max_steps=1", "eval.enabled=false", "tracking=none"],
    ["train", "objective=grpo", "divergence=js", "objective.kl_estimator=low_var_kl", "dataset=toy_arith",
     "reward=exact_match"],
    ["train", "objective=kto", "divergence=js"],  # KTO's reference point is a KL estimate: reverse KL only
    ["train", "objective=kto", "train.batch_size=1"],  # no other row to pair a prompt with
    ["eval", "run_dir=/nonexistent/run"],
    ["eval", "model_dir=/nonexistent/model"],
    ["train", "model.reference=soup", "model.soup=[/nonexistent/a,/nonexistent/b]"],
    ["train", "model=hf", "model.path=/nonexistent/model"],
    ["train", "reward=classifier", "reward.path=/nonexistent/classifier"],
    ["train", "objective=disco", "dataset=toy_arith", "reward=exact_match", "reward.calibrate=true",
     "reward.transform=bon", "reward.n=4"],
])  # fmt: skip
def test_bad_input_fails_before_torch_or_transformers_load(argv, tmp_path):
    """Checking a command line needs neither library (their import takes seconds, a minute on a cold disk): a fresh
    interpreter fails with one line and exit 2 and has imported neither (alignctl.lazy)."""
    import subprocess
    import sys

    probe = ("import sys; from alignctl.cli import main as cli\ntry: cli.main(sys.argv[1:])\nexcept SystemExit as e: code = e.code\n"
             "print(code, [m for m in ('torch', 'transformers', 'trl') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.strip() == "2 []", (out.stdout, out.stderr)
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("alignctl: error: ")
