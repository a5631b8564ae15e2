"""Helpers of the pipeline tests: a tiny synthetic image folder (coloured shapes on noisy backgrounds),
a tiny CNN and a tiny config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from visattn.pipelines.two_level import HookedClassifier, TwoLevelConfig

# class 0: a red square, class 1: a blue disc, class 2: a green horizontal bar
_COLOURS = ((220, 30, 30), (30, 30, 220), (30, 200, 30))


def _shape_image(cls: int, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    img = rng.integers(90, 140, (size, size, 3)).astype(np.uint8)
    cx, cy = rng.integers(12, size - 12, 2)
    r = int(rng.integers(6, 10))
    yy, xx = np.mgrid[:size, :size]
    if cls == 0:
        mask = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
    elif cls == 1:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    else:
        mask = (abs(xx - cx) <= r + 4) & (abs(yy - cy) <= 3)
    img[mask] = _COLOURS[cls]
    return img


def make_folder(root: Path, *, per_class: dict[str, int], seed: int = 0) -> Path:
    """``root/{train,val,...}/<class>/*.png`` of the three shape classes."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_shape_image(c, rng)).save(d / f"{i}.png")
    return root


def tiny_net(num_classes: int) -> HookedClassifier:
    """A small CNN; layer ``"3"`` (8 filters) is the part layer."""
    body = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    return HookedClassifier(body, "3", num_classes=num_classes, probe_size=16)


def tiny_config(data_dir: Path, out: Path, **kw) -> TwoLevelConfig:
    opts = dict(
        data_dir=str(data_dir), out=str(out), image_size=40, max_proposals=6, min_box=8, patch_size=16,
        batch_size=16, filter_epochs=1, domain_epochs=1, filter_threshold=0.0, parts=2, max_patches_per_image=3,
        backbone="tiny-test-cnn", hook="3", lr=1e-2,
    )  # fmt: skip
    opts.update(kw)
    return TwoLevelConfig(**opts)
