"""Distorted MNIST of Spatial Transformer Networks (Jaderberg et al., NIPS 2015, sec. 4.1 and appendix A).

Four distortions of the 28x28 digits, each drawn per image from a ``torch.Generator`` and applied
to the whole batch at once with ``visattn.functional.warp`` (bilinear, zero padding: the
background of a digit is 0):

* **R**, ``rotate``: rotation by ``U(-90, 90)`` degrees about the centre, 28x28.
* **RTS**, ``rotate_translate_scale``: rotation ``U(-45, 45)`` degrees, scale ``U(0.7, 1.2)``, placed
  at a random position on a 42x42 black canvas.
* **P**, ``projective``: scale ``U(0.75, 1.0)``, then each of the four image corners moved by an
  independent ``N(0, sigma^2)`` translation in x and y; the homography taking the moved corners
  back to the original ones warps the digit. 28x28.
* **E**, ``elastic``: a thin-plate spline over a 4x4 lattice of control points, each moved by an
  independent ``U(-r, r)`` translation in x and y. 28x28.

Where the paper is loose we chose, and say so here:

* the angle sign: positive is counter-clockwise as displayed (``y`` points down);
* RTS placement: the centre is uniform over positions that keep the *unrotated* scaled 28x28
  frame inside the 42x42 canvas, ``|shift| <= (42 - 28 s) / 2`` pixels per axis (the digit's
  strokes sit in the central 20x20 of MNIST, so rotation rarely clips them);
* P: ``sigma = 0.2`` in the ``[-1, 1]`` coordinates (10% of the image side, 2.8 pixels), clipped
  at ``3 sigma``; E: ``r = 0.2`` (2.8 pixels), no scaling before the spline. We could not check the
  appendix's exact P and E magnitudes in this environment; both are options.
* every generated set is fixed once made (the train set from ``seed``, the test set from
  ``test_seed``, which does not change with ``seed``, so every model is scored on the same test
  images); coordinates follow ``visattn.functional.warp`` with ``align_corners=True``.

Each generator returns ``(images, params)``: images with the input's dtype (``uint8`` in, rounded
``uint8`` out) and a dict of the drawn parameters ``(N, ...)`` for checks and plots.

The 60x60 translated and cluttered MNIST live in ``visattn.data.cluttered``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from visattn._validate import check_positive, check_range, check_tensor, check_type
from visattn.data._registry import DatasetSplits, ImageTensorDataset, load_dataset, register_dataset
from visattn.functional.warp import tps_control_points, warp

__all__ = [
    "DISTORTIONS",
    "rotate",
    "rotate_translate_scale",
    "projective",
    "elastic",
    "distort",
    "homography_from_corners",
]

_CHUNK = 4096  # images warped at once (bounds the memory of the sampling grid)
_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))


def _check_images(images: Any) -> torch.Tensor:
    check_tensor(images, "images", ndim=4, floating=False, layout="(N, C, H, W)")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square (N, C, S, S), got shape {tuple(images.shape)}")
    return images


def _check_generator(generator: Any) -> torch.Generator:
    return check_type(generator, "generator", torch.Generator)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _check_interval(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    check_type(value, name, (tuple, list))
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be a pair (lo, hi) with {low} <= lo <= hi <= {high}, got {value!r}")
    return float(value[0]), float(value[1])


def _apply(
    images: torch.Tensor, theta: torch.Tensor, transform: str, out_size: int, **kw: Any
) -> torch.Tensor:
    """Warp ``images`` by ``theta`` (float64 params) in chunks; keep the input's dtype."""
    outs = []
    for start in range(0, images.shape[0], _CHUNK):
        x = images[start : start + _CHUNK].float()
        th = theta[start : start + _CHUNK].float()
        outs.append(warp(x, th, transform=transform, out_size=out_size, padding_mode="zeros", **kw))
    out = torch.cat(outs)
    if images.dtype == torch.uint8:
        return out.round().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def _rotation(angle_deg: torch.Tensor) -> torch.Tensor:
    """Output-to-input ``(N, 2, 2)`` matrices rotating the content counter-clockwise (as displayed)."""
    a = angle_deg * (math.pi / 180)
    c, s = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def rotate(
    images: torch.Tensor, *, generator: torch.Generator, max_angle: float = 90.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """R: rotate each image by ``U(-max_angle, max_angle)`` degrees about its centre.

    Args:
        images: ``(N, C, S, S)``, ``uint8`` or float.
        generator: the source of randomness (same seed, same output).
        max_angle: in degrees, ``[0, 180]``.

    Returns:
        ``(N, C, S, S)`` images and ``{"angle": (N,), "theta": (N, 2, 3)}``: degrees, and the
        output-to-input affine map each image was warped with.

    >>> out, p = rotate(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
    >>> out.shape, p["angle"].shape
    (torch.Size([3, 1, 28, 28]), torch.Size([3]))
    """
    _check_images(images)
    _check_generator(generator)
    check_range(max_angle, "max_angle", 0.0, 180.0)
    n = images.shape[0]
    angle = _uniform(n, -max_angle, max_angle, generator)
    theta = torch.cat([_rotation(angle), torch.zeros(n, 2, 1, dtype=torch.float64)], dim=2)
    return _apply(images, theta, "affine", images.shape[-1]), {"angle": angle.float(), "theta": theta.float()}


def rotate_translate_scale(
    images: torch.Tensor,
    *,
    generator: torch.Generator,
    max_angle: float = 45.0,
    scale: tuple[float, float] = (0.7, 1.2),
    canvas: int = 42,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RTS: rotate by ``U(-max_angle, max_angle)``, scale by ``U(*scale)``, place at random on a canvas.

    The content map (input pixel offset ``q`` from the centre to canvas offset ``p``) is
    ``p = s R(angle) q + shift``, with ``shift`` uniform in ``|shift| <= (canvas - S s) / 2`` per axis.

    Args:
        images: ``(N, C, S, S)``.
        generator: the source of randomness.
        max_angle: degrees.
        scale: ``(lo, hi)`` with ``0 < lo <= hi <= canvas / S``.
        canvas: output side, at least ``S``.

    Returns:
        ``(N, C, canvas, canvas)`` and ``{"angle": (N,), "scale": (N,), "shift": (N, 2), "theta":
        (N, 2, 3)}`` (shift ``(x, y)`` in canvas pixels from its centre; theta the output-to-input
        affine map from the canvas to the digit's ``[-1, 1]`` frame, with which
        ``visattn.functional.residual_rotation`` measures what a transformer leaves of the rotation).

    >>> out, p = rotate_translate_scale(torch.zeros(2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    >>> out.shape, p["shift"].shape
    (torch.Size([2, 1, 42, 42]), torch.Size([2, 2]))
    """
    _check_images(images)
    _check_generator(generator)
    check_range(max_angle, "max_angle", 0.0, 180.0)
    check_positive(canvas, "canvas", integer=True)
    side = images.shape[-1]
    if canvas < side:
        raise ValueError(f"canvas must be at least the image side {side}, got {canvas}")
    lo, hi = _check_interval(scale, "scale", 1e-3, canvas / side)
    n = images.shape[0]
    angle = _uniform(n, -max_angle, max_angle, generator)
    s = _uniform(n, lo, hi, generator)
    room = ((canvas - side * s) / 2).unsqueeze(1)  # (N, 1) pixels of free play per axis
    shift = (2 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1) * room
    # normalised coordinates (align_corners=True): pixel offset = u * (side - 1) / 2
    k = ((canvas - 1) / (side - 1) / s).view(n, 1, 1)
    rot = k * _rotation(angle)
    shift_n = shift / ((canvas - 1) / 2)
    trans = -(rot @ shift_n.unsqueeze(2))
    theta = torch.cat([rot, trans], dim=2)
    out = _apply(images, theta, "affine", canvas)
    return out, {"angle": angle.float(), "scale": s.float(), "shift": shift.float(), "theta": theta.float()}


def homography_from_corners(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The homographies ``(N, 3, 3)`` (``h_33 = 1``) mapping the 4 points ``src`` to ``dst``, both ``(N, 4, 2)``.

    Solves the 8x8 direct linear system for the whole batch with ``torch.linalg.solve``.

    >>> c = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]])
    >>> (homography_from_corners(c, 2 * c).round(decimals=4) + 0.0).tolist()
    [[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (N, 8, 8)
    b = torch.cat([u, v], dim=1)  # (N, 8)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(-1, 3, 3)


def projective(
    images: torch.Tensor,
    *,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.75, 1.0),
    corner_std: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """P: scale by ``U(*scale)``, then move each image corner by ``N(0, corner_std^2)`` (clipped at 3 std).

    The image corners ``c_k`` (in ``[-1, 1]`` coordinates) land at ``s c_k + d_k`` in the output;
    the output-to-input homography maps those points back to ``c_k``.

    Returns:
        ``(N, C, S, S)`` and ``{"scale": (N,), "corners": (N, 4, 2)}`` (the moved corners, order
        top-left, top-right, bottom-left, bottom-right, ``(x, y)``).

    >>> out, p = projective(torch.zeros(2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    >>> out.shape, p["corners"].shape
    (torch.Size([2, 1, 28, 28]), torch.Size([2, 4, 2]))
    """
    _check_images(images)
    _check_generator(generator)
    lo, hi = _check_interval(scale, "scale", 1e-3, 1.0)
    check_range(corner_std, "corner_std", 0.0, 0.3)
    n = images.shape[0]
    s = _uniform(n, lo, hi, generator)
    d = torch.randn(n, 4, 2, generator=generator, dtype=torch.float64) * corner_std
    d = d.clamp(-3 * corner_std, 3 * corner_std)
    corners = torch.tensor(_CORNERS, dtype=torch.float64).expand(n, 4, 2)
    moved = s.view(n, 1, 1) * corners + d
    theta = homography_from_corners(moved, corners)
    out = _apply(images, theta, "projective", images.shape[-1])
    return out, {"scale": s.float(), "corners": moved.float()}


def elastic(
    images: torch.Tensor,
    *,
    generator: torch.Generator,
    max_offset: float = 0.2,
    grid_size: tuple[int, int] = (4, 4),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """E: thin-plate-spline warp moving each control point of a ``grid_size`` lattice by ``U(-r, r)``.

    Returns:
        ``(N, C, S, S)`` and ``{"offsets": (N, K, 2)}`` in ``[-1, 1]`` units (``K = gh * gw``;
        output control point ``p_k`` samples input point ``p_k + offset_k``).

    >>> out, p = elastic(torch.zeros(2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    >>> out.shape, p["offsets"].shape
    (torch.Size([2, 1, 28, 28]), torch.Size([2, 16, 2]))
    """
    _check_images(images)
    _check_generator(generator)
    check_range(max_offset, "max_offset", 0.0, 1.0)
    k = tps_control_points(grid_size).shape[0]
    n = images.shape[0]
    offsets = (2 * torch.rand(n, k, 2, generator=generator, dtype=torch.float64) - 1) * max_offset
    out = _apply(images, offsets, "tps", images.shape[-1], grid_size=grid_size)
    return out, {"offsets": offsets.float()}


DISTORTIONS = {"R": rotate, "RTS": rotate_translate_scale, "P": projective, "E": elastic}


def distort(
    images: torch.Tensor, kind: str, *, seed: int, **options: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Apply the distortion ``kind`` (``"R"``, ``"RTS"``, ``"P"``, ``"E"``) with a generator seeded by ``seed``.

    >>> x = torch.rand(2, 1, 28, 28)
    >>> a, _ = distort(x, "E", seed=3)
    >>> b, _ = distort(x, "E", seed=3)
    >>> a.shape, bool(torch.equal(a, b))
    (torch.Size([2, 1, 28, 28]), True)
    """
    if kind not in DISTORTIONS:
        raise ValueError(f"kind must be one of {list(DISTORTIONS)}, got {kind!r}")
    check_type(seed, "seed", int)
    fn: Any = DISTORTIONS[kind]
    return fn(images, generator=torch.Generator().manual_seed(seed), **options)


_NAMES = {"R": "mnist_rotated", "RTS": "mnist_rts", "P": "mnist_projective", "E": "mnist_elastic"}


def _distorted_mnist(
    kind: str, *, data_dir: str | None, download: bool, seed: int, test_seed: int, **options: Any
) -> DatasetSplits:
    base = load_dataset("mnist", data_dir=data_dir, download=download)
    check_type(test_seed, "test_seed", int)
    train, test = base.train, base.test
    if not isinstance(train, ImageTensorDataset) or not isinstance(test, ImageTensorDataset):
        raise TypeError(f"'mnist' must load as ImageTensorDataset splits, got {type(train).__name__}")
    x_tr, p_tr = distort(train.images, kind, seed=seed, **options)
    x_te, p_te = distort(test.images, kind, seed=test_seed, **options)
    as_float = x_tr.float() / 255
    name = _NAMES[kind]
    return DatasetSplits(
        name=name,
        train=ImageTensorDataset(x_tr, train.labels, source=f"{name} train (seed {seed})"),
        test=ImageTensorDataset(x_te, test.labels, source=f"{name} test (seed {test_seed})"),
        num_classes=base.num_classes,
        in_chans=1,
        image_size=(int(x_tr.shape[-2]), int(x_tr.shape[-1])),
        mean=(float(as_float.mean()),),
        std=(float(as_float.std()),),
        class_names=base.class_names,
        extras={"train_params": p_tr, "test_params": p_te},
    )


def _register(kind: str) -> None:
    def builder(
        *,
        data_dir: str | None = None,
        download: bool = False,
        seed: int = 0,
        test_seed: int = 10_000,
        **options: Any,
    ) -> DatasetSplits:
        return _distorted_mnist(
            kind, data_dir=data_dir, download=download, seed=seed, test_seed=test_seed, **options
        )

    builder.__name__ = _NAMES[kind]
    builder.__doc__ = (
        f"Distorted MNIST {kind} ({DISTORTIONS[kind].__name__}): the train set drawn from ``seed``, the test set"
        f" from ``test_seed`` (fixed across ``seed``); ``options`` go to ``{DISTORTIONS[kind].__name__}``."
    )
    register_dataset(_NAMES[kind])(builder)


for _kind in DISTORTIONS:
    _register(_kind)
