"""Reader for any ``.npz`` holding ``x_train``, ``y_train``, ``x_test``, ``y_test``, and the ``npz`` dataset.

Images may be ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` in {1, 3}; integer
arrays must lie in ``[0, 255]``; float arrays must be finite and lie in ``[0, 1]`` (scaled by 255)
or ``[0, 255]`` (rounded). Labels are integers ``(N,)`` in ``[0, K)``. An npz of JPEG byte streams
(``train_jpeg`` + ``train_offsets``, as in the project's CIFAR-10 copy) is decoded too.
Every problem raises ``ValueError`` naming the file and the key.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visattn.data._registry import DatasetSplits, ImageTensorDataset, register_dataset
from visattn.data._sources import channel_stats

__all__ = ["load_npz_arrays", "images_to_nchw", "labels_to_int64", "splits_from_npz", "npz"]

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def images_to_nchw(arr: np.ndarray, *, where: str) -> torch.Tensor:
    """Convert an image array to ``uint8 (N, C, H, W)``.

    Args:
        arr: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` in {1, 3}; an integer
            dtype with values in ``[0, 255]`` or a float dtype in ``[0, 1]`` or ``[0, 255]``.
        where: names the source in errors, e.g. ``"file 'a.npz', key 'x_train'"``.

    Raises:
        ValueError: wrong rank, ambiguous channel layout, NaN/Inf, or values out of range.

    >>> images_to_nchw(np.zeros((2, 28, 28), np.uint8), where="demo").shape
    torch.Size([2, 1, 28, 28])
    >>> images_to_nchw(np.ones((2, 32, 32, 3), np.float32), where="demo")[0, :, 0, 0]
    tensor([255, 255, 255], dtype=torch.uint8)
    """
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
        elif arr.shape[1] not in (1, 3):
            raise ValueError(
                f"{where}: cannot tell the channel axis of shape {arr.shape}; expected (N, H, W), "
                "(N, H, W, C) or (N, C, H, W) with C in {1, 3}"
            )
    else:
        raise ValueError(
            f"{where}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{where}: holds no images (shape {arr.shape})")
    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: contains NaN or Inf values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 255.0:
            raise ValueError(f"{where}: float values must lie in [0, 1] or [0, 255], found [{lo}, {hi}]")
        scale = 255.0 if hi <= 1.0 else 1.0
        out = np.rint(arr.astype(np.float32) * scale).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{where}: integer values must lie in [0, 255], found [{lo}, {hi}]")
        out = arr.astype(np.uint8)
    else:
        raise ValueError(f"{where}: unsupported dtype {arr.dtype}; expected an integer or float array")
    return torch.from_numpy(np.ascontiguousarray(out))


def labels_to_int64(arr: np.ndarray, n: int, *, where: str) -> torch.Tensor:
    """Convert labels to ``int64 (N,)``, checking count, integrality and sign.

    >>> labels_to_int64(np.array([0, 2, 1], np.uint8), 3, where="demo")
    tensor([0, 2, 1])
    """
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{where}: expected labels of shape ({n},) to match the images, got {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{where}: labels must be whole numbers, found NaN/Inf or fractions")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if n and out.min() < 0:
        raise ValueError(f"{where}: labels must be >= 0, found {int(out.min())}")
    return torch.from_numpy(out)


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray, *, where: str) -> np.ndarray:
    from PIL import Image

    raw = blob.tobytes()
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.shape[0] < 2 or offsets[-1] > len(raw):
        raise ValueError(f"{where}: offsets {offsets.shape} do not fit a byte stream of {len(raw)} bytes")
    images = []
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        with Image.open(io.BytesIO(raw[a:b])) as im:
            images.append(np.asarray(im.convert("RGB")))
    return np.stack(images)


def load_npz_arrays(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an npz file.

    Returns:
        ``{"x_train": uint8 (N, C, H, W), "y_train": int64 (N,), "x_test": ..., "y_test": ...,
        "class_names": list[str] | None}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a missing key (named), mismatched counts, NaN/Inf or out-of-range values,
            or train and test images of different shapes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"npz file {str(path)!r} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"npz file {str(path)!r} cannot be read as .npz (truncated or not a zip): {err}"
        ) from None
    try:
        with data:
            out = _read_npz_members(data, path)
    except (zipfile.BadZipFile, EOFError, OSError) as err:  # a member cut off or with a bad CRC
        raise ValueError(f"npz file {str(path)!r} is corrupt (a member cannot be read): {err}") from None
    return out


def _read_npz_members(data: Any, path: Path) -> dict[str, Any]:
    """The checked arrays of an open npz file (see :func:`load_npz_arrays`)."""
    keys = set(data.files)
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        where_x = f"npz file {str(path)!r}, key {xk!r}"
        if xk in keys:
            x = images_to_nchw(data[xk], where=where_x)
        elif f"{split}_jpeg" in keys and f"{split}_offsets" in keys:
            where_x = f"npz file {str(path)!r}, key '{split}_jpeg'"
            decoded = _decode_jpegs(data[f"{split}_jpeg"], data[f"{split}_offsets"], where=where_x)
            x = images_to_nchw(decoded, where=where_x)
        else:
            raise ValueError(
                f"npz file {str(path)!r} has no key {xk!r}; expected keys {list(_KEYS)}, found {sorted(keys)}"
            )
        if yk not in keys:
            raise ValueError(
                f"npz file {str(path)!r} has no key {yk!r}; expected keys {list(_KEYS)}, found {sorted(keys)}"
            )
        out[xk] = x
        out[yk] = labels_to_int64(data[yk], x.shape[0], where=f"npz file {str(path)!r}, key {yk!r}")
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise ValueError(
            f"npz file {str(path)!r}: x_train images are {tuple(out['x_train'].shape[1:])} (C, H, W) but "
            f"x_test images are {tuple(out['x_test'].shape[1:])}; expected the same shape"
        )
    out["class_names"] = [str(c) for c in data["class_names"].tolist()] if "class_names" in keys else None
    return out


def splits_from_npz(
    path: str | os.PathLike[str],
    *,
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    class_names: list[str] | None = None,
    default_augment: str = "none",
) -> DatasetSplits:
    """Build :class:`DatasetSplits` of two :class:`ImageTensorDataset` from an npz file.

    ``num_classes``/``in_chans`` given by a named dataset (e.g. 10 and 3 for CIFAR-10) are checked
    against the file; ``mean``/``std`` default to the training images' exact per-channel statistics.
    """
    arrays = load_npz_arrays(path)
    x_tr, y_tr, x_te, y_te = (arrays[k] for k in _KEYS)
    where = f"npz file {str(path)!r}"
    if in_chans is not None and x_tr.shape[1] != in_chans:
        raise ValueError(
            f"{where}: dataset {name} expects {in_chans}-channel images, got {tuple(x_tr.shape)}"
        )
    top = int(max(y_tr.max(), y_te.max())) + 1
    if num_classes is None:
        num_classes = top
    elif top > num_classes:
        raise ValueError(f"{where}: dataset {name} has {num_classes} classes, found label {top - 1}")
    if mean is None or std is None:
        mean, std = channel_stats(x_tr)
    names = class_names or arrays["class_names"]
    return DatasetSplits(
        name=name,
        train=ImageTensorDataset(x_tr, y_tr, source=f"{path}:train"),
        test=ImageTensorDataset(x_te, y_te, source=f"{path}:test"),
        num_classes=num_classes,
        in_chans=int(x_tr.shape[1]),
        image_size=(int(x_tr.shape[2]), int(x_tr.shape[3])),
        mean=tuple(mean),
        std=tuple(std),
        class_names=names,
        default_augment=default_augment,
    )


@register_dataset("npz")
def npz(
    *,
    data_dir: str | None,
    download: bool = False,
    seed: int = 0,
    num_classes: int | None = None,
    augment: str = "none",
) -> DatasetSplits:
    """Any ``.npz`` with ``x_train/y_train/x_test/y_test``; ``data_dir`` is the file's path.

    Options: ``num_classes`` (default: largest label + 1), ``augment`` (the preset ``"default"``
    resolves to; ``"none"`` unless told). ``download`` and ``seed`` are accepted for the common
    builder signature; there is nothing to download and nothing random.
    """
    if data_dir is None:
        raise FileNotFoundError("dataset npz needs --data-dir PATH pointing to an .npz file; none given")
    path = Path(data_dir).expanduser()
    if download:
        raise ValueError(
            "dataset npz cannot be downloaded; pass --data-dir pointing to an existing .npz file"
        )
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if len(files) != 1:
            raise FileNotFoundError(
                f"dataset npz: data_dir {str(path)!r} is a folder holding {len(files)} .npz files; "
                "pass the path of one .npz file"
            )
        path = files[0]
    return splits_from_npz(path, name=path.stem, num_classes=num_classes, default_augment=augment)
