"""train.group_by_length: PreferenceTrainer's pair lengths, transformers' length-grouped sampler over them (every pair
once per epoch, batches of similar length, the same order for the same seed, less padding than shuffled batches),
and a batch's loss and gradients unchanged by how much padding it carries."""

import copy
import math
import random

import pytest
import torch

from alignctl import objectives
from alignctl.trainers.preference import PreferenceTrainer, SeededLengthGroupedSampler, with_lengths
from tests.scripts._tiny import load_script


@pytest.fixture(scope="module")
def setup():
    bench = load_script("bench_padding")
    args = bench.parse_args(["--n-layer", "1", "--n-embd", "32", "--vocab", "256", "--pairs", "256", "--batch", "4",
                             "--max-length", "96"])  # fmt: skip
    return bench, args, bench.make_model(args), bench.make_tokenizer(args.vocab), bench.make_rows(args)


def trainer(setup, tmp_path, grouped: bool, seed: int = 0) -> PreferenceTrainer:
    bench, args, base, tokenizer, rows = setup
    config = bench.dpo_config(args, str(tmp_path), grouped=grouped)
    config.seed = config.data_seed = seed
    return PreferenceTrainer(model=copy.deepcopy(base), ref_model=copy.deepcopy(base).eval(), args=config,
                             train_dataset=rows, processing_class=tokenizer, objective=objectives.get("dpo"),
                             hyperparameters={"beta": 0.1}, divergence=None, kernel="fused")  # fmt: skip


def epoch(t: PreferenceTrainer) -> list[dict]:
    return list(t.get_train_dataloader())


def test_lengths_are_prompt_plus_the_longer_completion_cut_at_max_length():
    from datasets import Dataset

    rows = Dataset.from_dict({"prompt_ids": [[1, 2], [1] * 50], "chosen_ids": [[3], [4] * 30],
                              "rejected_ids": [[5, 6, 7], [8]]})  # fmt: skip
    assert with_lengths(rows, 64)["length"] == [5, 64]
    assert with_lengths(rows, None)["length"] == [5, 80]


def test_grouped_batches_hold_every_pair_once_with_less_padding(setup, tmp_path):
    grouped, shuffled = trainer(setup, tmp_path / "g", True), trainer(setup, tmp_path / "s", False)
    # the private hook PreferenceTrainer overrides is where Trainer builds its sampler (transformers 5.x)
    assert isinstance(grouped._get_train_sampler(), SeededLengthGroupedSampler)
    assert not isinstance(shuffled._get_train_sampler(), SeededLengthGroupedSampler)
    lengths = grouped.train_dataset["length"]
    got = {name: epoch(t) for name, t in (("grouped", grouped), ("shuffled", shuffled))}
    for batches in got.values():
        seen = sorted(tuple(row.tolist()) for b in batches for row in b["input_ids"][: len(b["input_ids"]) // 2])
        assert len(seen) == len(set(seen)) == len(grouped.train_dataset)  # every pair once (TRL drops a pair whose
        # prompt alone fills max_length)

    def padding(batches) -> float:
        return 1 - sum(int(b["attention_mask"].sum()) for b in batches) / sum(b["attention_mask"].numel() for b in batches)

    def spread(batches) -> float:  # mean over batches of (longest - shortest) pair, in tokens (what is grouped on)
        def pairs(b):  # a pair's width: its longer row (the collator puts the chosen rows first, then the rejected)
            w = b["attention_mask"].sum(-1)
            return torch.maximum(w[: len(w) // 2], w[len(w) // 2 :])

        return sum(float(w.max() - w.min()) for w in map(pairs, batches)) / len(batches)

    # (what is left is mostly within pairs: chosen and rejected lengths are independent here)
    assert padding(got["grouped"]) < 0.7 * padding(got["shuffled"])
    assert spread(got["grouped"]) < 0.5 * spread(got["shuffled"])
    assert padding(got["shuffled"]) > 0.3  # the problem is there: shuffled batches of this data waste a third
    assert len(set(lengths)) > 20  # of their tokens, the pairs' lengths varying widely


def test_the_grouped_order_is_fixed_by_the_seed(setup, tmp_path):
    def order(seed: int, where: str) -> list[list[int]]:
        return [b["input_ids"][0].tolist() for b in epoch(trainer(setup, tmp_path / where, True, seed))]

    assert order(0, "a") == order(0, "b")
    assert order(0, "a") != order(1, "c")


def test_a_batch_gives_the_same_loss_and_gradients_however_much_it_is_padded(setup, tmp_path):
    t = trainer(setup, tmp_path / "p", True)
    examples = [t.train_dataset[i] for i in random.Random(0).sample(range(len(t.train_dataset)), 4)]
    tight = t.data_collator(examples)
    t.data_collator.pad_to_multiple_of = 128  # the same pairs with far more padding
    padded = t.data_collator(examples)
    t.data_collator.pad_to_multiple_of = None
    assert padded["input_ids"].shape[1] > tight["input_ids"].shape[1]

    def loss_and_grads(batch):
        t.model.zero_grad()
        loss = t.compute_loss(t.model, batch)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in t.model.parameters() if p.grad is not None]

    (a, ga), (b, gb) = loss_and_grads(tight), loss_and_grads(padded)
    assert math.isclose(a, b, rel_tol=1e-6)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-7)
