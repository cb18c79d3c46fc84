"""Process-wide settings a command applies once, from the config: threads and library chatter."""

from __future__ import annotations

import os
import warnings

import torch

from alignctl.config.schema import RunConfig
from alignctl.models.schema import EMBEDDED_MODELS


def prepare(cfg: RunConfig) -> None:
    if cfg.model.name in EMBEDDED_MODELS:  # built locally: nothing may reach for a hub, even by accident
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    quiet_libraries()


def quiet_libraries() -> None:
    """alignctl prints its own progress; library progress bars and deprecation chatter only bury it."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def device() -> str:
    """Where a run's models live: the GPU when there is one (Trainer's choice too), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"
