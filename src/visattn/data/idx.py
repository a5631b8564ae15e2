"""Reader for the idx format of MNIST and Fashion-MNIST (LeCun et al. 1998; Xiao et al. 2017).

An idx file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
``uint32`` sizes, then the values in C order. Files may be gzip-compressed (``.gz``). Every
check raises ``ValueError`` naming the file and what was expected against what was found.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["read_idx", "load_idx_pair", "find_idx_files", "IDX_NAMES"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: base names of the four files, per split: (images, labels)
IDX_NAMES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError) as err:
            raise ValueError(f"idx file {str(path)!r}: corrupt or truncated gzip stream ({err})") from None
    return path.read_bytes()


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read one idx file (plain or gzip) into a numpy array of the stored shape.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.
        ndim: the number of dimensions expected (3 for images ``(N, H, W)``, 1 for labels ``(N,)``);
            ``None`` accepts any.

    Returns:
        Array of shape ``(N, ...)`` in native byte order (``uint8`` for MNIST).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad magic number, unknown dtype code, wrong ``ndim``, or a data length that
            does not match the header (truncated or trailing bytes).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
    >>> _ = f.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(f, ndim=1)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx file {str(path)!r} does not exist")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"idx file {str(path)!r}: expected a 4-byte magic number, found {len(raw)} bytes")
    zero0, zero1, code, nd = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or code not in _DTYPES:
        raise ValueError(
            f"idx file {str(path)!r}: bad magic number {raw[:4].hex()}; expected 0000 followed by a dtype "
            f"code in {[hex(c) for c in _DTYPES]} and ndim"
        )
    if ndim is not None and nd != ndim:
        raise ValueError(f"idx file {str(path)!r}: expected {ndim} dimensions, header says {nd}")
    header_len = 4 + 4 * nd
    if len(raw) < header_len:
        raise ValueError(
            f"idx file {str(path)!r}: truncated header, expected {header_len} bytes, found {len(raw)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_len
    if found != expected:
        kind = "truncated" if found < expected else "has trailing bytes"
        raise ValueError(
            f"idx file {str(path)!r} {kind}: header says shape {dims} = {expected} data bytes, "
            f"found {found} bytes"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def load_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an image file and its label file into ``uint8 (N, 1, H, W)`` and ``int64 (N,)`` tensors.

    Raises:
        ValueError: the images are not ``uint8 (N, H, W)``, labels not ``(N,)``, or the counts differ
            (the message names both files and both counts).
    """
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8:
        raise ValueError(f"idx file {str(images_path)!r}: expected uint8 images, found {images.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"idx files disagree: {str(images_path)!r} holds {images.shape[0]} images but "
            f"{str(labels_path)!r} holds {labels.shape[0]} labels; expected equal counts"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def find_idx_files(folders: Sequence[Path]) -> dict[str, tuple[Path, Path]] | None:
    """Find the four MNIST-style idx files in the first folder that holds all of them.

    Accepts each name plain or ``.gz``, with ``-idx`` or ``.idx`` (e.g. ``train-images.idx3-ubyte``).
    Returns ``{"train": (images, labels), "test": (images, labels)}`` or ``None``.
    """
    for folder in folders:
        found: dict[str, tuple[Path, Path]] = {}
        for split, names in IDX_NAMES.items():
            pair = []
            for base in names:
                variants = [base, base.replace("-idx", ".idx")]
                hits = [folder / (v + ext) for v in variants for ext in ("", ".gz")]
                hit = next((h for h in hits if h.is_file()), None)
                if hit is None:
                    break
                pair.append(hit)
            if len(pair) == 2:
                found[split] = (pair[0], pair[1])
        if len(found) == 2:
            return found
    return None
