"""What eval.* names outside the config, checked before any model trains or loads (by alignctl.run.launch.validate
for `alignctl train`, and by `alignctl eval`): the judge's model or endpoint, lm-eval's tasks, the reward-benchmark
file, the export prompt set and vLLM where it samples. The judges' libraries are imported only when a judge is named; the other checks'
modules load theirs (lm-eval, datasets) inside their functions."""

from __future__ import annotations

from typing import Any

from alignctl.errors import UsageError
from alignctl.eval import benchmarks, export, reward_bench
from alignctl.models import vllm_rollout


def check(e: Any) -> None:
    """e: a run's eval config (alignctl.config.schema.EvalConfig); one UsageError line for the first problem."""
    if e.rollout == "vllm":
        vllm_rollout.check_vllm("eval.rollout")
    if e.judge.kind != "reward":
        from alignctl.eval import judges  # transformers / openai: only when a judge model or endpoint is named

        judges.check_config(e.judge)
    if e.lm_eval.tasks:
        benchmarks.check_tasks(list(e.lm_eval.tasks), e.lm_eval.include_path)
    elif e.lm_eval.include_path is not None:
        raise UsageError(f"eval.lm_eval.include_path={e.lm_eval.include_path} is set but eval.lm_eval.tasks=[] runs "
                         "nothing; name the tasks, e.g. eval.lm_eval.tasks=[<task>]")  # fmt: skip
    if e.preference_data is not None:
        reward_bench.read_preference_data(e.preference_data)
    if e.export.prompts is not None:
        if not e.export.formats:
            raise UsageError(f"eval.export.prompts={e.export.prompts} is set but eval.export.formats=[] writes "
                             "nothing; choose eval.export.formats=[alpaca_eval] and/or [arena_hard]")  # fmt: skip
        export.read_prompt_file(e.export.prompts)
