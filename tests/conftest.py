"""Shared fixtures: a real tiny dataset shipped with the tests, and deterministic CPU settings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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


def module_class(name: str):
    """The class of a drop-in attention or of a sensor (both take ``channels`` first)."""
    from visattn.attention import get_attention_class, get_sensor_class, list_sensors

    return get_sensor_class(name) if name in list_sensors() else get_attention_class(name)


def create_module(name: str, channels: int, **kw):
    """Build a drop-in attention or a sensor by name (the reliability tests cover both)."""
    import visattn
    from visattn.attention import create_sensor, list_sensors

    return (
        create_sensor(name, channels, **kw)
        if name in list_sensors()
        else visattn.create_attention(name, channels, **kw)
    )


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    """Two-level pipeline tests: ``train/`` (4 per class) and ``val/`` (2 per class) of three shape
    classes, 40x40 PNGs. (Kept here, not in ``tests/pipelines/conftest.py``: a second module named
    ``conftest`` would shadow this one for ``from conftest import ...``.)"""
    from two_level_helpers import make_folder  # tests/pipelines/, on sys.path while its tests run

    return make_folder(tmp_path / "shapes", per_class={"train": 4, "val": 2})


def write_lsp(
    root: Path,
    n: int = 12,
    *,
    size: tuple[int, int] = (48, 40),
    layout: str = "14x3",
    splits: dict | None = None,
    seed: int = 0,
) -> tuple[Path, object]:
    """A tiny synthetic LSP/LSPET folder: ``images/imNNNNN.jpg`` (``size`` = (W, H)) and ``joints.mat``.

    Joints lie inside the image, all visible; returns ``(root, joints (N, 14, 3))``. ``splits``, when
    given, is written as ``splits.json``.
    """
    import json

    import numpy as np
    import scipy.io
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    joints = np.zeros((n, 14, 3))
    joints[..., 0] = rng.uniform(4, w - 5, (n, 14))
    joints[..., 1] = rng.uniform(4, h - 5, (n, 14))
    joints[..., 2] = 1
    for k in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{k + 1:05d}.jpg")
    mat = joints.transpose(1, 2, 0) if layout == "14x3" else joints.transpose(2, 1, 0)
    scipy.io.savemat(str(root / "joints.mat"), {"joints": mat})
    if splits is not None:
        (root / "splits.json").write_text(json.dumps(splits))
    return root, joints


@pytest.fixture
def lsp_folder(tmp_path: Path):
    """Factory: ``lsp_folder(n=12, **options)`` writes a synthetic LSP folder (see :func:`write_lsp`)."""

    def make(n: int = 12, **options):
        return write_lsp(tmp_path / "lsp", n, **options)

    return make


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/NAME.py`` as a module (``benchmarks/`` is not a package; its ``_common`` is
    importable once the folder is on ``sys.path``)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
