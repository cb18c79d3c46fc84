"""What eval.* names outside the config, checked before any model trains or loads (by alignctl.run.launch.validate
for `alignctl train`, and by `alignctl eval`): the judge's model or endpoint, lm-eval's tasks, the reward-benchmark
file, the export prompt set and vLLM where it samples. The judges' libraries are imported only when a judge is named; the other checks'
modules load theirs (lm-eval, datasets) inside their functions. And what objective=reward_model cannot use
(check_reward_model)."""

from __future__ import annotations

from typing import Any

from alignctl import objectives
from alignctl.errors import UsageError
from alignctl.eval import benchmarks, export, reward_bench
from alignctl.models import vllm_rollout
from alignctl.models.schema import SOUP


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


def check_reward_model(cfg: Any) -> None:
    """objective=reward_model trains a reward model: it samples nothing, has no reference to compare with and trains
    on the data's pairs once; its eval scores held-out pairs (and eval.preference_data). A setting that would sample
    from a policy or compare with a reference is refused in one line rather than ignored.
    cfg: a run's config (alignctl.config.schema.RunConfig)."""
    if not objectives.get(cfg.objective.name).trains_reward_model:
        return
    e = cfg.eval
    reference = None if cfg.model.reference == SOUP else cfg.model.reference  # a soup is the starting weights too
    unused = (("model.reference", reference, None), ("eval.reference", e.reference, None),
              ("eval.every_steps", e.every_steps, 0), ("eval.best_of_n", e.best_of_n, 0),
              ("eval.judge.kind", e.judge.kind, "reward"), ("eval.lm_eval.tasks", list(e.lm_eval.tasks), []),
              ("eval.export.formats", list(e.export.formats), []), ("eval.rollout", e.rollout, "transformers"))  # fmt: skip
    for field, value, off in unused:
        if value != off:
            raise UsageError(f"{field}={_shown(value)} is not used by objective={cfg.objective.name}, which trains a "
                             "reward model: it samples nothing and compares with no reference (its eval scores "
                             f"held-out pairs); leave {field} at {_shown(off)}")  # fmt: skip


def _shown(value: Any) -> str:
    """A value as it is written on the command line: null, [a,b]."""
    return "null" if value is None else f"[{','.join(value)}]" if isinstance(value, list) else str(value)
