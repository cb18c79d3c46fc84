"""State a trainer keeps besides the model and optimizer, written into every checkpoint and read back on resume."""

from __future__ import annotations

import json
import os
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from alignctl.errors import UsageError


class CheckpointState:
    """Mixin for transformers.Trainer subclasses (listed before the Trainer): `checkpoint_state()` (JSON-serialisable,
    or None for nothing to save) goes to `<checkpoint>/<STATE_FILE>`; a resumed run hands it to
    `load_checkpoint_state`, so it continues as an uninterrupted run would."""

    STATE_FILE: str

    def checkpoint_state(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # Private Trainer hooks (no public hook saves into, or reads from, a checkpoint folder): the state is written
    # before Trainer's own files, so a checkpoint that has trainer_state.json (written last; what counts as complete,
    # rundir.last_checkpoint) has it too, however the process dies (tests/trainers/test_trl_seams.py).
    def _save_checkpoint(self, model, trial):
        state = self.checkpoint_state()
        if state is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, self.STATE_FILE), "w") as f:
                json.dump(state, f)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.checkpoint_state() is None:
            return
        path = os.path.join(checkpoint, self.STATE_FILE)
        if not os.path.exists(path):  # resuming without it would silently continue from another state
            raise UsageError(f"{checkpoint} lacks {self.STATE_FILE}, which this objective resumes from; resume from "
                             "a checkpoint that has it, or train afresh with train.overwrite=true")
        with open(path) as f:
            self.load_checkpoint_state(json.load(f))
