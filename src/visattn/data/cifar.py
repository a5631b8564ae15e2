"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009).

Images are ``uint8 (N, 3, 32, 32)`` in :class:`ImageTensorDataset`, 50,000 train and 10,000 test.
Sources, in order: ``data_dir`` (torchvision's folder layout ``cifar-10-batches-py`` /
``cifar-100-python``, the folder itself, or the path of an ``.npz``); the download cache; then
torchvision's download, only when ``download=True``. ``make_loaders(augment="default")`` uses
random crop 32 with 4 pixels of zero padding plus a horizontal flip (He et al. 2016).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visattn.data._registry import DatasetSplits, ImageTensorDataset, register_dataset
from visattn.data._sources import cache_dir, data_not_found, download_root
from visattn.data.npz import labels_to_int64, splits_from_npz

__all__ = ["cifar10", "cifar100", "read_cifar_batches"]

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# name -> (folder, train files, test files, label key, names meta file, names key, tv class, mean, std)
_SPECS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "meta": ("batches.meta", "label_names"),
        "tv": "CIFAR10",
        "num_classes": 10,
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "meta": ("meta", "fine_label_names"),
        "tv": "CIFAR100",
        "num_classes": 100,
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"CIFAR batch file {str(path)!r} is corrupt or truncated: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(
            f"CIFAR batch file {str(path)!r}: expected a pickled dict, found {type(obj).__name__}"
        )
    return obj


def read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read python-pickle CIFAR batches into ``uint8 (N, 3, 32, 32)`` and ``int64 (N,)`` tensors.

    Raises:
        ValueError: a batch lacks ``data``/``label_key``, has the wrong row size, or counts differ.
    """
    xs, ys = [], []
    for fname in files:
        path = folder / fname
        batch = _unpickle(path)
        for key in ("data", label_key):
            if key not in batch:
                raise ValueError(f"CIFAR batch file {str(path)!r} has no key {key!r}; found {sorted(batch)}")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(
                f"CIFAR batch file {str(path)!r}: expected uint8 data of shape (N, 3072), "
                f"found {data.dtype} {data.shape}"
            )
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(
            labels_to_int64(np.asarray(batch[label_key]), data.shape[0], where=f"CIFAR batch file {path}")
        )
    return torch.cat(xs), torch.cat(ys)


def _find(spec: dict[str, Any], candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if all((folder / f).is_file() for f in spec["train"] + spec["test"]):
            return folder
    return None


def _load(name: str, *, data_dir: str | None, download: bool) -> DatasetSplits:
    spec = _SPECS[name]
    mean, std, k = spec["mean"], spec["std"], spec["num_classes"]
    roots = [Path(data_dir).expanduser()] if data_dir is not None else [cache_dir()]
    if data_dir is not None and roots[0].suffix == ".npz":
        if not roots[0].is_file():
            raise data_not_found(name, roots, [f"check the path; {roots[0]} does not exist"])
        splits = splits_from_npz(
            roots[0],
            name=name,
            num_classes=k,
            in_chans=3,
            mean=mean,
            std=std,
            default_augment="pad_crop_flip",
        )
        if splits.class_names is None and name == "cifar10":
            splits.class_names = list(_CIFAR10_CLASSES)
        return splits
    candidates = [r / spec["folder"] for r in roots] + roots
    folder = _find(spec, candidates)
    if folder is None and download:
        import torchvision

        dl = download_root(data_dir)
        getattr(torchvision.datasets, spec["tv"])(root=str(dl), train=True, download=True)
        candidates.append(dl / spec["folder"])
        folder = _find(spec, [dl / spec["folder"]])
    if folder is None:
        raise data_not_found(
            name,
            candidates,
            [
                f"pass --data-dir PATH: a folder holding torchvision's {spec['folder']}/ (the python version "
                "of the dataset), or an .npz with x_train/y_train/x_test/y_test",
                f"pass --download to fetch it with torchvision into {download_root(data_dir)}",
            ],
        )
    x_tr, y_tr = read_cifar_batches(folder, spec["train"], spec["label_key"])
    x_te, y_te = read_cifar_batches(folder, spec["test"], spec["label_key"])
    meta_file, meta_key = spec["meta"]
    class_names = None
    if (folder / meta_file).is_file():
        meta = _unpickle(folder / meta_file)
        class_names = [str(c) for c in meta.get(meta_key, [])] or None
    top = int(max(y_tr.max(), y_te.max()))
    if top >= k:
        raise ValueError(f"CIFAR folder {str(folder)!r}: dataset {name} has {k} classes, found label {top}")
    return DatasetSplits(
        name=name,
        train=ImageTensorDataset(x_tr, y_tr, source=str(folder)),
        test=ImageTensorDataset(x_te, y_te, source=str(folder)),
        num_classes=k,
        in_chans=3,
        image_size=(32, 32),
        mean=mean,
        std=std,
        class_names=class_names,
        default_augment="pad_crop_flip",
    )


@register_dataset("cifar10")
def cifar10(*, data_dir: str | None = None, download: bool = False, seed: int = 0) -> DatasetSplits:
    """CIFAR-10: 10 classes, ``uint8 (N, 3, 32, 32)``, 50,000 train / 10,000 test.

    ``seed`` is accepted for the common builder signature; loading involves nothing random.
    """
    return _load("cifar10", data_dir=data_dir, download=download)


@register_dataset("cifar100")
def cifar100(*, data_dir: str | None = None, download: bool = False, seed: int = 0) -> DatasetSplits:
    """CIFAR-100 (fine labels): 100 classes, ``uint8 (N, 3, 32, 32)``, 50,000 train / 10,000 test."""
    return _load("cifar100", data_dir=data_dir, download=download)
