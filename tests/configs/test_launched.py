"""ranks.launched(): a process a launcher started (alignctl's own, accelerate's, torchrun) is a rank of its run,
however many ranks there are; only a process no launcher started launches a distributed run."""

import pytest

from alignctl import ranks

CLEAN = ("WORLD_SIZE", *ranks.LAUNCHER_VARIABLES)


@pytest.mark.parametrize("env, launched", [
    ({}, False),
    ({"WORLD_SIZE": "1"}, False),  # a world of one set by hand is not a launcher
    ({"WORLD_SIZE": "2"}, True),
    ({ranks.LAUNCHED: "1", "WORLD_SIZE": "1"}, True),  # alignctl's own launch of one process
    ({"ACCELERATE_MIXED_PRECISION": "no"}, True),  # accelerate launch, simple launcher (one process)
    ({"TORCHELASTIC_RUN_ID": "x", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}, True),  # torchrun --nproc_per_node 1
])  # fmt: skip
def test_launched_reads_the_launchers_environment(monkeypatch, env, launched):
    for name in CLEAN:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ranks.launched() is launched
    assert ranks.in_ranks() is (int(env.get("WORLD_SIZE", "1")) > 1)
