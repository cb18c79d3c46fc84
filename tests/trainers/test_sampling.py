"""Row-seeded sampling (alignctl/trainers/sampling.py): the noise against an independent SplitMix64, the draws
against the softmax they sample from, and the completions of a batch independent of how it is split and padded."""

import inspect

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList
from trl import GRPOTrainer

from alignctl.models.row_seeded import RowSeededSampler, row_seeded, splitmix64, uniforms
from alignctl.trainers.groups import GroupObjectiveTrainer
from alignctl.trainers.online import OnlineTrainer
from alignctl.trainers.sampling import RowSeededGeneration

MASK = (1 << 64) - 1


def splitmix64_reference(x: int) -> int:
    """SplitMix64 (Steele, Lea, Flood 2014; Vigna's C code) on Python integers, unsigned."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_splitmix64_matches_the_reference_on_int64_bit_patterns():
    values = [0, 1, 2, 12345, 2**62 + 7, 2**63 - 1, -1, -(2**63), -987654321]
    got = splitmix64(torch.tensor(values, dtype=torch.int64)).tolist()
    assert [g & MASK for g in got] == [splitmix64_reference(v & MASK) for v in values]
    assert splitmix64_reference(0) == 0xE220A8397B1DCDAF  # the first output of Vigna's generator seeded with 0


def test_uniforms_are_open_unit_interval_deterministic_and_flat():
    keys = torch.tensor([3, -5, 2**40], dtype=torch.int64)
    u = uniforms(keys, 40_000)
    assert u.dtype == torch.float64 and bool(((u > 0) & (u < 1)).all())
    assert torch.equal(u, uniforms(keys, 40_000))
    assert torch.equal(u[1:2], uniforms(keys[1:2], 40_000))  # a row's numbers do not depend on the other rows
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    assert not torch.equal(u[0], u[1])


def test_uniforms_and_the_drawn_token_are_the_reference_bit_for_bit():
    """Pins the draws (published results depend on them) to the definition on Python integers and floats:
    u(key, j) = (top 53 bits of splitmix64(key + j * GOLDEN) + 0.5) * 2^-53, token = argmax_j scores_j / T - log(-log u)."""
    import math

    golden = 0x9E3779B97F4A7C15
    keys = [3, -5, 2**40, -(2**63)]
    n = 7
    want = [[((splitmix64_reference((k + j * golden) & MASK) >> 11) + 0.5) * 2.0**-53 for j in range(n)] for k in keys]
    assert uniforms(torch.tensor(keys, dtype=torch.int64), n).tolist() == want
    generator = torch.Generator().manual_seed(0)
    for dtype, temperature in ((torch.float32, 1.0), (torch.float64, 0.7), (torch.bfloat16, 1.3)):
        scores = (torch.randn(5, 300, generator=generator) * 3).to(dtype)
        scores[0, :10] = float("-inf")
        before = scores.clone()
        sampler = RowSeededSampler(seed=11, step=2, temperature=temperature)
        out = sampler(torch.zeros(5, 4, dtype=torch.long), scores)
        assert torch.equal(scores, before)  # the processor leaves generate's scores as they were
        row_keys = [int(sampler_key) for sampler_key in _keys(11, 2, 0, range(5))]
        for i, k in enumerate(row_keys):
            u = [((splitmix64_reference((k + j * golden) & MASK) >> 11) + 0.5) * 2.0**-53 for j in range(300)]
            total = [float(x) / temperature - math.log(-math.log(v)) for x, v in zip(scores[i].double().tolist(), u)]
            assert out[i].argmax().item() == max(range(300), key=total.__getitem__)
            assert (out[i] == 0).sum() == 1


def _keys(seed: int, step: int, position: int, rows) -> list[int]:
    """The sampler's per-row noise keys (alignctl.models.row_seeded.key), as int64 values."""
    from alignctl.models.row_seeded import key

    return key(seed, step, position, torch.tensor(list(rows), dtype=torch.int64)).tolist()


def test_draws_follow_the_softmax_at_the_temperature():
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    n, temperature = 20_000, 0.7
    counts = torch.zeros(5)
    sampler = RowSeededSampler(seed=1, step=0, first_row=0, temperature=temperature)
    sampler.start = 0
    for row in range(n):
        sampler.first_row = row
        out = sampler(torch.zeros(1, 0, dtype=torch.long), scores)
        assert int(torch.isfinite(out).sum()) == 1 and out.max().item() == 0.0  # one token left possible
        counts[out.argmax()] += 1
    expected = torch.softmax(scores[0] / temperature, -1) * n
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    assert chi2 < 18.5  # 4 degrees of freedom: p = 0.001


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=32, pad_token_id=0, eos_token_id=1, bos_token_id=2)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def generate(model, prompts: list[list[int]], first_row: int, rng_seed: int) -> list[list[int]]:
    """Left-padded sampling generate() of `prompts` as rows first_row.. of a batch, with an arbitrary global RNG."""
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    torch.manual_seed(rng_seed)
    with row_seeded(model, RowSeededSampler(seed=7, step=3, first_row=first_row)):
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=6, pad_token_id=0,
                             eos_token_id=1, top_k=0)  # fmt: skip
    return [row[width:].tolist() for row in out]


def test_a_batch_split_in_two_slices_draws_the_same_completions():
    model = tiny_llama()
    prompts = [[2, 5, 6], [2, 7], [2, 8, 9, 10, 11], [2, 3], [2, 12, 13], [2, 14], [2, 15, 16, 17], [2, 18]]
    whole = generate(model, prompts, first_row=0, rng_seed=0)
    halves = generate(model, prompts[:4], 0, rng_seed=1) + generate(model, prompts[4:], 4, rng_seed=2)
    # the halves are padded to other widths and the global RNG differs: the completions do not
    strip = lambda rows: [r[: r.index(0)] if 0 in r else r for r in rows]  # noqa: E731 (padding after EOS)
    assert strip(whole) == strip(halves)
    assert len({tuple(r) for r in whole}) > 4  # and they are samples, not one greedy answer
    other_step = RowSeededSampler(seed=7, step=4, first_row=0)
    with row_seeded(model, other_step):
        assert "logits_processor" in model.generate.keywords
    assert "generate" not in model.__dict__  # the class's method is back


def test_trl_still_generates_through_the_hook_row_seeded_generation_overrides():
    # RowSeededGeneration overrides TRL's private per-turn generation step; if TRL renames or reshapes it, the
    # override would silently stop applying, and 1-process and N-process runs would sample differently again.
    params = list(inspect.signature(GRPOTrainer._generate_single_turn).parameters)
    assert params[:2] == ["self", "prompt_ids"]
    assert "self._generate_single_turn(" in inspect.getsource(GRPOTrainer._generate)
    for trainer in (OnlineTrainer, GroupObjectiveTrainer):
        mro = trainer.__mro__
        assert mro.index(RowSeededGeneration) < mro.index(GRPOTrainer)


def test_truncated_sampling_is_refused():
    class Fake(RowSeededGeneration):
        use_vllm = False

        class generation_config:  # noqa: N801
            top_k, top_p, min_p, temperature = 50, 1.0, None, 1.0

    with pytest.raises(ValueError, match="top_k"):
        Fake()._generate_single_turn([[1]])


def test_row_seeded_keeps_an_instance_generate():
    model = tiny_llama()
    own = lambda **kw: "own"  # noqa: E731
    model.generate = own
    with row_seeded(model, RowSeededSampler(0, 0, 0)):
        assert isinstance(model.generate.keywords["logits_processor"], LogitsProcessorList)
    assert model.generate is own
