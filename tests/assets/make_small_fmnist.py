"""Rebuild fashion_mnist_small.npz from Debian's dataset-fashion-mnist package."""

import gzip
from pathlib import Path

import numpy as np

SRC = Path("/usr/share/datasets/fashion-mnist")


def _read(name: str, offset: int) -> np.ndarray:
    with gzip.open(SRC / name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


if __name__ == "__main__":
    xtr = _read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    ytr = _read("train-labels-idx1-ubyte.gz", 8)
    xte = _read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    yte = _read("t10k-labels-idx1-ubyte.gz", 8)
    out = Path(__file__).with_name("fashion_mnist_small.npz")
    np.savez_compressed(out, x_train=xtr[:1200], y_train=ytr[:1200], x_test=xte[:300], y_test=yte[:300])
    print(out)
