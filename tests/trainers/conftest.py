import pytest

from alignctl.data.tasks import tiny_lm
from alignctl.models import files
from alignctl.models.schema import TinyModelConfig

from ._tiny import TEXTS


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-online")
    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64, individual_digits=True)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    files.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, path)
    return path
