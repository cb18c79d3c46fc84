"""Two-step runs compared: one trained straight to step 2, one stopped at its step-1 checkpoint and resumed."""

import json

from alignctl.cli import main as cli


def step_rows(run_dir) -> dict[int, dict]:
    """metrics.jsonl's logged steps, keyed by step."""
    return {row["step"]: row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in row}  # fmt: skip


def straight_and_resumed(args: list[str], tmp_path) -> tuple[dict[int, dict], dict[int, dict]]:
    """The step rows of both runs of `args` (which must checkpoint every step: train.save_steps=1)."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert cli.main(["train", *args, "train.max_steps=2", f"hydra.run.dir={straight}"]) == 0
    assert cli.main(["train", *args, "train.max_steps=1", f"hydra.run.dir={stopped}"]) == 0
    assert cli.main(["train", *args, "train.max_steps=2", "train.resume=true", f"hydra.run.dir={stopped}"]) == 0
    return step_rows(straight), step_rows(stopped)
