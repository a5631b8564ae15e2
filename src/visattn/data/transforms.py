"""Augmentation presets and the batched tensor transforms behind them.

Presets (``make_loaders(augment=...)``):

- ``"none"``: no augmentation.
- ``"default"``: the dataset's own choice, ``DatasetSplits.default_augment``: ``"none"`` for MNIST,
  Fashion-MNIST and generated sets (the attention papers train digits without augmentation, and
  shifting a cluttered or translated digit would change the task); ``"pad_crop_flip"`` for CIFAR;
  ``"resized_crop_flip"`` for image folders and Flowers-102.
- ``"pad_crop"``: zero-pad by ``p`` pixels and crop back at a random offset (``p = 4`` for images
  at least 32 pixels on a side, else 2). ``"pad_crop_flip"`` adds a horizontal flip with
  probability 1/2 (He et al., "Deep Residual Learning for Image Recognition", 2016).
- ``"resized_crop_flip"``: a random crop of 8-100% of the area with aspect ratio in [3/4, 4/3],
  resized to the output size, plus a flip (Szegedy et al., "Going Deeper with Convolutions", 2015).

Tensor images (``uint8 (B, C, H, W)`` batches) are augmented as whole batches with index
arithmetic and ``roi_align``, never through PIL, so the data path adds little to a training step.
PIL images (image folders) are first resized and cropped per image (``RandomResizedCrop`` for
training, ``Resize(size / 0.875)`` + ``CenterCrop(size)`` for evaluation), then batched.
Every output is ``float32 (B, C, H, W)`` normalised as ``(x / 255 - mean) / std``.
Randomness comes from the global torch RNG (or a given ``torch.Generator``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from visattn._validate import check_choice, check_positive, check_range, check_tensor

__all__ = [
    "AUGMENT_PRESETS",
    "resolve_augment",
    "random_crop_flip",
    "random_pad_crop",
    "random_hflip",
    "random_resized_crop",
    "BatchTransform",
    "pil_transform",
]

AUGMENT_PRESETS = ("none", "default", "pad_crop", "pad_crop_flip", "resized_crop_flip")


def resolve_augment(augment: str, default: str) -> str:
    """Turn ``"default"`` into the dataset's preset; check the name.

    >>> resolve_augment("default", "pad_crop_flip"), resolve_augment("none", "pad_crop_flip")
    ('pad_crop_flip', 'none')
    """
    check_choice(augment, "augment", AUGMENT_PRESETS)
    out = default if augment == "default" else augment
    return check_choice(out, "default_augment", AUGMENT_PRESETS[:1] + AUGMENT_PRESETS[2:])


def random_crop_flip(
    x: torch.Tensor, pad: int, p_flip: float = 0.0, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random pad-and-crop plus a random horizontal flip, for a whole batch in one gather.

    Each image is zero-padded by ``pad`` pixels, cropped back to ``(H, W)`` at an offset drawn
    uniformly from ``{0, ..., 2 pad}`` in x and y, and flipped left-right with probability
    ``p_flip``; the same as ``RandomCrop((H, W), padding=pad)`` then ``RandomHorizontalFlip(p_flip)``
    per image. Output pixel ``(i, j)`` of image ``b`` reads padded pixel
    ``(oy_b + i, ox_b + j)``, or ``(oy_b + i, ox_b + W - 1 - j)`` when flipped.

    Args:
        x: ``(B, C, H, W)`` any dtype.
        pad: padding in pixels on each side (0: flip only).
        p_flip: flip probability in ``[0, 1]``.

    Returns:
        ``(B, C, H, W)`` of ``x``'s dtype.

    >>> random_crop_flip(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), 4, 0.5).shape
    torch.Size([5, 3, 32, 32])
    """
    check_tensor(x, "x", ndim=4, floating=False)
    check_positive(pad, "pad", integer=True, allow_zero=True)
    check_range(p_flip, "p_flip", 0.0, 1.0)
    b, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    dev = x.device
    off = torch.randint(0, 2 * pad + 1, (2, b, 1, 1), generator=generator, device=dev)
    cols = torch.arange(w, device=dev).view(1, 1, w).expand(b, 1, w)
    if p_flip > 0:
        flip = torch.rand(b, generator=generator, device=dev) < p_flip
        cols = torch.where(flip.view(b, 1, 1), w - 1 - cols, cols)
    lin = (off[0] + torch.arange(h, device=dev).view(1, h, 1)) * wp + off[1] + cols  # (B, H, W)
    lin = lin.view(b, 1, h * w).expand(b, c, h * w).reshape(b * c, h * w)
    return padded.reshape(b * c, hp * wp).gather(1, lin).view(b, c, h, w)


def random_pad_crop(x: torch.Tensor, pad: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad each image by ``pad`` pixels and crop back to ``(H, W)`` at a random offset.

    >>> random_pad_crop(torch.zeros(5, 1, 28, 28, dtype=torch.uint8), 2).shape
    torch.Size([5, 1, 28, 28])
    """
    return random_crop_flip(x, pad, 0.0, generator=generator)


def random_hflip(
    x: torch.Tensor, p: float = 0.5, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each image left-right with probability ``p``.

    >>> x = torch.arange(4.0).view(1, 1, 1, 4)
    >>> random_hflip(x, p=1.0)
    tensor([[[[3., 2., 1., 0.]]]])
    """
    return random_crop_flip(x, 0, p, generator=generator)


def random_resized_crop(
    x: torch.Tensor,
    size: tuple[int, int],
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random box of each image and resize it bilinearly to ``size`` (batched ``roi_align``).

    The box area is ``U(scale) * H * W`` and its aspect ratio ``w / h`` is log-uniform in ``ratio``;
    a box larger than the image is clipped to it (torchvision retries instead; the clip keeps the
    batch in one pass). Each output pixel averages ``ceil(box / output)`` bilinear samples per
    axis (``roi_align``'s adaptive sampling, ``aligned=True``), so shrinking is anti-aliased and a
    full-image box at the input size returns the input.

    Args:
        x: float ``(B, C, H, W)``.
        size: output ``(h, w)``.

    Returns:
        float ``(B, C, h, w)``.

    >>> random_resized_crop(torch.rand(2, 3, 40, 30), (32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """
    from torchvision.ops import roi_align

    check_tensor(x, "x", ndim=4)
    b, _, h, w = x.shape
    u = torch.rand(4, b, generator=generator, device=x.device, dtype=torch.float64)
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * h * w
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1]
    bw = torch.sqrt(area * torch.exp(log_r)).clamp(1.0, w)
    bh = torch.sqrt(area / torch.exp(log_r)).clamp(1.0, h)
    x0 = u[2] * (w - bw)
    y0 = u[3] * (h - bh)
    boxes = torch.stack([torch.arange(b, dtype=torch.float64, device=x.device), x0, y0, x0 + bw, y0 + bh], 1)
    return roi_align(
        x, boxes.to(x.dtype), output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )


class BatchTransform:
    """Batched augmentation plus normalisation: ``uint8 (B, C, H, W)`` -> ``float32 (B, C, H, W)``.

    Args:
        mean, std: per-channel statistics on the ``[0, 1]`` scale; output ``(x / 255 - mean) / std``.
        preset: an augmentation preset other than ``"default"`` (see the module docstring).
        size: output ``(H, W)`` for ``"resized_crop_flip"`` (default: the input size).
        skip_crop: leave out the preset's crops and keep only its flip, for batches whose images a
            per-image PIL stage (:func:`pil_transform`) has already cropped.

    Float inputs are taken to be on the ``[0, 1]`` scale already.

    >>> t = BatchTransform((0.5,), (0.5,), preset="pad_crop")
    >>> y = t(torch.full((4, 1, 28, 28), 255, dtype=torch.uint8))
    >>> y.shape, y.dtype, float(y.max())
    (torch.Size([4, 1, 28, 28]), torch.float32, 1.0)
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        preset: str = "none",
        size: tuple[int, int] | None = None,
        skip_crop: bool = False,
    ) -> None:
        check_choice(preset, "preset", AUGMENT_PRESETS[:1] + AUGMENT_PRESETS[2:])
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(
                f"mean and std must have one entry per channel and std > 0, got {mean} and {std}"
            )
        self.preset = preset
        self.size = size
        self.pad_crop = preset in ("pad_crop", "pad_crop_flip") and not skip_crop
        self.resized_crop = preset == "resized_crop_flip" and not skip_crop
        self.flip = preset in ("pad_crop_flip", "resized_crop_flip")
        std_t = torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        check_tensor(x, "x", ndim=4, channels=self.scale.shape[1], floating=False)
        pad = (4 if min(x.shape[-2:]) >= 32 else 2) if self.pad_crop else 0
        if pad or self.flip:
            x = random_crop_flip(x, pad, 0.5 if self.flip else 0.0, generator=generator)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).mul_(self.scale).add_(self.shift)
        else:  # already on the [0, 1] scale; never modify the caller's tensor in place
            x = x.to(torch.float32).mul(self.scale * 255.0).add_(self.shift)
        if self.resized_crop:
            x = random_resized_crop(x, self.size or (x.shape[-2], x.shape[-1]), generator=generator)
        return x


def pil_transform(size: tuple[int, int], *, train: bool) -> Callable[[Any], torch.Tensor]:
    """Per-image PIL stage for image folders: PIL -> ``uint8 (3, h, w)`` tensor of ``size``.

    Training: ``RandomResizedCrop(size)``; evaluation: ``Resize(size / 0.875)`` then
    ``CenterCrop(size)`` (the ImageNet 224/256 convention). Flips happen later, batched.

    >>> from PIL import Image
    >>> pil_transform((24, 24), train=False)(Image.new("RGB", (40, 30))).shape
    torch.Size([3, 24, 24])
    """
    from torchvision.transforms import v2

    if train:
        ops: list[Any] = [v2.RandomResizedCrop(size, antialias=True)]
    else:
        ops = [v2.Resize(int(round(min(size) / 0.875)), antialias=True), v2.CenterCrop(size)]
    return v2.Compose([*ops, v2.PILToTensor()])
