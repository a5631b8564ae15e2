"""Datasets: real ones (MNIST, Fashion-MNIST, CIFAR, image folders, ``.npz``) and generated ones.

>>> from visattn.data import list_datasets
>>> isinstance(list_datasets(), list)
True
"""

from visattn.data import distorted  # noqa: F401  (registers mnist_rotated, _rts, _projective, _elastic)
from visattn.data._registry import (
    DatasetSplits,
    ImageTensorDataset,
    list_datasets,
    load_dataset,
    register_dataset,
)

# Dataset modules register themselves on import; keep one import line per file below.
from visattn.data import cifar, folder, mnist, npz  # noqa: F401,E402,I001  (real datasets)
from visattn.data.idx import load_idx_pair, read_idx  # noqa: E402,I001
from visattn.data.loaders import Loaders, make_loaders, split_indices  # noqa: E402,I001
from visattn.data.npz import load_npz_arrays  # noqa: E402,I001
from visattn.data.transforms import AUGMENT_PRESETS, BatchTransform  # noqa: E402,I001

__all__ = ["DatasetSplits", "ImageTensorDataset", "list_datasets", "load_dataset", "register_dataset"]
__all__ += [
    "AUGMENT_PRESETS",
    "BatchTransform",
    "Loaders",
    "load_idx_pair",
    "load_npz_arrays",
    "make_loaders",
    "read_idx",
    "split_indices",
]
