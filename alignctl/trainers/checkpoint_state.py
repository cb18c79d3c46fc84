"""State a trainer keeps besides the model and optimizer, written into every checkpoint and read back on resume."""

from __future__ import annotations

import json
import os
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


class CheckpointState:
    """Mixin for transformers.Trainer subclasses (listed before the Trainer): `checkpoint_state()` (JSON-serialisable,
    or None for nothing to save) goes to `<checkpoint>/<STATE_FILE>`; a resumed run hands it to
    `load_checkpoint_state`, so it continues as an uninterrupted run would."""

    STATE_FILE: str

    def checkpoint_state(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        state = self.checkpoint_state()
        if state is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, self.STATE_FILE), "w") as f:
                json.dump(state, f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = None if checkpoint is None else os.path.join(checkpoint, self.STATE_FILE)
        if path is not None and os.path.exists(path):
            with open(path) as f:
                self.load_checkpoint_state(json.load(f))
