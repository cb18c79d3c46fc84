"""f-DPG's per-prompt running log-partition estimate and the prompt ids that key it (no trainer is built)."""

import json

import numpy as np
import torch

from alignctl.trainers.groups import RunningPartition, prompt_id

KEYS = [2**55 + 3, 17, 2**40 + 1, 17]  # large, non-contiguous; a key may repeat within one call


def log_mean_exp(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(v.max() + np.log(np.exp(v - v.max()).sum()) - np.log(len(v)))


def test_update_returns_log_mean_of_every_weight_seen_for_the_prompt():
    rng = np.random.default_rng(0)
    partition, seen = RunningPartition(), {}
    for _ in range(5):
        ids = [KEYS[i] for i in rng.integers(0, len(KEYS), 6)]
        log_w = rng.uniform(-800, 800, 6)  # exp overflows past ~89 in float32 and ~709 in float64
        got = partition.update(torch.tensor(ids), torch.tensor(log_w))
        for k, v in zip(ids, log_w):
            seen.setdefault(k, []).append(v)  # every entry of the call counts before the estimates are read
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), [log_mean_exp(seen[k]) for k in ids], rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip_through_json_gives_identical_future_updates():
    rng = np.random.default_rng(1)
    batches = [(torch.tensor([KEYS[i] for i in rng.integers(0, 4, 5)]), torch.tensor(rng.uniform(-800, 800, 5)))
               for _ in range(4)]  # fmt: skip
    original = RunningPartition()
    for ids, log_w in batches[:2]:
        original.update(ids, log_w)
    direct, via_json = RunningPartition(), RunningPartition()
    direct.load_state_dict(original.state_dict())
    via_json.load_state_dict(json.loads(json.dumps(original.state_dict())))
    for ids, log_w in batches[2:]:
        want = original.update(ids, log_w)
        assert torch.equal(direct.update(ids, log_w), want) and torch.equal(via_json.update(ids, log_w), want)


PROMPTS = [f"Q: {i}+{i % 97}=? A:" for i in range(3000)] + ["", " ", "naïve café ✓", "Q: 1+1=? A:\n"]


def test_prompt_id_is_a_fixed_function_of_the_text():
    """Golden values (blake2b, 7 bytes, big-endian, computed once by hand): the same in every process and run,
    whatever PYTHONHASHSEED is, so a checkpoint's partition estimates stay keyed to the right prompts."""
    assert prompt_id("Q: 12+34=? A:") == 70293958565130043
    assert prompt_id("naïve café ✓") == 11066508866823844


def test_conversational_prompts_get_ids_by_their_messages():
    chat = [{"role": "user", "content": "Q: 1+1=? A:"}]
    assert prompt_id(chat) == prompt_id([{"content": "Q: 1+1=? A:", "role": "user"}])  # key order does not matter
    assert prompt_id(chat) != prompt_id([{"role": "user", "content": "Q: 1+2=? A:"}])


def test_prompt_ids_are_distinct_non_negative_and_fit_int64():
    ids = [prompt_id(p) for p in PROMPTS]
    assert len(set(ids)) == len(PROMPTS)
    assert all(isinstance(i, int) and 0 <= i < 2**56 for i in ids)
    assert torch.tensor(ids, dtype=torch.long).tolist() == ids  # as the trainer stores them
