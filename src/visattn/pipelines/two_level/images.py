"""The image list of the two-level pipeline and robust image decoding.

Two layouts: Flowers-102 as torchvision stores it (``jpg/image_*.jpg``, ``imagelabels.mat``,
``setid.mat``: the official 1,020 train / 1,020 val / 6,149 test split), or an image folder
``train/<class>/*``, ``val/<class>/*`` and optionally ``test/<class>/*`` (classes: the sorted
sub-folders of ``train/``). Images are decoded with PIL and converted to RGB, so greyscale,
palette, RGBA and CMYK files all arrive as ``uint8 (H, W, 3)``, then resized so the shorter side
is ``image_size``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageList", "list_images", "load_rgb", "resize_short"]

_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")


@dataclass
class ImageList:
    """Files, labels and split names (``"train"``, ``"val"``, ``"test"``) of every image, in order."""

    paths: list[str]
    labels: list[int]
    splits: list[str]
    num_classes: int

    def index(self, split: str) -> list[int]:
        """Positions of the images of ``split``."""
        return [i for i, s in enumerate(self.splits) if s == split]

    def digest(self) -> str:
        """A hash of the list (paths, sizes, modification times, labels, splits): the first stage's input."""
        h = hashlib.sha256()
        for p, y, s in zip(self.paths, self.labels, self.splits):
            st = Path(p).stat()
            h.update(json.dumps([p, st.st_size, st.st_mtime_ns, y, s]).encode())
        return h.hexdigest()


def _flowers(root: Path) -> tuple[list[str], list[int], list[str]]:
    from scipy.io import loadmat

    labels = loadmat(root / "imagelabels.mat")["labels"][0] - 1
    ids = loadmat(root / "setid.mat")
    paths, ys, splits = [], [], []
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        for i in ids[key][0]:
            paths.append(str(root / "jpg" / f"image_{int(i):05d}.jpg"))
            ys.append(int(labels[int(i) - 1]))
            splits.append(split)
    return paths, ys, splits


def _folder(root: Path) -> tuple[list[str], list[int], list[str]]:
    train = root / "train"
    if not train.is_dir() or not (root / "val").is_dir():
        raise FileNotFoundError(
            f"data_dir {str(root)!r} is neither Flowers-102 (jpg/, imagelabels.mat, setid.mat) nor an image "
            "folder with train/<class>/ and val/<class>/"
        )
    classes = sorted(d.name for d in train.iterdir() if d.is_dir())
    if not classes:
        raise FileNotFoundError(f"data_dir {str(root)!r}: train/ holds no class folders")
    paths, ys, splits = [], [], []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for c in sorted(d.name for d in (root / split).iterdir() if d.is_dir()):
            if c not in classes:
                raise ValueError(
                    f"data_dir {str(root)!r}: class folder {split}/{c} is not in train/ {classes}"
                )
            for f in sorted((root / split / c).iterdir()):
                if f.suffix.lower() in _EXTS:
                    paths.append(str(f))
                    ys.append(classes.index(c))
                    splits.append(split)
    return paths, ys, splits


def list_images(
    data_dir: str | Path, *, limit_per_class: int | None = None, classes: int | None = None
) -> ImageList:
    """The pipeline's images: Flowers-102 or an image folder (see the module docstring).

    ``classes`` keeps the first N class indices; ``limit_per_class`` the first N images of each class in
    each split. Labels are re-indexed ``0..K-1`` over the kept classes.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {str(root)!r} does not exist")
    if (root / "setid.mat").is_file() and (root / "imagelabels.mat").is_file():
        paths, ys, splits = _flowers(root)
    else:
        paths, ys, splits = _folder(root)
    keep_classes = sorted(set(ys))[:classes] if classes else sorted(set(ys))
    remap = {c: i for i, c in enumerate(keep_classes)}
    count: dict[tuple[str, int], int] = {}
    out = ImageList([], [], [], len(keep_classes))
    for p, y, s in zip(paths, ys, splits):
        if y not in remap:
            continue
        n = count.get((s, y), 0)
        if limit_per_class is not None and n >= limit_per_class:
            continue
        count[(s, y)] = n + 1
        out.paths.append(p)
        out.labels.append(remap[y])
        out.splits.append(s)
    for split in ("train", "val"):
        if not out.index(split):
            raise ValueError(f"data_dir {str(root)!r} has no {split} images after the subset options")
    return out


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode any PIL-readable file (greyscale, palette, RGBA, CMYK, ...) as ``uint8 (H, W, 3)`` RGB.

    Raises:
        ValueError: the file cannot be decoded, naming it.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as err:
        raise ValueError(f"image {str(path)!r} cannot be decoded: {err}") from None


def resize_short(img: np.ndarray, size: int) -> np.ndarray:
    """Resize ``uint8 (H, W, 3)`` so its shorter side is ``size`` (bicubic, PIL), keeping the aspect ratio.

    >>> resize_short(np.zeros((10, 20, 3), np.uint8), 5).shape
    (5, 10, 3)
    """
    h, w = img.shape[:2]
    s = size / min(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC))


def to_chw(img: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> ``uint8 (3, H, W)`` tensor."""
    arr = img if img.flags.writeable and img.flags.c_contiguous else np.array(img, order="C")
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
