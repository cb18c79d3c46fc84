import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The kernel tests use tiny tensors: one intra-op thread avoids thread hand-offs on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
