"""Online sampling that does not depend on how the generation batch is split.

TRL's GRPOTrainer samples each completion with the process's global RNG, so the completions of a step depend on
how many processes share the batch, and on how the rows before it consumed random numbers: 1 process and 2
processes train on different samples. Here each completion token is drawn by Gumbel-max from counter-based noise
keyed by (train.seed, the global step, the completion's row in the global generation batch, its position in the
completion): an exact sample from the same distribution (after temperature and any top-k/top-p), the same on 1 or N
processes, with any padding, on CPU or GPU (the sampler: alignctl.models.row_seeded).
"""

from __future__ import annotations

from alignctl.models.row_seeded import RowSeededSampler, row_seeded


class RowSeededGeneration:
    """Mixin for GRPOTrainer subclasses: completions drawn by RowSeededSampler (see the module docstring)."""

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        # TRL's private per-turn generation step: no public hook hands generate() a logits processor, and this is
        # where the local rows of the global generation batch are known (TRL splits it over processes in contiguous
        # slices, as its own gather in _generate assumes). tests/trainers/test_sampling.py checks TRL still samples
        # through here and that 1 and 2 slices draw the same completions. vLLM samples on its own.
        if self.use_vllm:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        g = self.generation_config
        truncated = {"top_k": g.top_k not in (None, 0), "top_p": g.top_p not in (None, 1.0), "min_p": g.min_p is not None}
        if any(truncated.values()):
            raise ValueError(f"row-seeded sampling draws from the full distribution; got {[k for k, v in truncated.items() if v]}")
        first_row = self.accelerator.process_index * len(prompt_ids)
        sampler = RowSeededSampler(self.args.seed, self.state.global_step, first_row, g.temperature or 1.0)
        with row_seeded(self.accelerator.unwrap_model(self.model_wrapped), sampler):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
