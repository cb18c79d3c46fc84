import os
from pathlib import Path

import pytest
import torch


def session_cache_dir(tmp_path_factory) -> Path:
    """The test session's artifact cache: one for all test workers (pytest-xdist gives each worker its own basetemp
    under a common folder), since the cache builds each artifact once under a file lock and workers would otherwise
    each build the embedded base models and datasets again."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cache"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Built artifacts go to a per-session temp cache, never the user's."""
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(session_cache_dir(tmp_path_factory)))
    monkeypatch.setenv("WANDB_MODE", "offline")
    # rich wraps at the terminal's width, and a test worker has none: one width for every test
    monkeypatch.setenv("COLUMNS", "160")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny models and tensors: one intra-op thread is fastest and avoids thread hand-offs on a busy
    2-core machine. Restores the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fails a test that loads a model or dataset: config checks must come first."""
    from alignctl.run import build, sources

    def forbidden(*a, **k):
        raise AssertionError("a model or dataset was loaded before the config was validated")

    monkeypatch.setattr(sources, "policy_source", forbidden)
    monkeypatch.setattr(build, "rows", forbidden)
