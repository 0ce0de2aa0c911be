import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.set_num_threads(1)  # tiny models run fastest on one thread; xdist gives the parallelism
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a GPU: skipped (and said so) on machines without one, such as the CI."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
