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


class _Store:
    """A stand-in for the launcher's TCPStore: bytes by key."""

    def __init__(self):
        self.data = {}

    def set(self, key, value):
        self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key):
        return self.data[key]


def test_agree_shares_rank_0s_decision_as_json_never_a_pickle(monkeypatch):
    import json

    from alignctl.errors import UsageError

    store = _Store()
    monkeypatch.setattr(ranks, "_store", lambda: store)
    monkeypatch.setenv("RANK", "0")
    decision = {"run_dir": "/runs/a", "plan": {"action": "resume", "step": 3}}
    assert ranks.agree(lambda: decision) == decision
    assert json.loads(store.data[ranks.AGREE_KEY]) == {"value": decision}  # what crosses the network: plain JSON
    monkeypatch.setenv("RANK", "1")
    assert ranks.agree(None) == decision
    # a bad value found by rank 0: rank 0 raises it (the user reads one line), the others exit 2 without it
    monkeypatch.setenv("RANK", "0")

    def refuse():
        raise UsageError("train.resume=true but nothing to resume")

    with pytest.raises(UsageError, match="nothing to resume"):
        ranks.agree(refuse)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as e:
        ranks.agree(None)
    assert e.value.code == 2
    # a pickle planted in the store is not loaded: JSON refuses it
    import pickle

    store.set(ranks.AGREE_KEY, pickle.dumps({"value": 1}))
    with pytest.raises(ValueError):
        ranks.agree(None)
