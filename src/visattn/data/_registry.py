"""The dataset registry and the container every dataset builder returns.

A builder is ``fn(*, data_dir: str | None, download: bool, seed: int, **options) -> DatasetSplits``.
``train`` and ``test`` yield ``(image, label)`` with ``image`` a ``uint8`` tensor ``(C, H, W)``
(or a PIL image for image folders) and ``label`` an ``int``; conversion to float, normalisation
and augmentation happen in the loaders (``visattn.data.make_loaders``), so one raw dataset can
serve both an augmented training view and a plain validation view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from visattn.registry import Registry

__all__ = [
    "DatasetSplits",
    "ImageTensorDataset",
    "register_dataset",
    "load_dataset",
    "list_datasets",
]

_DATASETS: Registry[Any] = Registry("dataset")


@dataclass
class DatasetSplits:
    """A dataset's official train and test sets plus what a model needs to know about them.

    ``extras`` carries per-split side information, e.g. ``{"test_boxes": (N, 4) tensor}`` of
    digit boxes ``(x0, y0, x1, y1)`` in pixels for the cluttered-MNIST generators, or
    ``{"val": Dataset}`` for a dataset with an official validation split (Flowers-102), which
    ``make_loaders`` then uses instead of carving one from ``train``.

    ``default_augment`` names the augmentation preset (``visattn.data.transforms``) that
    ``make_loaders(augment="default")`` picks: ``"none"`` for digits and generated sets,
    ``"pad_crop_flip"`` for CIFAR, ``"resized_crop_flip"`` for image folders.
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    default_augment: str = "none"


class ImageTensorDataset(Dataset):
    """In-memory images ``uint8 (N, C, H, W)`` and labels ``int64 (N,)``.

    >>> ds = ImageTensorDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4))
    >>> x, y = ds[1]
    >>> tuple(x.shape), y
    ((1, 28, 28), 1)
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, source: str = "<memory>") -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.uint8:
            got: object = (
                f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images)
            )
            raise ValueError(f"images from {source} must be uint8 (N, C, H, W), got {got}")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
            raise ValueError(
                f"labels from {source} must be (N,) with N = {images.shape[0]} images, got {got}"
            )
        self.images = images
        self.labels = labels.long()
        self.source = source

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def register_dataset(name: str | None = None):
    """Decorator registering a dataset builder under ``name``."""
    return _DATASETS.register(name)


def load_dataset(
    name: str, *, data_dir: str | None = None, download: bool = False, seed: int = 0, **options: Any
) -> DatasetSplits:
    """Load the dataset registered as ``name``.

    Sources, in order: ``data_dir`` when given, the Debian package's folder where one exists,
    then torchvision's download only when ``download=True``. Raises ``FileNotFoundError``
    naming the paths tried, with how to get the data.
    """
    return _DATASETS.create(name, data_dir=data_dir, download=download, seed=seed, **options)


def list_datasets(filter: str | None = None) -> list[str]:
    """Names of all registered datasets, sorted; ``filter`` is a glob (``"*mnist*"``)."""
    return _DATASETS.names(filter)
