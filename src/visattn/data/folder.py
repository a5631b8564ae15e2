"""Image folders (torchvision ``ImageFolder`` style) and Oxford Flowers-102 (Nilsback & Zisserman,
"Automated flower classification over a large number of classes", ICVGIP 2008).

Both yield ``(PIL.Image (RGB), int)``; ``make_loaders`` resizes and crops them to
``size x size`` (option ``size``, default 224; e.g. 160 on a CPU budget) and normalises with the
ImageNet mean/std, since fine-grained sets are usually trained from ImageNet weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from visattn._validate import check_choice, check_positive
from visattn.data._registry import DatasetSplits, register_dataset
from visattn.data._sources import cache_dir, data_not_found, download_root

__all__ = [
    "imagefolder",
    "flowers102",
    "PILImageList",
    "CorruptImageError",
    "read_rgb",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BAD_IMAGES = ("raise", "check", "skip")
_log = logging.getLogger(__name__)


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (truncated, corrupt, not an image); the message names it."""


def read_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an RGB ``PIL.Image``; a bad file raises :class:`CorruptImageError`
    naming it (PIL's own ``OSError: Truncated File Read`` names no file)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise CorruptImageError(
            f"image file {str(path)!r} cannot be decoded ({type(e).__name__}: {e}): it is truncated or "
            "corrupt; replace or delete it, or set data_kwargs.bad_images=skip to leave such files out "
            "(bad_images=check lists them all before training)"
        ) from None


def _screen(paths: list[str], mode: str, what: str) -> list[int]:
    """Indices of the files of ``paths`` that decode; ``mode="check"`` raises listing the bad ones."""
    from tqdm import tqdm

    good, bad = [], []
    for i, p in enumerate(
        tqdm(paths, desc=f"checking {what} images", unit="img", mininterval=1.0, leave=False)
    ):
        try:
            read_rgb(p)
            good.append(i)
        except CorruptImageError:
            bad.append(p)
    if bad and mode == "check":
        raise CorruptImageError(
            f"{len(bad)} of {len(paths)} {what} images cannot be decoded (truncated or corrupt): {bad[:10]}"
            f"{' ...' if len(bad) > 10 else ''}; replace or delete them, or set data_kwargs.bad_images=skip"
        )
    if bad:
        _log.warning(
            "left out %d of %d %s images that cannot be decoded: %s", len(bad), len(paths), what, bad[:10]
        )
    return good


class PILImageList(Dataset):
    """Images read lazily from a list of files, converted to RGB, with ``int`` labels."""

    def __init__(self, paths: list[Path], labels: list[int]) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"paths and labels must have equal length, got {len(paths)} and {len(labels)}")
        self.paths = list(paths)
        self.labels = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return read_rgb(self.paths[i]), self.labels[i]


@register_dataset("imagefolder")
def imagefolder(
    *, data_dir: str | None, download: bool = False, seed: int = 0, size: int = 224, bad_images: str = "raise"
) -> DatasetSplits:
    """A folder ``data_dir/train/<class>/*.png|jpg`` plus ``data_dir/test/<class>/`` (or ``val/``).

    Classes are the sorted sub-folder names of ``train/``; ``test``/``val`` must have the same
    ones. ``size`` is the side of the square crops the loaders produce. ``bad_images``: a file
    that cannot be decoded raises :class:`CorruptImageError` naming it when it is read
    (``"raise"``); ``"check"`` decodes every image once up front and raises listing all bad files;
    ``"skip"`` decodes every image once and leaves the bad ones out, logging their count.
    """
    from torchvision.datasets import ImageFolder

    check_positive(size, "size", integer=True)
    check_choice(bad_images, "bad_images", _BAD_IMAGES)
    if data_dir is None:
        raise FileNotFoundError("dataset imagefolder needs --data-dir PATH (a folder with train/ and test/)")
    root = Path(data_dir).expanduser()
    train_dir = root / "train"
    eval_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or eval_dir is None:
        raise data_not_found(
            "imagefolder",
            [train_dir, root / "test", root / "val"],
            [
                "pass --data-dir PATH to a folder with train/<class>/<image> and test/<class>/<image> (or val/)"
            ],
        )
    train = ImageFolder(str(train_dir), loader=read_rgb)
    test = ImageFolder(str(eval_dir), loader=read_rgb)
    if bad_images != "raise":
        for ds, what in ((train, "train/"), (test, f"{eval_dir.name}/")):
            keep = _screen([p for p, _ in ds.samples], bad_images, what)
            ds.samples = ds.imgs = [ds.samples[i] for i in keep]
            ds.targets = [ds.targets[i] for i in keep]
    if train.classes != test.classes:
        raise ValueError(
            f"imagefolder {str(root)!r}: classes differ between train/ {train.classes} and "
            f"{eval_dir.name}/ {test.classes}"
        )
    return DatasetSplits(
        name="imagefolder",
        train=train,
        test=test,
        num_classes=len(train.classes),
        in_chans=3,
        image_size=(size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=list(train.classes),
        default_augment="resized_crop_flip",
    )


def _flowers_folder(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if (
            (folder / "jpg").is_dir()
            and (folder / "imagelabels.mat").is_file()
            and (folder / "setid.mat").is_file()
        ):
            return folder
    return None


@register_dataset("flowers102")
def flowers102(
    *,
    data_dir: str | None = None,
    download: bool = False,
    seed: int = 0,
    size: int = 224,
    trainval: bool = False,
) -> DatasetSplits:
    """Oxford Flowers-102 in torchvision's layout: ``flowers-102/jpg``, ``imagelabels.mat``, ``setid.mat``.

    Uses the official split (1,020 train / 1,020 val / 6,149 test). The official validation set
    goes to ``extras["val"]``, which ``make_loaders`` uses as the validation split; with
    ``trainval=True`` train is train + val (2,040) and ``make_loaders`` carves its own validation.
    Needs scipy to read the ``.mat`` files.
    """
    check_positive(size, "size", integer=True)
    try:
        from scipy.io import loadmat
    except ImportError as err:  # pragma: no cover - scipy is a test dependency
        raise ImportError("dataset flowers102 needs scipy to read its .mat files: pip install scipy") from err
    roots = [Path(data_dir).expanduser()] if data_dir is not None else [cache_dir()]
    candidates = [r / "flowers-102" for r in roots] + roots
    folder = _flowers_folder(candidates)
    if folder is None and download:
        from torchvision.datasets import Flowers102

        dl = download_root(data_dir)
        Flowers102(root=str(dl), split="train", download=True)
        candidates.append(dl / "flowers-102")
        folder = _flowers_folder([dl / "flowers-102"])
    if folder is None:
        raise data_not_found(
            "flowers102",
            candidates,
            [
                "pass --data-dir PATH to a folder holding flowers-102/ (jpg/, imagelabels.mat, setid.mat)",
                f"pass --download to fetch it with torchvision into {download_root(data_dir)}",
            ],
        )
    labels = loadmat(str(folder / "imagelabels.mat"))["labels"].reshape(-1).astype(int) - 1
    setid = loadmat(str(folder / "setid.mat"))

    def subset(key: str) -> PILImageList:
        ids = setid[key].reshape(-1).astype(int)
        paths = [folder / "jpg" / f"image_{i:05d}.jpg" for i in ids]
        return PILImageList(paths, [int(labels[i - 1]) for i in ids])

    train, val, test = subset("trnid"), subset("valid"), subset("tstid")
    extras: dict[str, object] = {}
    if trainval:
        train = PILImageList(train.paths + val.paths, train.labels + val.labels)
    else:
        extras["val"] = val
    class_names = None
    names_file = folder / "cat_to_name.json"
    if names_file.is_file():
        mapping = json.loads(names_file.read_text())
        class_names = [str(mapping.get(str(i + 1), i)) for i in range(102)]
    return DatasetSplits(
        name="flowers102",
        train=train,
        test=test,
        num_classes=102,
        in_chans=3,
        image_size=(size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=class_names,
        extras=extras,
        default_augment="resized_crop_flip",
    )
