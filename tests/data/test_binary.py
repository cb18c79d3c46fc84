"""Preference pairs -> binary feedback (KTO): chosen desirable, rejected undesirable; and build's routing."""

import datasets

from alignctl import objectives
from alignctl.config import compose
from alignctl.data import binary
from alignctl.run import build

PAIRS = datasets.DatasetDict({
    "train": datasets.Dataset.from_dict({"prompt": ["a", "b", "c"], "chosen": [" c0", " c1", " c2"],
                                         "rejected": [" r0", " r1", " r2"], "chosen_reward": [1.0, 2.0, 3.0],
                                         "rejected_reward": [0.0, 0.5, 1.0]}),
    "test": datasets.Dataset.from_dict({"prompt": ["d"], "chosen": [" c3"], "rejected": [" r3"],
                                        "chosen_reward": [1.0], "rejected_reward": [0.0]}),
})  # fmt: skip


def test_each_pair_becomes_a_desirable_and_an_undesirable_row():
    got = binary.from_pairs(PAIRS)
    assert set(got) == {"train", "test"}
    assert got["train"].column_names == ["prompt", "completion", "label"]
    assert got["train"].to_list() == [
        {"prompt": "a", "completion": " c0", "label": True},
        {"prompt": "b", "completion": " c1", "label": True},
        {"prompt": "c", "completion": " c2", "label": True},
        {"prompt": "a", "completion": " r0", "label": False},
        {"prompt": "b", "completion": " r1", "label": False},
        {"prompt": "c", "completion": " r2", "label": False},
    ]  # fmt: skip
    assert got["test"].to_list() == [{"prompt": "d", "completion": " c3", "label": True},
                                     {"prompt": "d", "completion": " r3", "label": False}]  # fmt: skip
    assert binary.from_pairs(PAIRS["test"]).to_list() == got["test"].to_list()  # a single split too


def test_same_rows_as_trls_unpair_preference_dataset():
    from trl.data_utils import unpair_preference_dataset

    theirs = unpair_preference_dataset(PAIRS["train"].remove_columns(["chosen_reward", "rejected_reward"]))
    assert binary.from_pairs(PAIRS["train"]).to_list() == theirs.to_list()


def test_kto_on_a_pairs_dataset_trains_on_its_pairs_split_in_two(monkeypatch):
    calls = []
    monkeypatch.setattr(build, "preference_pairs", lambda cfg, tok, model_dir: calls.append(model_dir) or PAIRS)
    monkeypatch.setattr(build.sources, "check_embedded_policy", lambda cfg, model_dir: None)
    cfg = compose.compose_one(["objective=kto"])  # the default dataset: toy_sentiment's sampled pairs
    train = build.training_data(cfg, objectives.get("kto"), None, "model-dir")
    assert calls == ["model-dir"]
    assert train.to_list() == binary.from_pairs(PAIRS)["train"].to_list()
