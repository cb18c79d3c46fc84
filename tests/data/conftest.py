"""A tiny toy_sentiment build shared by the data tests (about 10 s on one CPU thread)."""

import contextlib

import pytest
import torch

from alignctl.data.tasks.toy_sentiment import ToySentimentConfig
from alignctl.models.schema import TinyModelConfig

# Small but not degenerate: a vocabulary large enough for whole-word tokens makes even a 0.16M-parameter model
# write real (if ungrammatical) words, so its samples differ in sentiment and pairs exist.
TINY_DATA = dict(corpus_size=2000, num_train_prompts=24, num_test_prompts=8, max_new_tokens=16)
TINY_MODEL = dict(
    vocab_size=2048, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
    max_position_embeddings=64, pretrain_steps=120, pretrain_batch_size=16, pretrain_lr=1e-2,
)  # fmt: skip


@contextlib.contextmanager
def one_thread():
    """Tiny models run fastest on one thread, and a shared CPU punishes oversubscription; restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tiny_cfgs(**data_overrides):
    return ToySentimentConfig(**{**TINY_DATA, **data_overrides}), TinyModelConfig(**TINY_MODEL)


def build_tiny(cache_dir, **data_overrides):
    """(base model dir, DatasetDict) built under ``cache_dir``."""
    from alignctl.data.tasks import toy_sentiment

    data_cfg, model_cfg = tiny_cfgs(**data_overrides)
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("ALIGNCTL_CACHE_DIR", str(cache_dir))
        return toy_sentiment.build_base_model(data_cfg, model_cfg), toy_sentiment.build_pairs(data_cfg, model_cfg)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("toy-sentiment-cache")


@pytest.fixture(scope="session")
def tiny_build(tiny_cache):
    return build_tiny(tiny_cache)
