import datasets
import huggingface_hub.constants
import pytest


@pytest.fixture(autouse=True)
def _offline_private_cache(tmp_path_factory, monkeypatch):
    """Nothing reaches for a hub, and datasets' cache of the test files lives in a session temp dir."""
    cache = tmp_path_factory.getbasetemp() / "hf-datasets-cache"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    datasets.disable_progress_bars()
