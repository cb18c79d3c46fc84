"""HybridTrainer's fresh samples (objective=hypo): keyed by (train.seed, step, micro-batch) and each completion's row
in the step's global batch, so a resumed run draws what the uninterrupted run drew (tests/e2e/test_hypo.py checks
that end to end) and 1 or 2 processes draw the same completions."""

from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignctl.trainers.hybrid import HybridTrainer, seed_of

from ._tiny import PROMPTS


def trainer_at(step: int, process: int = 0, seed: int = 0, **extra) -> SimpleNamespace:
    return SimpleNamespace(sampling_seed=seed, _draw=(-1, 0), state=SimpleNamespace(global_step=step),
                           accelerator=SimpleNamespace(process_index=process, unwrap_model=lambda m: m),
                           **extra)  # fmt: skip


def test_seed_depends_on_step_micro_batch_and_train_seed_only():
    running = trainer_at(5)
    first, second = HybridTrainer.next_seed(running), HybridTrainer.next_seed(running)  # two micro-batches
    running.state.global_step = 6
    assert HybridTrainer.next_seed(running) == seed_of(0, 6, 0)  # a new step starts at micro-batch 0
    assert (first, second) == (seed_of(0, 5, 0), seed_of(0, 5, 1))
    assert HybridTrainer.next_seed(trainer_at(5)) == first  # a process resumed at step 5 draws the same
    assert HybridTrainer.next_seed(trainer_at(5, process=1)) == first  # rows, not processes, are keyed apart
    assert len({first, second, HybridTrainer.next_seed(trainer_at(5, seed=1))}) == 3
    assert 0 <= first < 2**63


def test_one_process_and_two_draw_the_same_completions(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def draw(process: int, prompts: list[str]):
        trainer = trainer_at(3, process=process, _tokenizer=tokenizer, samples_per_prompt=3, max_new_tokens=8)
        trainer.next_seed = lambda: HybridTrainer.next_seed(trainer)
        return HybridTrainer.fresh_samples(trainer, model, prompts).completions

    before = torch.random.get_rng_state()
    whole = draw(0, PROMPTS)  # the step's 4 prompts on one process; on two, 2 prompts each (contiguous slices)
    assert torch.equal(torch.random.get_rng_state(), before)  # the training RNG is left as it was
    assert draw(0, PROMPTS[:2]) + draw(1, PROMPTS[2:]) == whole
    assert len(set(whole)) > 3  # real samples, not one repeated completion
    assert draw(1, PROMPTS[:2]) != whole[:6]  # the row offset matters
