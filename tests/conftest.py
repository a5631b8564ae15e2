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


# ---------------------------------------------------------------------------------------------------
# Small runs shared by the engine, CLI and reliability tests (import: ``from conftest import ...``).

SMALL_RUN: dict = {
    "model": "mnist_cnn",
    "data": "npz",
    "epochs": 2,
    "batch_size": 32,
    "lr": 0.05,
    "limit_train": 128,
    "augment": "none",
    "seed": 0,
    "deterministic": True,
    "progress": False,
    "test_at_end": False,
}


def small_train_config(out: Path | str, data: Path | str, **overrides):
    """A ``TrainConfig`` of a seconds-long ``mnist_cnn`` run on the ``.npz`` at ``data`` writing to ``out``
    (``SMALL_RUN`` with ``overrides``)."""
    from visattn.train import TrainConfig

    return TrainConfig(**{**SMALL_RUN, "data_dir": str(data), "out": str(out), **overrides})


def train_argv(
    data: Path | str,
    out: Path | str,
    *extra: str,
    epochs: int = 1,
    batch_size: int = 32,
    limit_train: int = 64,
    sets: tuple[str, ...] = (),
) -> list[str]:
    """``visattn train`` arguments of a tiny ``mnist_cnn`` run on the ``.npz`` at ``data`` (no progress
    bar), then ``--set`` for each of ``sets`` and the ``extra`` arguments."""
    argv = ["train", "--model", "mnist_cnn", "--data", "npz", "--data-dir", str(data)]
    argv += ["--epochs", str(epochs), "--batch-size", str(batch_size), "--out", str(out)]
    for item in ("progress=false", f"limit_train={limit_train}", *sets):
        argv += ["--set", item]
    return [*argv, *extra]


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    """Two-level pipeline tests: ``train/`` (4 per class) and ``val/`` (2 per class) of three shape
    classes, 40x40 PNGs. (Kept here, not in ``tests/pipelines/conftest.py``: a second module named
    ``conftest`` would shadow this one for ``from conftest import ...``.)"""
    from two_level_helpers import make_folder  # tests/pipelines/, on sys.path while its tests run

    return make_folder(tmp_path / "shapes", per_class={"train": 4, "val": 2})
