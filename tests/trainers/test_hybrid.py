"""HybridTrainer's sampling seed (objective=hypo): a function of (train.seed, step, micro-batch, process) alone, so a
resumed run draws what the uninterrupted run drew (tests/e2e/test_hypo.py checks that end to end)."""

from types import SimpleNamespace

from alignctl.trainers.hybrid import HybridTrainer, seed_of


def trainer_at(step: int, process: int = 0, seed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(sampling_seed=seed, _draw=(-1, 0), state=SimpleNamespace(global_step=step),
                           accelerator=SimpleNamespace(process_index=process))  # fmt: skip


def test_seed_depends_on_step_micro_batch_process_and_train_seed_only():
    running = trainer_at(5)
    first, second = HybridTrainer.next_seed(running), HybridTrainer.next_seed(running)  # two micro-batches
    running.state.global_step = 6
    assert HybridTrainer.next_seed(running) == seed_of(0, 6, 0, 0)  # a new step starts at micro-batch 0
    assert (first, second) == (seed_of(0, 5, 0, 0), seed_of(0, 5, 1, 0))
    assert HybridTrainer.next_seed(trainer_at(5)) == first  # a process resumed at step 5 draws the same
    others = {HybridTrainer.next_seed(trainer_at(5, process=1)), HybridTrainer.next_seed(trainer_at(5, seed=1))}
    assert len({first, second, *others}) == 4
    assert 0 <= first < 2**63
