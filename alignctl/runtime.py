"""Process-wide settings a command applies once, from the config: threads and library chatter."""

from __future__ import annotations

import warnings

import torch

from alignctl.config import RunConfig


def prepare(cfg: RunConfig) -> None:
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
