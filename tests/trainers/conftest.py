import pytest
import torch

from alignctl.config import TinyModelConfig
from alignctl.data.tasks import tiny_lm

from ._tiny import TEXTS


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread; restore the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-online")
    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64, individual_digits=True)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    tiny_lm.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, path)
    return path
