"""Human pose data in the Leeds Sports Pose layout (LSP: Johnson & Everingham, BMVC 2010; LSPET: "Learning
Effective Human Pose Estimation from Inaccurate Annotation", CVPR 2011): person-centred crops, flips
with the left/right joint swap, scale and rotation augmentation, Gaussian target heatmaps.

Layout read (any LSP/LSPET copy): ``root/images/imNNNNN.jpg`` and ``root/joints.mat`` whose ``joints``
is ``14 x 3 x N`` (LSPET) or ``3 x 14 x N`` (LSP): for image ``im{k+1:05d}.jpg``, x, y in that image's
pixels and a visibility flag (1 visible; ``invert_visibility=True`` for a copy that marks occluded
joints with 1). An optional ``root/splits.json`` maps ``train``/``val``/``test`` to image names; without
it the images present are split with ``seed`` (``test_fraction``, ``val_fraction``).

Convention: image coordinates are ``(x, y)`` with pixel ``i``'s centre at ``i``. A crop of side ``S``
(``input_size``) maps the person's box onto pixel centres ``0..S-1``; heatmap pixel ``j`` of a map of
side ``S / stride`` covers crop pixels ``stride j .. stride j + stride - 1``, so a crop coordinate
``u`` is heatmap coordinate ``(u + 0.5) / stride - 0.5`` (:func:`crop_to_heatmap`).

The person's box: the bounding box of the visible joints, centre ``c``, side ``s = pad * max(w, h)``
(at least ``min_box`` px). Training samples are rotated by ``r ~ U(-rotate, rotate)`` degrees (with
probability ``rotate_p``), scaled by ``2^U(-log2(1+scale), log2(1+scale))`` and flipped with probability
``flip_p`` (0.5; the left/right joints swap: ``FLIP_PAIRS``). Evaluation crops are the plain box. Targets:
``heatmaps (J, S/stride, S/stride)``, Gaussians of std ``sigma`` (heatmap pixels) at the joints with peak
1, zero for joints that are invisible or outside the crop (``visible`` is then 0, masking the loss).

Bad input: a ``joints.mat`` without ``joints`` or of another shape, split names missing from
``images/`` or not of the ``imNNNNN.jpg`` form, an empty split: ``ValueError``/``FileNotFoundError``
naming the file and what was wrong. People with fewer than 2 visible joints, or with a visible joint
more than ``max_outside`` times the image size outside the image, are skipped and counted
(``PoseSplits.skipped``). scipy reads the ``.mat`` (``pip install scipy``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from visattn._validate import check_positive, check_range
from visattn.data._registry import DatasetSplits, register_dataset

__all__ = [
    "JOINT_NAMES",
    "FLIP_PAIRS",
    "LSPAnnotations",
    "PoseDataset",
    "read_lsp",
    "gaussian_heatmaps",
    "crop_to_heatmap",
    "heatmap_to_crop",
    "flip_permutation",
    "lspet",
]

JOINT_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist",
    "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top",
)  # fmt: skip
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NAME = re.compile(r"^im(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


def flip_permutation(num_joints: int = 14, pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS) -> list[int]:
    """``perm`` with ``flipped[j] = original[perm[j]]``: left and right joints swap.

    >>> flip_permutation()[:6]
    [5, 4, 3, 2, 1, 0]
    """
    perm = list(range(num_joints))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def crop_to_heatmap(u: torch.Tensor, stride: float) -> torch.Tensor:
    """Crop pixel coordinates -> heatmap coordinates: ``(u + 0.5) / stride - 0.5``.

    >>> crop_to_heatmap(torch.tensor([1.5, 125.5]), 4)
    tensor([ 0., 31.])
    """
    return (u + 0.5) / stride - 0.5


def heatmap_to_crop(h: torch.Tensor, stride: float) -> torch.Tensor:
    """Heatmap coordinates -> crop pixel coordinates (the inverse of :func:`crop_to_heatmap`)."""
    return (h + 0.5) * stride - 0.5


def gaussian_heatmaps(joints: torch.Tensor, visible: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Target heatmaps ``exp(-((x - jx)^2 + (y - jy)^2) / (2 sigma^2))``, zero where ``visible == 0``.

    Args:
        joints: ``(..., J, 2)`` heatmap coordinates ``(x, y)``.
        visible: ``(..., J)``, 1 for joints with a target.
        size: heatmap side.
        sigma: standard deviation in heatmap pixels.

    Returns: ``(..., J, size, size)``.

    >>> h = gaussian_heatmaps(torch.tensor([[3.0, 5.0]]), torch.ones(1), 8, 1.0)
    >>> h.shape, float(h[0, 5, 3]), round(float(h[0, 5, 4]), 4)
    (torch.Size([1, 8, 8]), 1.0, 0.6065)
    """
    check_positive(sigma, "sigma")
    grid = torch.arange(size, dtype=joints.dtype, device=joints.device)
    gx = (grid - joints[..., 0:1]).square()  # (..., J, size) over x
    gy = (grid - joints[..., 1:2]).square()  # over y
    h = torch.exp(-(gy[..., :, None] + gx[..., None, :]) / (2 * sigma**2))
    return h * visible[..., None, None].to(h.dtype)


def _load_mat(path: Path) -> np.ndarray:
    try:
        import scipy.io
    except ImportError as e:  # pragma: no cover - scipy is in the test extra
        raise ImportError(f"reading {path} needs scipy: pip install scipy") from e
    data = scipy.io.loadmat(str(path))
    if "joints" not in data:
        keys = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(f"{path} has no 'joints' array (keys: {keys})")
    return np.asarray(data["joints"], dtype=np.float64)


@dataclass
class LSPAnnotations:
    """Joints ``(N, J, 3)`` (x, y, visible in {0, 1}) of images ``root/images/im{k+1:05d}.jpg``."""

    root: Path
    joints: np.ndarray

    def path(self, k: int) -> Path:
        return self.root / "images" / f"im{k + 1:05d}.jpg"


def read_lsp(root: str | Path, *, invert_visibility: bool = False) -> LSPAnnotations:
    """Read ``root/joints.mat`` (``14 x 3 x N`` or ``3 x 14 x N``) into ``(N, 14, 3)``."""
    root = Path(root).expanduser()
    mat = root / "joints.mat"
    if not mat.is_file() or not (root / "images").is_dir():
        raise FileNotFoundError(
            f"an LSP/LSPET folder needs {mat} and {root / 'images'}/ (e.g. --data-dir ../shared/data/lspet)"
        )
    j = _load_mat(mat)
    if j.ndim == 3 and j.shape[:2] == (14, 3):
        j = j.transpose(2, 0, 1)
    elif j.ndim == 3 and j.shape[:2] == (3, 14):
        j = j.transpose(2, 1, 0)
    else:
        raise ValueError(
            f"{mat}: joints must be 14 x 3 x N (LSPET) or 3 x 14 x N (LSP), got {tuple(j.shape)}"
        )
    j = j.copy()
    vis = j[..., 2] > 0.5
    j[..., 2] = (~vis if invert_visibility else vis).astype(np.float64)
    return LSPAnnotations(root, j)


def _index_of(name: str, n: int, where: str) -> int:
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"{where}: image name {name!r} is not of the form imNNNNN.jpg")
    k = int(m.group(1)) - 1
    if not 0 <= k < n:
        raise ValueError(f"{where}: {name!r} is image {k + 1}, but joints.mat has {n} columns")
    return k


class PoseDataset(Dataset):
    """Person-centred crops of LSP images: ``(x (3, S, S) float, target dict)`` (module docstring).

    ``target``: ``heatmaps (J, S/stride, S/stride)``, ``visible (J,)`` (1: a target in the crop),
    ``joints (J, 2)`` and ``joints_visible (J,)`` in the original image, ``crop_to_image (2, 3)`` (the
    affine map from crop pixels to image pixels), ``index`` (the joints.mat column).
    """

    def __init__(
        self,
        ann: LSPAnnotations,
        indices: list[int],
        *,
        input_size: int = 128,
        heatmap_size: int = 32,
        sigma: float = 1.0,
        augment: bool = False,
        pad: float = 1.25,
        min_box: float = 16.0,
        scale: float = 0.25,
        rotate: float = 30.0,
        rotate_p: float = 0.4,
        flip_p: float = 0.5,
    ) -> None:
        check_positive(input_size, "input_size", integer=True)
        check_positive(heatmap_size, "heatmap_size", integer=True)
        if input_size % heatmap_size:
            raise ValueError(f"input_size {input_size} must be a multiple of heatmap_size {heatmap_size}")
        check_range(rotate_p, "rotate_p", 0.0, 1.0)
        check_range(flip_p, "flip_p", 0.0, 1.0)
        self.ann, self.indices = ann, list(indices)
        self.input_size, self.heatmap_size, self.sigma = input_size, heatmap_size, sigma
        self.augment, self.pad, self.min_box = augment, pad, min_box
        self.scale, self.rotate, self.rotate_p, self.flip_p = scale, rotate, rotate_p, flip_p
        self.perm = flip_permutation(ann.joints.shape[1])

    def with_augment(self, augment: bool) -> PoseDataset:
        """A view of the same people with augmentation on or off."""
        twin = PoseDataset.__new__(PoseDataset)
        twin.__dict__.update(self.__dict__)
        twin.augment = augment
        return twin

    def __len__(self) -> int:
        return len(self.indices)

    def box(self, k: int) -> tuple[float, float, float]:
        """``(cx, cy, side)`` of person ``k``'s crop box (visible joints' box, padded)."""
        j = self.ann.joints[k]
        v = j[:, 2] > 0
        xy = j[v, :2]
        lo, hi = xy.min(0), xy.max(0)
        c = (lo + hi) / 2
        return float(c[0]), float(c[1]), max(self.pad * float((hi - lo).max()), self.min_box)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        k = self.indices[i]
        with Image.open(self.ann.path(k)) as im:
            img = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        cx, cy, side = self.box(k)
        angle, zoom, flipped = 0.0, 1.0, False
        if self.augment:
            r = torch.rand(4).tolist()
            zoom = 2 ** ((2 * r[0] - 1) * math.log2(1 + self.scale))
            if r[1] < self.rotate_p:
                angle = (2 * r[2] - 1) * self.rotate
            flipped = r[3] < self.flip_p
        s = self.input_size
        # image -> crop: u = a * R (p - c) + (s - 1) / 2, a = s / (side * zoom); then x mirrored when flipped
        a = s / (side * zoom)
        th = math.radians(angle)
        cos, sin = math.cos(th) * a, math.sin(th) * a
        m = torch.tensor(
            [[cos, -sin, (s - 1) / 2 - cos * cx + sin * cy], [sin, cos, (s - 1) / 2 - sin * cx - cos * cy]],
            dtype=torch.float64,
        )
        if flipped:
            m[0] = -m[0]
            m[0, 2] += s - 1
        full = torch.cat([m, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
        inv = torch.linalg.inv(full)[:2]  # crop -> image
        x = _warp(img, inv, s)
        joints = torch.from_numpy(self.ann.joints[k]).clone()
        if flipped:
            joints = joints[self.perm]
        xy1 = torch.cat([joints[:, :2], torch.ones(joints.shape[0], 1, dtype=torch.float64)], 1)
        u = xy1 @ m.T  # (J, 2) crop coordinates
        stride = s / self.heatmap_size
        h = crop_to_heatmap(u, stride)
        inside = ((u >= -0.5) & (u <= s - 0.5)).all(1)
        vis = (joints[:, 2] > 0) & inside
        heat = gaussian_heatmaps(h.float(), vis.float(), self.heatmap_size, self.sigma)
        target = {
            "heatmaps": heat,
            "visible": vis.float(),
            "joints": joints[:, :2].float(),
            "joints_visible": (joints[:, 2] > 0).float(),
            "crop_to_image": inv.float(),
            "index": k,
        }
        return x, target


_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _warp(img: torch.Tensor, crop_to_image: torch.Tensor, s: int) -> torch.Tensor:
    """Bilinear crop ``(3, H, W) uint8 -> (3, s, s)`` normalised, zeros (black) outside the image."""
    _, hgt, wid = img.shape
    g = torch.arange(s, dtype=torch.float64)
    uy, ux = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([ux, uy, torch.ones_like(ux)], -1) @ crop_to_image.T  # (s, s, 2) image (x, y)
    grid = torch.stack([(2 * pts[..., 0] + 1) / wid - 1, (2 * pts[..., 1] + 1) / hgt - 1], -1)
    x = F.grid_sample(img[None].float() / 255, grid[None].float(), mode="bilinear", align_corners=False)[0]
    return (x - _MEAN) / _STD


@dataclass
class PoseSplits:
    """What :func:`load_pose_splits` returns: datasets and counts of skipped people."""

    train: PoseDataset
    val: PoseDataset | None
    test: PoseDataset
    skipped: dict[str, int] = field(default_factory=dict)


def _usable(ann: LSPAnnotations, k: int, max_outside: float, size: tuple[int, int]) -> str | None:
    j = ann.joints[k]
    v = j[:, 2] > 0
    if v.sum() < 2:
        return "fewer_than_2_visible"
    w, h = size
    xy = j[v, :2]
    far = (xy[:, 0] < -max_outside * w) | (xy[:, 0] > (1 + max_outside) * w)
    far |= (xy[:, 1] < -max_outside * h) | (xy[:, 1] > (1 + max_outside) * h)
    return "far_outside_image" if far.any() else None


def load_pose_splits(
    root: str | Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_outside: float = 0.5,
    invert_visibility: bool = False,
    **dataset_options: Any,
) -> PoseSplits:
    """Read an LSP/LSPET folder and build train (augmented), val and test :class:`PoseDataset` s.

    With ``splits.json`` its ``train``/``test`` (and ``val``, if present) lists are used; a split file
    without ``val`` gets none (the engine then carves one from ``train``). Without a split file the
    images present are permuted with ``seed`` into test, val and train by the two fractions.
    """
    ann = read_lsp(root, invert_visibility=invert_visibility)
    n = ann.joints.shape[0]
    split_file = ann.root / "splits.json"
    if split_file.is_file():
        names = json.loads(split_file.read_text())
        if not isinstance(names, dict) or "train" not in names or "test" not in names:
            raise ValueError(
                f"{split_file} must map 'train' and 'test' (and optionally 'val') to image names"
            )
        groups = {}
        for key in ("train", "val", "test"):
            if key not in names:
                continue
            idx = [_index_of(str(nm), n, f"{split_file} [{key}]") for nm in names[key]]
            missing = [nm for nm, k in zip(names[key], idx, strict=True) if not ann.path(k).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{split_file} [{key}] names {len(missing)} image(s) missing from {ann.root / 'images'}: "
                    f"{missing[:5]}"
                )
            groups[key] = idx
        missing_images = 0
    else:
        present = [k for k in range(n) if ann.path(k).is_file()]
        missing_images = n - len(present)
        perm = torch.randperm(len(present), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test, n_val = round(test_fraction * len(present)), round(val_fraction * len(present))
        order = [present[p] for p in perm]
        groups = {
            "test": sorted(order[:n_test]),
            "val": sorted(order[n_test : n_test + n_val]),
            "train": sorted(order[n_test + n_val :]),
        }
    skipped: dict[str, int] = {
        "missing_image": missing_images,
        "fewer_than_2_visible": 0,
        "far_outside_image": 0,
    }
    kept = {}
    for key, idx in groups.items():
        ok = []
        for k in idx:
            with Image.open(ann.path(k)) as im:
                size = im.size
            why = _usable(ann, k, max_outside, size)
            if why is None:
                ok.append(k)
            else:
                skipped[why] += 1
        if not ok and (key != "val" or idx):
            raise ValueError(
                f"split {key!r} of {ann.root} is empty ({len(idx)} listed, all skipped: {skipped})"
            )
        kept[key] = ok
    opts = dict(dataset_options)
    val = PoseDataset(ann, kept["val"], **opts) if kept.get("val") else None
    return PoseSplits(
        train=PoseDataset(ann, kept["train"], augment=True, **opts),
        val=val,
        test=PoseDataset(ann, kept["test"], **opts),
        skipped=skipped,
    )


@register_dataset("lspet")
def lspet(
    *,
    data_dir: str | None,
    download: bool = False,
    seed: int = 0,
    input_size: int = 128,
    heatmap_size: int = 32,
    sigma: float = 1.0,
    **options: Any,
) -> DatasetSplits:
    """LSP/LSPET pose data (``--data-dir ../shared/data/lspet``) for the engine's pose task.

    ``num_classes`` is the joint count (14); ``extras``: ``val`` (when the split has one),
    ``task="pose"``, ``skipped`` counts, ``joint_names``. No download (research-use images).
    """
    if data_dir is None:
        raise FileNotFoundError("dataset lspet needs --data-dir PATH (a folder with images/ and joints.mat)")
    sp = load_pose_splits(
        data_dir, seed=seed, input_size=input_size, heatmap_size=heatmap_size, sigma=sigma, **options
    )
    extras: dict[str, Any] = {"task": "pose", "skipped": sp.skipped, "joint_names": list(JOINT_NAMES)}
    if sp.val is not None:
        extras["val"] = sp.val
    return DatasetSplits(
        name="lspet",
        train=sp.train,
        test=sp.test,
        num_classes=sp.train.ann.joints.shape[1],
        in_chans=3,
        image_size=(input_size, input_size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=list(JOINT_NAMES),
        extras=extras,
    )
