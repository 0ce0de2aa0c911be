import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.set_num_threads(1)  # tiny models run fastest on one thread; xdist gives the parallelism
    torch.manual_seed(0)
    yield
