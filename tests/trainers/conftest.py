import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread; restore the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
