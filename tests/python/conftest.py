import importlib.util

import numpy as np
import pytest

import hinm

HAS_TORCH = importlib.util.find_spec("torch") is not None

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
needs_cuda = pytest.mark.skipif(not hinm.cuda_available(), reason="no CUDA device (or hinm built without CUDA)")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=[1, 2])
def threads(request):
    """Runs a test once single-threaded and once with two threads; restores the default."""
    hinm.set_num_threads(request.param)
    yield request.param
    hinm.set_num_threads(0)
