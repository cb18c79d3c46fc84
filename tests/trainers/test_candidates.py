"""CandidateTrainer: the collator, one training step against an independent computation, and label noise."""

import datasets
import pytest
import torch
from trl import DPOConfig

from alignctl import objectives
from alignctl.config import compose
from alignctl.data.tasks import tiny_lm
from alignctl.models import files
from alignctl.models.schema import TinyModelConfig
from alignctl.objectives.base import CandidateLogps, NegativeLogps
from alignctl.run import build
from alignctl.trainers.candidates import CandidateCollator, CandidateTrainer

TEXTS = [
    "The movie was great and the cast was wonderful.",
    "The plot was dull but the music was lovely.",
    "I hated the ending. The acting was awful.",
    "The film felt long, the story was boring.",
] * 4
PROMPTS = ["The movie was", "The plot felt", "I loved the"]
COMPLETIONS = [
    [" great and wonderful.", " dull.", " awful, the ending was boring."],
    [" long but lovely.", " boring and awful.", " great."],
    [" music.", " cast, the acting was great.", " story. It was dull."],
]
REWARDS = [[0.8, 0.1, -0.6], [0.5, -0.7, -0.2], [0.3, 0.3, -0.1]]  # not sorted everywhere: scores, not order, label


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A randomly initialised tiny Llama with a BPE tokenizer, saved as an HF directory (the reference)."""
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    files.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, path)
    return path


def test_collator_flattens_rows_of_completions():
    collate = CandidateCollator(pad_token_id=0, max_length=6)
    batch = collate([
        {"prompt_ids": [1, 2], "completion_ids": [[3], [4, 5], [6, 7, 8, 9, 10]], "scores": [0.5, 0.1, -0.2]},
        {"prompt_ids": [1, 2, 3], "completion_ids": [[4, 5]], "scores": [0.7]},
    ])  # fmt: skip
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 0, 0, 0], [1, 2, 4, 5, 0, 0], [1, 2, 6, 7, 8, 9],  # row 0; the last completion truncated
        [1, 2, 3, 4, 5, 0], [1, 2, 3, 0, 0, 0], [1, 2, 3, 0, 0, 0],  # row 1: one completion, two empty slots
    ]  # fmt: skip
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0],
    ]  # fmt: skip
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
    ]  # fmt: skip
    assert batch["candidate_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert torch.allclose(batch["scores"], torch.tensor([[0.5, 0.1, -0.2], [0.7, 0.0, 0.0]]))
    assert "scores" not in collate([{"prompt_ids": [1], "completion_ids": [[2], [3]]}])


def _dataset(kind: str) -> datasets.Dataset:
    if kind == "candidates":
        return datasets.Dataset.from_dict({"prompt": PROMPTS, "completions": COMPLETIONS, "rewards": REWARDS})
    negatives = [c[0] for c in COMPLETIONS]
    samples = [c[1:] for c in COMPLETIONS]
    return datasets.Dataset.from_dict({"prompt": PROMPTS, "negative": negatives, "samples": samples})


def _independent_logps(model, tokenizer, prompt: str, completion: str) -> torch.Tensor:
    """Sum of log pi(y_t | prompt, y_<t) over completion + EOS, from a plain forward and full logits."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
    token_logps = logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    return token_logps[len(prompt_ids) - 1 :].sum()


@pytest.mark.parametrize("name", ["adpo", "d2o"])
def test_training_step_loss_matches_objective_on_independent_logps(name, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = objectives.get(name)
    hyper = {"adpo": {"tau": 2.0, "beta_r": 0.5, "zscore": False}, "d2o": {"beta": 0.5, "alpha": 0.3}}[name]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=len(PROMPTS), max_steps=1, learning_rate=1e-3,
        logging_steps=1, max_length=64, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, activation_checkpointing=False,
    )  # fmt: skip
    trainer = CandidateTrainer(
        model=policy, args=args, train_dataset=_dataset(entry.data), processing_class=tokenizer,
        objective=entry, hyperparameters=hyper, divergence=None,
    )  # fmt: skip
    with torch.no_grad():  # move the policy away from the reference so that the log-ratios are not all zero
        g = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    reference = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    policy.eval()  # the tiny Llama has no dropout: eval and train forwards agree
    pairs = [(p, cs) for p, cs in zip(PROMPTS, COMPLETIONS)]
    pol, ref = (
        torch.stack([torch.stack([_independent_logps(m, tokenizer, p, c) for c in cs]) for p, cs in pairs])
        for m in (policy, reference)
    )
    if entry.data == "candidates":
        batch = CandidateLogps(policy_logps=pol, anchor_logps=ref, scores=torch.tensor(REWARDS, dtype=torch.float64))
    else:
        batch = NegativeLogps(pol[:, 0], ref[:, 0], pol[:, 1:], ref[:, 1:])
    expected = entry.loss(batch, divergence=None, **hyper)
    at_reference = {"adpo": torch.log(torch.tensor(3.0)), "d2o": torch.log(torch.tensor(2.0))}[name]
    assert abs(expected.losses.mean().item() - at_reference.item()) > 0.01  # a check that can fail

    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["step"] == 1
    assert logged["loss"] == pytest.approx(expected.losses.mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/chosen"] == pytest.approx(expected.chosen_rewards.mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/margins"] == pytest.approx(
        (expected.chosen_rewards - expected.rejected_rewards).mean().item(), rel=1e-4, abs=1e-5
    )
    keys = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected", "entropy"}  # fmt: skip
    assert keys <= logged.keys()  # the same metrics as PreferenceTrainer


def test_label_noise_flips_exactly_a_share_of_rows_seeded():
    n = 40
    cands = datasets.Dataset.from_dict({
        "prompt": [f"p{i}" for i in range(n)],
        "completions": [[f"a{i}", f"b{i}", f"c{i}"] for i in range(n)],
        "rewards": [[0.9, float(i) / n, -0.5] for i in range(n)],
    })  # fmt: skip
    noisy = build.flip_labels(cands, 0.2, seed=3)
    flipped = [i for i, (a, b) in enumerate(zip(cands, noisy)) if a != b]
    assert len(flipped) == round(0.2 * n) == 8
    for i in flipped:  # completions stay, their labels reverse
        assert noisy[i]["completions"] == cands[i]["completions"]
        assert noisy[i]["rewards"] == cands[i]["rewards"][::-1]
    again = build.flip_labels(cands, 0.2, seed=3)
    assert again.to_list() == noisy.to_list()
    other = [i for i, (a, b) in enumerate(zip(cands, build.flip_labels(cands, 0.2, seed=4))) if a != b]
    assert len(other) == 8 and other != flipped

    pairs = datasets.Dataset.from_dict({
        "prompt": ["x", "y", "z"], "chosen": ["c0", "c1", "c2"], "rejected": ["r0", "r1", "r2"],
        "chosen_reward": [1.0, 2.0, 3.0], "rejected_reward": [-1.0, -2.0, -3.0],
    })  # fmt: skip
    swapped = [r for r in build.flip_labels(pairs, 0.34, seed=0) if r["chosen"].startswith("r")]
    assert len(swapped) == 1 and swapped[0]["chosen_reward"] < 0 < swapped[0]["rejected_reward"]


def test_training_data_applies_the_datasets_label_noise(monkeypatch):
    n = 10
    cands = datasets.Dataset.from_dict(
        {"prompt": ["p"] * n, "completions": [["a", "b"]] * n, "rewards": [[1.0, 0.0]] * n}
    )
    monkeypatch.setitem(build.DATA_KINDS, "candidates", lambda cfg, tokenizer, model_dir: {"train": cands})
    cfg = compose.compose_one(["objective=adpo", "dataset.label_noise=0.3", "train.seed=5"])
    data = build.training_data(cfg, objectives.get("adpo"), None, "")
    assert [r["rewards"] for r in data].count([0.0, 1.0]) == 3
    assert data.to_list() == build.flip_labels(cands, 0.3, seed=5).to_list()
    clean = compose.compose_one(["objective=adpo"])
    assert build.training_data(clean, objectives.get("adpo"), None, "") is cands
