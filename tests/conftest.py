"""Shared fixtures: tiny random models, and the GPU marker that skips cleanly without CUDA."""
from __future__ import annotations

from pathlib import Path

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: the tiny networks gain nothing from more, and OpenMP
    spinning on a busy 2-core machine costs seconds. Modules opt in through ``pytestmark``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models():
    """The tiny preset on seeded random weights, shared read-only by the tests."""
    from training.checkpoints import load_models

    return load_models(preset="tiny", random_init=True)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified tiny bundle on seeded random weights; read-only, copy it with ``tests.helpers.copy_bundle``."""
    from tests.helpers import export_tiny

    return export_tiny(tmp_path_factory.getbasetemp())
