"""dataset.label_noise (issue 24): a seeded share of training rows with reversed preference labels, for every objective
trained on preference pairs or ranked candidates; the held-out split keeps its true labels; any other objective, an
out-of-range value and the old objective.label_noise are one line before anything loads. No model is built here."""

import datasets
import pytest
import yaml

from alignctl import objectives
from alignctl.cli import main as cli
from alignctl.config import compose, run_names, schema
from alignctl.run import build

HF = ["model=hf", "model.path=m", "dataset=hh_rlhf"]  # a preference dataset; nothing is loaded (rows are patched)


def _pairs(n: int, rewards: bool = True) -> datasets.Dataset:
    columns = {"prompt": [f"p{i}" for i in range(n)], "chosen": [f"c{i}" for i in range(n)],
               "rejected": [f"r{i}" for i in range(n)]}  # fmt: skip
    if rewards:
        columns |= {"chosen_reward": [float(i + 1) for i in range(n)], "rejected_reward": [-float(i + 1) for i in range(n)]}
    return datasets.Dataset.from_dict(columns)


def _flipped(clean: datasets.Dataset, noisy: datasets.Dataset) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(clean, noisy)) if a != b]


# --- flip_labels -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, share, expected", [
    (25, 0.2, 5), (25, 0.4, 10), (10, 0.25, 2),  # round(2.5) = 2: Python's round, a half to the even count
    (10, 0.35, 4), (7, 0.49, 3), (3, 0.1, 0),  # round(3.5) = 4; round(3.43) = 3; round(0.3) = 0: nothing flips
])  # fmt: skip
def test_pairs_flip_exactly_round_share_times_n_rows(n, share, expected):
    clean = _pairs(n)
    noisy = build.flip_labels(clean, share, seed=0)
    flipped = _flipped(clean, noisy)
    assert len(flipped) == expected == round(share * n)
    for i in flipped:  # chosen and rejected swap, with their rewards
        row = noisy[i]
        assert (row["chosen"], row["rejected"]) == (f"r{i}", f"c{i}")
        assert row["chosen_reward"] == -(i + 1) and row["rejected_reward"] == i + 1 and row["prompt"] == f"p{i}"


def test_pairs_without_rewards_swap_too():
    clean = _pairs(10, rewards=False)
    noisy = build.flip_labels(clean, 0.3, seed=1)
    flipped = _flipped(clean, noisy)
    assert len(flipped) == 3 and all(noisy[i]["chosen"] == f"r{i}" and noisy[i]["rejected"] == f"c{i}" for i in flipped)
    assert noisy.column_names == clean.column_names


def test_the_flipped_rows_depend_on_the_seed_only():
    clean = _pairs(40)
    first = _flipped(clean, build.flip_labels(clean, 0.2, seed=7))
    assert _flipped(clean, build.flip_labels(clean, 0.2, seed=7)) == first  # deterministic per seed
    assert _flipped(clean, build.flip_labels(clean, 0.2, seed=8)) != first
    # the same rows of the same pairs seen as 2-candidate sets (ADPO's view of a preference dataset)
    sets = build._pairs_as_candidates(datasets.DatasetDict(train=clean))["train"]
    assert _flipped(sets, build.flip_labels(sets, 0.2, seed=7)) == first
    bare = build._pairs_as_candidates(datasets.DatasetDict(train=_pairs(40, rewards=False)))["train"]
    noisy = build.flip_labels(bare, 0.2, seed=7)  # no rewards: a hard label on the first, so the order reverses
    assert _flipped(bare, noisy) == first
    assert all(noisy[i]["completions"] == [f"r{i}", f"c{i}"] for i in first)


def test_rows_without_preference_labels_are_refused():
    with pytest.raises(ValueError, match="label noise needs pairs or ranked candidates"):
        build.flip_labels(datasets.Dataset.from_dict({"prompt": ["p"], "completion": ["c"], "label": [True]}), 0.2, 0)


# --- build.training_data -----------------------------------------------------------------------------------------
@pytest.fixture
def preference_rows(monkeypatch):
    """hh_rlhf's rows replaced by 20 train and 6 test pairs (no download, no tokenizer)."""
    rows = datasets.DatasetDict(train=_pairs(20), test=_pairs(6))
    monkeypatch.setattr(build, "rows", lambda cfg, tokenizer: rows)
    return rows


@pytest.mark.parametrize("objective", ["dpo", "adpo"])
def test_training_data_flips_the_same_rows_for_every_pairwise_objective(objective, preference_rows):
    cfg = compose.compose_one([f"objective={objective}", *HF, "dataset.label_noise=0.2", "train.seed=3"])
    entry = objectives.get(objective)
    train = build.training_data(cfg, entry, None, "m")
    clean = build.DATA_KINDS[entry.data](cfg, None, "m")["train"]
    expected = _flipped(preference_rows["train"], build.flip_labels(preference_rows["train"], 0.2, seed=3))
    assert len(expected) == 4 and _flipped(clean, train) == expected  # dpo: pairs; adpo: the same rows as candidates
    # the held-out split (eval's preference accuracy, reward-KL curves) keeps its true labels
    test = build.preference_pairs(cfg, None, "m")["test"]
    assert test.to_list() == _pairs(6).to_list() and all(r["chosen"].startswith("c") for r in test)
    assert preference_rows["train"].to_list() == _pairs(20).to_list()  # the loaded rows are not flipped in place
    no_noise = compose.compose_one([f"objective={objective}", *HF, "train.seed=3"])
    assert _flipped(clean, build.training_data(no_noise, entry, None, "m")) == []


def test_the_noise_is_no_part_of_the_datas_cache_keys():
    """repr(cfg.dataset) keys rendered rows and sampled pairs: every noise level reads the same cached rows."""
    clean, noisy = (compose.compose_one(["objective=dpo", *n]) for n in ([], ["dataset.label_noise=0.4"]))
    assert noisy.dataset.label_noise == 0.4 and repr(noisy.dataset) == repr(clean.dataset)
    assert "label_noise0.4" in run_names.run_name("dpo", "reverse_kl", ["dataset.label_noise=0.4"])


# --- config checks: one line, exit code 2, before anything loads --------------------------------------------------
def run_cli(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", *argv, "tracking=none", "train.max_steps=1"])
    return exc.value.code, capsys.readouterr().err.strip()


PAIRWISE = ", ".join(n for n, e in objectives.REGISTRY.items() if e.data in schema.NOISY_LABEL_KINDS)


@pytest.mark.parametrize("objective", PAIRWISE.split(", "))
def test_every_pairwise_objective_accepts_label_noise(objective):
    cfg = compose.compose_one([f"objective={objective}", "dataset.label_noise=0.2"])
    assert cfg.dataset.label_noise == 0.2 and cfg.objective.name == objective


@pytest.mark.parametrize("argv, kind", [
    (["objective=grpo"], "prompts with a reward"),
    (["objective=grpo", "dataset=toy_arith", "reward=exact_match"], "prompts with a reward"),
    (["objective=sft", *HF], "completions to imitate"),
    (["objective=kto"], "binary feedback (completions labelled desirable or not)"),
    (["objective=d2o"], "negatives with self-samples"),
])  # fmt: skip
def test_other_objectives_refuse_label_noise_in_one_line(argv, kind, capsys, nothing_loads):
    code, err = run_cli(capsys, *argv, "dataset.label_noise=0.2")
    objective = argv[0].split("=")[1]
    assert code == 2 and err == (
        f"alignctl: error: dataset.label_noise=0.2 reverses the labels of preference pairs or ranked candidates, and "
        f"objective={objective} trains on {kind}; set dataset.label_noise=0, or objective from: {PAIRWISE}"
    )
    named = PAIRWISE.split(", ")
    assert {"dpo", "adpo", "reward_model"} <= set(named) and not {"grpo", "sft", "kto", "d2o"} & set(named)


@pytest.mark.parametrize("value, line", [
    ("0.5", "dataset.label_noise=0.5 is out of range; it must lie in [0, 0.5)"),
    ("-0.1", "dataset.label_noise=-0.1 is out of range; it must lie in [0, 0.5)"),
    ("abc", "dataset.label_noise: Value 'abc' of type 'str' could not be converted to Float"),
    ("nan", "dataset.label_noise=nan is not a finite number"),
])  # fmt: skip
@pytest.mark.parametrize("objective", ["dpo", "adpo"])
def test_out_of_range_label_noise_is_one_line(objective, value, line, capsys, nothing_loads):
    assert run_cli(capsys, f"objective={objective}", f"dataset.label_noise={value}") == (2, f"alignctl: error: {line}")


MOVED = ("alignctl: error: objective.label_noise={v}: label noise is now a dataset option, for every objective "
         "trained on preference pairs or ranked candidates; use dataset.label_noise={v}")


@pytest.mark.parametrize("argv, value", [
    (["objective=adpo", "objective.label_noise=0.2"], "0.2"),
    (["objective=adpo", "+objective.label_noise=0.2"], "0.2"),
    (["objective=dpo", "objective.label_noise=0.4"], "0.4"),
    (["-m", "objective=adpo", "objective.label_noise=0.2,0.4"], "0.2,0.4"),
])  # fmt: skip
def test_the_old_objective_label_noise_names_the_new_option(argv, value, capsys, nothing_loads):
    assert run_cli(capsys, *argv) == (2, MOVED.format(v=value))


@pytest.mark.parametrize("saved_noise", [0.0, 0.2])
def test_an_old_adpo_run_directory_still_loads(saved_noise, tmp_path):
    """Its config.yaml has objective.label_noise (every ADPO run saved it): read as dataset.label_noise."""
    compose.save_resolved(compose.compose_one(["objective=adpo"]), tmp_path)
    path = tmp_path / compose.RESOLVED_CONFIG
    saved = yaml.safe_load(path.read_text())
    del saved["dataset"]["label_noise"]
    saved["objective"]["label_noise"] = saved_noise
    path.write_text(yaml.safe_dump(saved))
    cfg = compose.load_run(tmp_path, ["eval.num_prompts=8"])
    assert cfg.dataset.label_noise == saved_noise and not hasattr(cfg.objective, "label_noise")
    assert cfg.eval.num_prompts == 8
