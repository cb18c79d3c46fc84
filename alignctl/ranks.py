"""Which rank this process is, and what the ranks of one multi-process run agree on (alignctl.run.distributed
launches them). A leaf: the trainers' shared caches and the run's set-up both read it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from alignctl.errors import EXIT_USAGE, UsageError

AGREE_KEY = "alignctl/run-dir-and-plan"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def in_ranks() -> bool:
    """Whether this process is one rank of several (started by accelerate launch / torchrun)."""
    return world_size() > 1


# Set by a launcher in the processes it starts: alignctl's own launch (LAUNCHED), accelerate launch (its simple and
# multi-process launchers both set ACCELERATE_MIXED_PRECISION), torchrun (TORCHELASTIC_RUN_ID, LOCAL_RANK).
LAUNCHED = "ALIGNCTL_LAUNCHED"
LAUNCHER_VARIABLES = (LAUNCHED, "ACCELERATE_MIXED_PRECISION", "TORCHELASTIC_RUN_ID", "LOCAL_RANK")


def launched() -> bool:
    """Whether a launcher started this process: it is then a rank of its run, one of several or the only one, and
    never launches the run again (WORLD_SIZE > 1 alone would miss a one-process run, which relaunched itself)."""
    return in_ranks() or any(name in os.environ for name in LAUNCHER_VARIABLES)


def is_main() -> bool:
    return rank() == 0


def agree(decide: Callable[[], Any] | None) -> Any:
    """Rank 0's `decide()` (JSON: the run directory, the plan), shared with every rank; the other ranks pass None.
    A UsageError there ends every rank with exit code 2; rank 0 alone raises it, so the user reads it once.

    Plain JSON goes over the store, never a pickle: the store listens on the network, and whoever can reach its port
    could otherwise run code in every rank that loads what it reads.

    Exchanged through the launcher's key-value store (torchrun's, at MASTER_ADDR:MASTER_PORT), not the process
    group: the group is left for the Trainer to start, after the run's models and data are loaded, because
    transformers' save_pretrained writes nothing on a rank other than 0 of a started group (a cached model built
    there would come out empty) and because a rank waiting in a collective cannot take a signal."""
    store = _store()
    if is_main():
        try:
            value = decide()
        except UsageError:
            store.set(AGREE_KEY, json.dumps({"error": True}))
            raise
        store.set(AGREE_KEY, json.dumps({"value": value}))
        return value
    payload = json.loads(store.get(AGREE_KEY))
    if payload.get("error"):
        raise SystemExit(EXIT_USAGE)
    return payload["value"]


def _store():
    from torch.distributed import TCPStore

    return TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"]), world_size(),
                    is_master=False, timeout=timedelta(minutes=10))  # fmt: skip


def any_rank(flag: bool) -> bool:
    """Whether `flag` holds on any rank (every rank must call it at the same point)."""
    import torch
    import torch.distributed as dist

    state = _process_group()
    value = torch.tensor([int(flag)], device=state.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _process_group():
    """The ranks' process group, as the Trainer's accelerator will find it (gloo on CPU): accelerate's state."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
