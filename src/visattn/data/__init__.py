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
from visattn.data.cifar import cifar10, cifar100  # noqa: F401  (registers cifar10, cifar100)
from visattn.data.cluttered import cluttered_mnist, translated_mnist  # noqa: F401  (registers mnist_translated60, mnist_cluttered60, mnist_cluttered100)
from visattn.data.folder import flowers102, imagefolder  # noqa: F401  (registers them)
from visattn.data.idx import load_idx_pair, read_idx
from visattn.data.loaders import Loaders, make_loaders, split_indices
from visattn.data.mnist import fashion_mnist  # noqa: F401  (the module registers mnist, fashion_mnist)
from visattn.data.npz import load_npz_arrays  # (the module registers "npz")
from visattn.data.pose import lspet  # noqa: F401  (registers lspet: LSP/LSPET pose data)
from visattn.data.transforms import AUGMENT_PRESETS, BatchTransform

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
