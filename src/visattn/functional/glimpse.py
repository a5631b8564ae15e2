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

How it is computed (no per-sample Python loop). Bilinear sampling is linear and commutes with integer
shifts, so the mean of the ``f^i x f^i`` samples of a block equals one bilinear sample, at the block's
first point, of the image box-filtered over ``f^i x f^i``. ``glimpse_pyramid`` box-filters the padded
image once per scale (``(f - 1)`` shifted adds per axis and scale, each scale built from the previous
one); ``extract_glimpses`` then reads all ``k`` scales of all images with **one** ``grid_sample`` over
only ``k g^2`` points per image (432 instead of ``12^2 + 24^2 + 48^2 = 3024`` for the 60x60 setting).
A recurrent model builds the pyramid once per image and reuses it for every glimpse of the episode
(``pyramid=``). The result equals the direct computation (sample every point of every patch, then
``avg_pool2d``; kept as ``extract_glimpses_direct``) up to float rounding, for every padding mode; with
``"reflection"`` and a location outside ``[-1, 1]`` (a patch reaching further than the stored
padding), ``extract_glimpses`` falls back to the direct computation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from visattn._validate import check_choice, check_positive, check_tensor

__all__ = [
    "GLIMPSE_PADDING_MODES",
    "GlimpsePyramid",
    "extract_glimpses",
    "extract_glimpses_direct",
    "glimpse_pyramid",
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


def extract_glimpses_direct(
    images: torch.Tensor,
    locations: torch.Tensor,
    *,
    size: int,
    num_scales: int = 1,
    scale_factor: int = 2,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """The direct computation of ``extract_glimpses``: every point of every patch, then ``avg_pool2d``.

    Reads ``k C sum_i (f^i g)^2`` bilinear samples per image (``extract_glimpses`` reads ``k C g^2``);
    kept as the reference the fast path is tested against and as its fallback. Arguments, return
    value and coordinates: those of ``extract_glimpses`` (without ``pyramid``).

    >>> extract_glimpses_direct(torch.rand(4, 3, 60, 60), torch.zeros(4, 2), size=12, num_scales=3).shape
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


@dataclass(frozen=True)
class GlimpsePyramid:
    """Box-filtered, padded copies of a batch of images, one per glimpse scale (see ``glimpse_pyramid``).

    ``levels`` is ``(B, k, C, H + 2 pad, W + 2 pad)``: level ``i`` holds the ``f^i x f^i`` box average
    whose top-left pixel is ``(u - pad, v - pad)`` at index ``(v, u)``.
    """

    levels: torch.Tensor
    pad: int
    image_size: tuple[int, int]
    num_scales: int
    scale_factor: int
    padding_mode: str


def _symmetric_index(n: int, start: int, length: int, device: torch.device) -> torch.Tensor:
    """Indices ``start .. start + length - 1`` folded into ``[0, n)`` by mirroring about the outer edges.

    This is ``grid_sample``'s ``"reflection"`` with ``align_corners=False`` (edge pixels repeated).
    """
    idx = torch.arange(start, start + length, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def glimpse_pyramid(
    images: torch.Tensor,
    *,
    size: int,
    num_scales: int = 1,
    scale_factor: int = 2,
    padding_mode: str = "zeros",
) -> GlimpsePyramid:
    """Pad ``images (B, C, H, W)`` and box-filter them once per scale, for ``extract_glimpses(pyramid=...)``.

    Level ``i`` is the image averaged over ``f^i x f^i`` blocks at every offset (stride 1), built
    from level ``i - 1`` by ``f - 1`` shifted adds per axis. The padding is ``f^(k-1)`` pixels for
    ``"zeros"`` and ``"border"`` (the box average is constant or zero beyond it, so ``grid_sample``'s
    own padding continues it exactly) and half the largest patch plus one for ``"reflection"``.

    >>> glimpse_pyramid(torch.rand(2, 1, 60, 60), size=12, num_scales=3).levels.shape
    torch.Size([2, 3, 1, 68, 68])
    """
    check_tensor(images, "images", ndim=4)
    check_choice(padding_mode, "padding_mode", GLIMPSE_PADDING_MODES)
    sides = glimpse_sides(size, num_scales, scale_factor)
    b, c, h, w = images.shape
    box = scale_factor ** (num_scales - 1)
    pad = box if padding_mode != "reflection" else sides[-1] // 2 + 2
    extra = box - 1  # the largest box reads this many pixels past its top-left one
    if padding_mode == "zeros":
        big = F.pad(images, (pad, pad + extra, pad, pad + extra))
    elif padding_mode == "border":
        big = F.pad(images, (pad, pad + extra, pad, pad + extra), mode="replicate")
    else:
        rows = _symmetric_index(h, -pad, h + 2 * pad + extra, images.device)
        cols = _symmetric_index(w, -pad, w + 2 * pad + extra, images.device)
        big = images.index_select(2, rows).index_select(3, cols)
    out_h, out_w = h + 2 * pad, w + 2 * pad
    levels = images.new_empty(b, num_scales, c, out_h, out_w)
    levels[:, 0] = big[..., :out_h, :out_w]  # copied into one buffer: stacking strided slices is slow
    level = big
    for i in range(1, num_scales):
        step = scale_factor ** (i - 1)
        nh = level.shape[2] - (scale_factor - 1) * step
        nw = level.shape[3] - (scale_factor - 1) * step
        cols = level[..., :, :nw] + level[..., :, step : step + nw]
        for t in range(2, scale_factor):
            cols = cols + level[..., :, t * step : t * step + nw]
        rows = cols[..., :nh, :] + cols[..., step : step + nh, :]
        for t in range(2, scale_factor):
            rows = rows + cols[..., t * step : t * step + nh, :]
        level = rows.mul_(1.0 / (scale_factor * scale_factor))
        levels[:, i] = level[..., :out_h, :out_w]
    return GlimpsePyramid(levels, pad, (h, w), num_scales, scale_factor, padding_mode)


@functools.lru_cache(maxsize=32)
def _pyramid_grid_offsets(
    sides: tuple[int, ...],
    size: int,
    pad: int,
    frame: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``grid_sample`` coordinates of the ``g x g`` block starts for a patch centred at ``p = 0``, ``(k g g, 2)``.

    Block ``j`` of the patch of side ``s = b g`` starts at index coordinate ``p - s/2 + j b`` (pixel
    centres at integers), stored at ``u = that + pad`` in the pyramid of size ``frame = (H2, W2)``;
    ``grid_sample`` (``align_corners=False``) wants ``(2 u + 1) / W2 - 1``. Cached: built once per shape.
    """
    h2, w2 = frame
    parts = []
    for s in sides:
        r = torch.arange(size, dtype=torch.float64) * (s // size) - s / 2.0 + pad + 0.5
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        parts.append(torch.stack([xx * 2.0 / w2 - 1.0, yy * 2.0 / h2 - 1.0], dim=-1).reshape(-1, 2))
    return torch.cat(parts).to(device=device, dtype=dtype)


def extract_glimpses(
    images: torch.Tensor,
    locations: torch.Tensor,
    *,
    size: int,
    num_scales: int = 1,
    scale_factor: int = 2,
    padding_mode: str = "zeros",
    pyramid: GlimpsePyramid | None = None,
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
        pyramid: ``glimpse_pyramid(images, ...)`` built with the same options, to share its box
            filtering across several calls on the same images (the glimpses of one episode);
            built here when ``None``.

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
    if padding_mode == "reflection" and bool((locations.detach().abs() > 1).any()):
        return extract_glimpses_direct(
            images, locations, size=size, num_scales=num_scales, scale_factor=scale_factor,
            padding_mode=padding_mode,
        )  # fmt: skip
    if pyramid is None:
        pyramid = glimpse_pyramid(
            images, size=size, num_scales=num_scales, scale_factor=scale_factor, padding_mode=padding_mode
        )
    else:
        options = (pyramid.image_size, pyramid.num_scales, pyramid.scale_factor, pyramid.padding_mode)
        if options != ((h, w), num_scales, scale_factor, padding_mode) or pyramid.levels.shape[0] != b:
            raise ValueError(
                "pyramid must be glimpse_pyramid(images, ...) with the same options, got image_size, "
                f"num_scales, scale_factor, padding_mode = {options} for images {tuple(images.shape)}"
            )
    levels = pyramid.levels  # (B, k, C, H2, W2)
    h2, w2 = levels.shape[-2:]
    dtype = levels.dtype
    # an exporter's tensors must not enter (or come from) the cache: build them afresh while exporting
    exporting = torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
    make = _pyramid_grid_offsets.__wrapped__ if exporting else _pyramid_grid_offsets
    offsets = make(tuple(sides), size, pyramid.pad, (h2, w2), images.device, dtype)
    # the centre is (l + 1) W / 2 pixels right of the image's left edge: (l + 1) W / W2 in normalised units
    centre = (locations.to(dtype) + 1.0) * torch.tensor([w / w2, h / h2], device=images.device, dtype=dtype)
    grid = (centre[:, None, :] + offsets[None]).view(b * num_scales, size, size, 2)  # (B k, g, g, 2)
    out = F.grid_sample(
        levels.reshape(b * num_scales, c, h2, w2),
        grid,
        mode="bilinear",
        padding_mode="border" if padding_mode == "border" else "zeros",
        align_corners=False,
    )  # (B k, C, g, g)
    return out.reshape(b, num_scales, c, size, size)
