"""Shared helpers for the dataset builders: where data may live and how to say it is missing.

Every builder looks in the same order: the user's explicit ``data_dir``, a system folder
(Debian's ``/usr/share/datasets/...`` where a package exists), the download cache
(``~/.cache/visattn``, or ``$VISATTN_CACHE``), and finally torchvision's download when the
user asked for it. When nothing is found, :func:`data_not_found` builds one
``FileNotFoundError`` that names every path tried and how to get the data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["cache_dir", "data_not_found", "channel_stats", "download_root"]


def cache_dir() -> Path:
    """The download cache: ``$VISATTN_CACHE`` if set, else ``~/.cache/visattn``.

    >>> isinstance(cache_dir(), Path)
    True
    """
    env = os.environ.get("VISATTN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "visattn"


def download_root(data_dir: str | os.PathLike[str] | None) -> Path:
    """Where torchvision should download to: ``data_dir`` when given (a folder), else the cache."""
    if data_dir is None:
        return cache_dir()
    path = Path(data_dir).expanduser()
    if path.suffix == ".npz":
        raise ValueError(
            f"data_dir {str(path)!r} is an .npz file; --download needs a folder to download into"
        )
    return path


def data_not_found(name: str, tried: Sequence[Path | str], hints: Sequence[str]) -> FileNotFoundError:
    """A ``FileNotFoundError`` naming the dataset, every path tried and how to get the data.

    >>> str(data_not_found("mnist", ["/nowhere"], ["pass --download"]))[:32]
    'dataset mnist: no data found. Tr'
    """
    lines = [f"dataset {name}: no data found. Tried:"]
    lines += [f"  - {p}" for p in tried]
    lines.append("To get the data:")
    lines += [f"  - {h}" for h in hints]
    return FileNotFoundError("\n".join(lines))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (on the ``[0, 1]`` scale) of ``uint8 (N, C, H, W)`` images.

    Computed from a 256-bin histogram per channel, so it needs no float copy of the data.

    >>> x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    >>> channel_stats(x)
    ((0.5,), (0.5,))
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.zeros(256, dtype=torch.float64)
        for chunk in images[:, c].split(4096):
            hist += torch.bincount(chunk.reshape(-1).long(), minlength=256).double()
        total = hist.sum().clamp_min(1.0)
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(round(mean, 4))
        stds.append(round(max(var, 1e-12) ** 0.5, 4))
    return tuple(means), tuple(stds)
