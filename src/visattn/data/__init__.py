"""Datasets: real ones (MNIST, Fashion-MNIST, CIFAR, image folders, ``.npz``) and generated ones.

>>> from visattn.data import list_datasets
>>> isinstance(list_datasets(), list)
True
"""

from visattn.data._registry import (
    DatasetSplits,
    ImageTensorDataset,
    list_datasets,
    load_dataset,
    register_dataset,
)

# Dataset modules register themselves on import; keep one import line per file below.

__all__ = ["DatasetSplits", "ImageTensorDataset", "list_datasets", "load_dataset", "register_dataset"]
