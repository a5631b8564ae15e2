"""MNIST (LeCun et al., "Gradient-based learning applied to document recognition", 1998) and
Fashion-MNIST (Xiao, Rasul & Vollgraf, "Fashion-MNIST: a novel image dataset for benchmarking
machine learning algorithms", 2017).

Both give ``uint8 (N, 1, 28, 28)`` images in :class:`ImageTensorDataset`, 60,000 train and 10,000
test. Sources, in order: ``data_dir`` (a folder with the four idx files, plain or ``.gz``, also
torchvision's ``MNIST/raw`` layout, or the path of an ``.npz``); for Fashion-MNIST, Debian's
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``); the download
cache; then torchvision's download, only when ``download=True``.
"""

from __future__ import annotations

from pathlib import Path

from visattn.data._registry import DatasetSplits, ImageTensorDataset, register_dataset
from visattn.data._sources import cache_dir, data_not_found, download_root
from visattn.data.idx import find_idx_files, load_idx_pair
from visattn.data.npz import splits_from_npz

__all__ = ["mnist", "fashion_mnist", "DEBIAN_FASHION_MNIST", "load_idx_dataset"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# name -> (torchvision class & folder, mean, std, class names)
_SPECS = {
    "mnist": ("MNIST", (0.1307,), (0.3081,), [str(i) for i in range(10)]),
    "fashion_mnist": ("FashionMNIST", (0.2860,), (0.3530,), _FASHION_CLASSES),
}


def _folders(root: Path, tv_name: str) -> list[Path]:
    return [root, root / "raw", root / tv_name / "raw"]


def load_idx_dataset(
    name: str, *, data_dir: str | None, download: bool, system_dirs: tuple[Path, ...] = ()
) -> DatasetSplits:
    """Find, read and wrap an MNIST-like dataset (``name`` in ``"mnist"``, ``"fashion_mnist"``)."""
    tv_name, mean, std, classes = _SPECS[name]
    tried: list[Path] = []

    def wrap(files: dict[str, tuple[Path, Path]]) -> DatasetSplits:
        x_tr, y_tr = load_idx_pair(*files["train"])
        x_te, y_te = load_idx_pair(*files["test"])
        return DatasetSplits(
            name=name,
            train=ImageTensorDataset(x_tr, y_tr, source=str(files["train"][0])),
            test=ImageTensorDataset(x_te, y_te, source=str(files["test"][0])),
            num_classes=10,
            in_chans=1,
            image_size=(int(x_tr.shape[2]), int(x_tr.shape[3])),
            mean=mean,
            std=std,
            class_names=list(classes),
        )

    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if root.suffix == ".npz":
            if not root.is_file():
                raise data_not_found(name, [root], [f"check the path; {root} does not exist"])
            return splits_from_npz(
                root, name=name, num_classes=10, in_chans=1, mean=mean, std=std, class_names=list(classes)
            )
        candidates = _folders(root, tv_name)
    else:
        candidates = [*system_dirs, *_folders(cache_dir(), tv_name)]
    files = find_idx_files(candidates)
    if files is not None:
        return wrap(files)
    tried += candidates
    if download:
        import torchvision

        dl = download_root(data_dir)
        dataset_cls = getattr(torchvision.datasets, tv_name)
        for train in (True, False):
            dataset_cls(root=str(dl), train=train, download=True)
        files = find_idx_files(_folders(dl, tv_name))
        if files is not None:
            return wrap(files)
        tried += _folders(dl, tv_name)
    hints = [
        "pass --data-dir PATH: a folder with train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
        "t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz), or an .npz with x_train/y_train/x_test/y_test",
        f"pass --download to fetch it with torchvision into {download_root(data_dir)}",
    ]
    if name == "fashion_mnist":
        hints.insert(0, f"apt-get install dataset-fashion-mnist (Debian; installs {DEBIAN_FASHION_MNIST})")
    raise data_not_found(name, tried, hints)


@register_dataset("mnist")
def mnist(*, data_dir: str | None = None, download: bool = False, seed: int = 0) -> DatasetSplits:
    """MNIST handwritten digits: 10 classes, ``uint8 (N, 1, 28, 28)``, 60,000 train / 10,000 test.

    ``seed`` is accepted for the common builder signature; loading involves nothing random.
    """
    return load_idx_dataset("mnist", data_dir=data_dir, download=download)


@register_dataset("fashion_mnist")
def fashion_mnist(*, data_dir: str | None = None, download: bool = False, seed: int = 0) -> DatasetSplits:
    """Fashion-MNIST: 10 clothing classes, ``uint8 (N, 1, 28, 28)``, 60,000 train / 10,000 test.

    Without ``data_dir`` it reads Debian's ``/usr/share/datasets/fashion-mnist`` when installed.
    """
    return load_idx_dataset(
        "fashion_mnist", data_dir=data_dir, download=download, system_dirs=(DEBIAN_FASHION_MNIST,)
    )
