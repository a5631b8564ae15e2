"""Shared fixtures: a real tiny dataset shipped with the tests, and deterministic CPU settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run two at a time on two cores; one thread each keeps them fast and deterministic."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def fmnist_small() -> Path:
    """1,200 + 300 real Fashion-MNIST images as an .npz (see tests/assets/README.md)."""
    return ASSETS / "fashion_mnist_small.npz"
