"""sample_rows: eval's row-seeded sampling gives the same completions however prompts are batched, ordered or
padded, and each completion is the Gumbel-max draw an independent step-by-step computation makes."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignctl.data.tasks import tiny_lm
from alignctl.models import files
from alignctl.models.row_seeded import key, uniforms
from alignctl.models.sampling import EVAL_STEP, sample_rows
from alignctl.models.schema import TinyModelConfig

TEXTS = ["the film was a quiet delight and the cast was fine", "a dull plot , wooden acting and a long ending",
         "i liked it", "what a mess of a movie , really"] * 4  # fmt: skip
PROMPTS = ["the film", "a dull plot , wooden acting and", "i", "what a mess of a movie , really the", "the cast"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-rows")
    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    files.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, path)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _draw(model, tokenizer, **kwargs):
    args = dict(n=3, max_new_tokens=6, temperature=0.7, seed=11) | kwargs
    return sample_rows(model, tokenizer, PROMPTS, **args)


def test_batching_ordering_and_padding_do_not_change_the_samples(model):
    ref = _draw(*model, batch_size=64, by_length=False)
    for batch_size, by_length in ((3, True), (1, True), (7, False), (64, True)):
        got = _draw(*model, batch_size=batch_size, by_length=by_length)
        assert got.completions == ref.completions and got.prompts == ref.prompts
        assert torch.equal(got.batch.input_ids, ref.batch.input_ids)
    assert len(set(ref.completions)) > 3  # the samples differ between rows: the noise is keyed per row
    assert _draw(*model, batch_size=64, seed=12).completions != ref.completions


def test_each_completion_is_the_keyed_gumbel_max_draw(model):
    """Row i * n + j, recomputed alone without padding: argmax over (logits / T + Gumbel noise keyed by (seed,
    EVAL_STEP, position, row)) at each step, until EOS or max_new_tokens."""
    policy, tokenizer = model
    got = _draw(policy, tokenizer, batch_size=4)
    n, temperature, seed = 3, 0.7, 11
    for i, prompt in enumerate(PROMPTS):
        for j in range(n):
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            new = []
            for position in range(6):
                with torch.no_grad():
                    logits = policy(ids).logits[0, -1].double()
                u = uniforms(key(seed, EVAL_STEP, position, torch.tensor([i * n + j])), logits.shape[0])[0]
                token = int((logits / temperature - torch.log(-torch.log(u))).argmax())
                new.append(token)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
                if token == tokenizer.eos_token_id:
                    break
            assert got.completions[i * n + j] == tokenizer.decode(new, skip_special_tokens=True)


def test_the_callers_rng_is_untouched(model):
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    _draw(*model, batch_size=4)
    assert torch.equal(torch.rand(3), before)
