"""Batched multi-scale glimpse crops: the "retina" of the Recurrent Attention Model.

Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014, sec. 4
(the glimpse sensor ``rho(x_t, l_{t-1})``): around a location ``l`` the sensor reads ``k`` square
patches of sides ``g, f g, f^2 g, ...`` (``f = scale_factor``, 2 in the paper) and resizes each to
``g x g``, so the centre is seen sharply and the surround coarsely.

Convention (every function here):

* a location is ``(x, y)``, ``x`` along the width and ``y`` along the height, both in ``[-1, 1]``;
  ``(-1, -1)`` is the top-left **corner** (outer edge) of the image and ``(1, 1)`` the bottom-right
  corner: this is ``grid_sample``'s ``align_corners=False`` frame (unlike ``visattn.functional.warp``,
  whose default puts ``-1``/``1`` on the corner pixel centres);
* in pixels, pixel ``i`` spans ``[i, i + 1)`` and location ``x`` is the point
  ``p_x = (x + 1) W / 2`` (``p_y = (y + 1) H / 2``); ``(0, 0)`` is the image centre;
* the patch of side ``s`` pixels covers ``[p - s/2, p + s/2)`` along each axis and is sampled at the
  ``s`` points ``p - s/2 + j + 1/2``, ``j = 0..s-1``, bilinearly. When ``p - s/2`` is an integer
  these are pixel centres and the patch is exactly the integer crop ``image[..., y0:y0+s, x0:x0+s]``;
* the patch of side ``f^i g`` is then averaged over ``f^i x f^i`` blocks (``avg_pool2d``) down to
  ``g x g``;
* outside the image the sensor reads ``padding_mode``: ``"zeros"`` (the default, as in the paper)
  reads 0 *in the units of the input*; after normalisation ``(x - mean) / std`` that is the mean
  intensity, not the background, which a model can learn to recognise as "off the image".
  ``"border"`` repeats the edge pixels, ``"reflection"`` mirrors the image.

All scales of all images are read by **one** ``grid_sample`` call (their sampling points are
concatenated), then one ``avg_pool2d`` per scale: no per-sample Python loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visattn._validate import check_choice, check_positive, check_tensor

__all__ = [
    "GLIMPSE_PADDING_MODES",
    "extract_glimpses",
    "glimpse_boxes",
    "glimpse_sides",
    "location_to_pixels",
]

GLIMPSE_PADDING_MODES = ("zeros", "border", "reflection")


def glimpse_sides(size: int, num_scales: int = 1, scale_factor: int = 2) -> list[int]:
    """Sides in pixels of the ``num_scales`` patches, ``[g, f g, f^2 g, ...]``.

    >>> glimpse_sides(12, 3)
    [12, 24, 48]
    """
    check_positive(size, "size", integer=True)
    check_positive(num_scales, "num_scales", integer=True)
    check_positive(scale_factor, "scale_factor", integer=True)
    return [size * scale_factor**i for i in range(num_scales)]


def _check_locations(locations: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    check_tensor(locations, "locations", ndim=2, layout="(B, 2)")
    if locations.shape[1] != 2 or (batch is not None and locations.shape[0] != batch):
        want = f"({batch}, 2)" if batch is not None else "(B, 2)"
        raise ValueError(f"locations must have shape {want} (x, y), got {tuple(locations.shape)}")
    return locations


def location_to_pixels(locations: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates ``(p_x, p_y) = ((x + 1) W / 2, (y + 1) H / 2)`` of locations ``(B, 2)``.

    Pixel ``i`` spans ``[i, i + 1)``, so the centre of a 60x60 image is ``(30, 30)``.

    >>> location_to_pixels(torch.tensor([[0.0, -1.0]]), (60, 40))
    tensor([[20.,  0.]])
    """
    _check_locations(locations)
    h, w = image_size
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=locations.dtype, device=locations.device)
    return (locations + 1.0) * scale


def glimpse_boxes(
    locations: torch.Tensor,
    image_size: tuple[int, int],
    *,
    size: int,
    num_scales: int = 1,
    scale_factor: int = 2,
) -> torch.Tensor:
    """Pixel boxes ``(x0, y0, x1, y1)`` of every patch, shape ``(B, num_scales, 4)`` (for plots and scores).

    >>> glimpse_boxes(torch.zeros(1, 2), (60, 60), size=12, num_scales=2)[0]
    tensor([[24., 24., 36., 36.],
            [18., 18., 42., 42.]])
    """
    sides = glimpse_sides(size, num_scales, scale_factor)
    centre = location_to_pixels(locations, image_size)  # (B, 2)
    half = torch.tensor(sides, dtype=centre.dtype, device=centre.device)[None, :, None] / 2  # (1, K, 1)
    return torch.cat([centre[:, None] - half, centre[:, None] + half], dim=2)


def _offsets(
    sides: list[int], image_size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Sampling offsets of all scales in normalised units, ``(N, 2)`` with ``N = sum(s^2)``, row-major."""
    h, w = image_size
    per_pixel = torch.tensor([2.0 / w, 2.0 / h], device=device, dtype=dtype)
    parts = []
    for s in sides:
        r = torch.arange(s, device=device, dtype=dtype) + 0.5 - s / 2.0  # pixel offsets of sample points
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        parts.append(torch.stack([xx, yy], dim=-1).reshape(-1, 2))
    return torch.cat(parts) * per_pixel


def extract_glimpses(
    images: torch.Tensor,
    locations: torch.Tensor,
    *,
    size: int,
    num_scales: int = 1,
    scale_factor: int = 2,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Read ``num_scales`` patches around each location and resize each to ``size x size``.

    ``rho(x, l) = [avgpool_{f^i}(crop_{f^i g}(x, l)) for i = 0..k-1]`` (Mnih et al. 2014, sec. 4);
    coordinates follow the module docstring (``align_corners=False`` frame, ``(x, y)`` in ``[-1, 1]``).

    Args:
        images: ``(B, C, H, W)`` floating point; any ``H, W`` (patches may extend past the image).
        locations: ``(B, 2)`` centres ``(x, y)``; values outside ``[-1, 1]`` are allowed and read padding.
        size: ``g``, the side of the smallest patch and of every output patch.
        num_scales: ``k``, the number of patches.
        scale_factor: ``f``, each patch's side over the previous one's (an integer, so the
            resize is an exact block average).
        padding_mode: what is read outside the image: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        ``(B, k, C, g, g)`` patches, finest first. Differentiable in ``images`` and ``locations``.

    >>> extract_glimpses(torch.rand(4, 3, 60, 60), torch.zeros(4, 2), size=12, num_scales=3).shape
    torch.Size([4, 3, 3, 12, 12])
    """
    check_tensor(images, "images", ndim=4)
    b, c, h, w = images.shape
    _check_locations(locations, b)
    check_choice(padding_mode, "padding_mode", GLIMPSE_PADDING_MODES)
    sides = glimpse_sides(size, num_scales, scale_factor)
    offsets = _offsets(sides, (h, w), images.device, images.dtype)  # (N, 2)
    grid = locations.to(images.dtype)[:, None, :] + offsets[None]  # (B, N, 2)
    samples = F.grid_sample(
        images, grid[:, None], mode="bilinear", padding_mode=padding_mode, align_corners=False
    )  # (B, C, 1, N)
    patches = []
    start = 0
    for i, s in enumerate(sides):
        patch = samples[:, :, 0, start : start + s * s].reshape(b, c, s, s)
        start += s * s
        if i > 0:
            patch = F.avg_pool2d(patch, kernel_size=scale_factor**i)
        patches.append(patch)
    return torch.stack(patches, dim=1)
