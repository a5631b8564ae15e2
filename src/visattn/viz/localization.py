"""Localisation score: how well does a mechanism's attention find the object?

Two scores of a non-negative heat map ``A (B, H, W)`` on the input against the object's box:

* **pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
  sec. 5.1): a hit when the map's maximum lies inside the box; when several pixels share the
  maximum (a flat map, a warp grid's even density) the point is the rounded centroid of those
  pixels, so ties do not favour the top-left corner; the score is the share of hits. Zhang et al. allow a 15-pixel tolerance on
  224-pixel images; ``tolerance`` (pixels) grows the box by that much, default 0.
* **attention mass in the box**: ``sum_{p in box} A_p / sum_p A_p``; a uniform map scores the
  box's share of the image, reported as the ``uniform`` reference.

Each mechanism's attention becomes a heat map at the input's resolution:

* ``spatial`` ``(B, C, h, w)``: the channel mean, bilinearly upsampled (``align_corners=False``);
* ``warp`` ``(B, Ho, Wo, 2)``: the density of the grid's sampling points on the input (the region
  the transformer reads), with the grid's ``align_corners`` convention;
* ``location`` ``(B, 2)`` or ``(B, T, 2)``: a sum of Gaussians (``sigma`` pixels) at the glimpse
  centres, ``(x, y)`` in ``[-1, 1]``.

``channel`` and ``gains`` taps have no spatial layout; for those models (and for every model, as a
reference) Grad-CAM of the same model (``visattn.viz.gradcam``) is scored, and a
**centre prior** (a Gaussian at the image centre, ``sigma = 1/4`` of the side) is the baseline any
attention should beat on translated or cluttered digits.

Box convention: ``(x0, y0, x1, y1)`` in pixels, half-open: the box holds the pixels with
``x0 <= col < x1`` and ``y0 <= row < y1`` (the slice ``img[y0:y1, x0:x1]``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.viz.gradcam import gradcam as _gradcam

__all__ = [
    "box_mask",
    "pointing_game",
    "mass_in_box",
    "spatial_heatmap",
    "warp_heatmap",
    "location_heatmap",
    "centre_prior",
    "tap_heatmaps",
    "localization_scores",
]

SPATIAL_KINDS = ("spatial", "warp", "location")


def _size(size: Any, name: str = "size") -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise TypeError(f"{name} must be an int or (H, W), got {size!r}")
    return (check_positive(size[0], name, integer=True), check_positive(size[1], name, integer=True))


def _check_maps_boxes(maps: torch.Tensor, boxes: torch.Tensor) -> None:
    check_tensor(maps, "maps", ndim=3, layout="(B, H, W)")
    check_tensor(boxes, "boxes", ndim=2, floating=False, layout="(B, 4)")
    if boxes.shape != (maps.shape[0], 4):
        raise ValueError(f"boxes must be (B, 4) with B = {maps.shape[0]}, got shape {tuple(boxes.shape)}")


def box_mask(boxes: torch.Tensor, size: int | tuple[int, int], *, tolerance: int = 0) -> torch.Tensor:
    """Boolean masks ``(B, H, W)`` of half-open pixel boxes ``(x0, y0, x1, y1)`` grown by ``tolerance``.

    >>> box_mask(torch.tensor([[1, 0, 3, 2]]), (3, 4)).int().tolist()
    [[[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    check_tensor(boxes, "boxes", ndim=2, floating=False, layout="(B, 4)")
    h, w = _size(size)
    check_positive(tolerance, "tolerance", integer=True, allow_zero=True)
    b = boxes.long()
    rows = torch.arange(h, device=boxes.device)[None, :, None]
    cols = torch.arange(w, device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (b[:, i, None, None] for i in range(4))
    t = tolerance
    return (cols >= x0 - t) & (cols < x1 + t) & (rows >= y0 - t) & (rows < y1 + t)


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, *, tolerance: int = 0) -> torch.Tensor:
    """Per image, whether the map's maximum is inside the box: ``(B, H, W), (B, 4) -> (B,)`` bool.

    Tied maxima count at their rounded centroid (a flat map points at the image centre).

    >>> m = torch.zeros(2, 8, 8); m[0, 2, 3] = 1; m[1, 7, 7] = 1
    >>> pointing_game(m, torch.tensor([[2, 1, 5, 4], [2, 1, 5, 4]])).tolist()
    [True, False]
    """
    _check_maps_boxes(maps, boxes)
    inside = box_mask(boxes, (maps.shape[-2], maps.shape[-1]), tolerance=tolerance)
    h, w = maps.shape[-2:]
    flat = maps.float().flatten(1)
    top = (flat >= flat.amax(1, keepdim=True)).float()  # the maximum's pixels (ties included)
    pos = torch.arange(h * w, device=maps.device)
    row = ((top * (pos // w)).sum(1) / top.sum(1)).round().long()
    col = ((top * (pos % w)).sum(1) / top.sum(1)).round().long()
    return inside[torch.arange(maps.shape[0], device=maps.device), row, col]


def mass_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each (non-negative) map's mass inside the box: ``(B, H, W), (B, 4) -> (B,)``.

    Negative values are clamped to 0; an all-zero map counts as uniform.

    >>> m = torch.zeros(1, 4, 4); m[0, :2, :2] = 1; m[0, 3, 3] = 2
    >>> round(float(mass_in_box(m, torch.tensor([[0, 0, 2, 2]]))[0]), 4)
    0.6667
    """
    _check_maps_boxes(maps, boxes)
    a = maps.float().clamp_min(0).flatten(1)
    a = torch.where(a.sum(1, keepdim=True) > 0, a, torch.ones_like(a))
    inside = box_mask(boxes, (maps.shape[-2], maps.shape[-1])).flatten(1)
    return (a * inside).sum(1) / a.sum(1)


def spatial_heatmap(att: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """A spatial attention ``(B, C, h, w)`` as a heat map ``(B, H, W)``: channel mean, bilinear upsampling.

    >>> spatial_heatmap(torch.rand(2, 16, 7, 7), (28, 28)).shape
    torch.Size([2, 28, 28])
    """
    check_tensor(att, "att", ndim=4)
    m = att.float().mean(1, keepdim=True)
    m = F.interpolate(m, size=_size(size), mode="bilinear", align_corners=False)
    return m[:, 0]


def warp_heatmap(
    grid: torch.Tensor, size: int | tuple[int, int], *, align_corners: bool = True
) -> torch.Tensor:
    """Density ``(B, H, W)`` of a sampling grid's points ``(B, Ho, Wo, 2)`` on an ``(H, W)`` input.

    Each grid point ``(x, y)`` in ``[-1, 1]`` counts once at its nearest input pixel (points outside
    the input are dropped); ``align_corners=True`` puts ``-1``/``1`` on the corner pixels' centres.

    >>> ys, xs = torch.meshgrid(torch.linspace(-1, 0, 4), torch.linspace(-1, 0, 4), indexing="ij")
    >>> d = warp_heatmap(torch.stack([xs, ys], -1)[None], (8, 8))
    >>> d.shape, float(d[0, :5, :5].sum()), float(d[0, 5:, 5:].sum())
    (torch.Size([1, 8, 8]), 16.0, 0.0)
    """
    check_tensor(grid, "grid", ndim=4, layout="(B, H_out, W_out, 2)")
    if grid.shape[-1] != 2:
        raise ValueError(f"grid must be (B, H_out, W_out, 2), got shape {tuple(grid.shape)}")
    h, w = _size(size)
    from visattn.viz.warps import grid_to_pixels

    px = grid_to_pixels(grid.float(), (h, w), align_corners=align_corners).round().long().flatten(1, 2)
    col, row = px[..., 0], px[..., 1]
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    b = torch.arange(grid.shape[0], device=grid.device)[:, None].expand_as(col)
    flat = (b * h * w + row.clamp(0, h - 1) * w + col.clamp(0, w - 1))[ok]
    counts = torch.bincount(flat, minlength=grid.shape[0] * h * w)
    return counts.view(grid.shape[0], h, w).float()


def location_heatmap(
    loc: torch.Tensor, size: int | tuple[int, int], *, sigma: float = 3.0, align_corners: bool = False
) -> torch.Tensor:
    """Gaussians (``sigma`` pixels) at locations ``(B, 2)`` or ``(B, T, 2)`` in ``[-1, 1]``, summed: ``(B, H, W)``.

    ``align_corners=False`` (the glimpse convention of ``grid_sample``): ``-1``/``1`` are the image's
    outer edges, so ``(0, 0)`` is its exact centre.

    >>> m = location_heatmap(torch.tensor([[0.5, -0.5]]), (8, 8))
    >>> m.shape, divmod(int(m[0].argmax()), 8)
    (torch.Size([1, 8, 8]), (1, 5))
    """
    check_tensor(loc, "loc", ndim=(2, 3), nonempty=True, layout="(B, 2) or (B, T, 2)")
    if loc.shape[-1] != 2:
        raise ValueError(f"loc must be (B, 2) or (B, T, 2), got shape {tuple(loc.shape)}")
    check_positive(sigma, "sigma")
    h, w = _size(size)
    from visattn.viz.warps import grid_to_pixels

    pts = grid_to_pixels(loc.float().reshape(loc.shape[0], -1, 2), (h, w), align_corners=align_corners)
    rows = torch.arange(h, device=loc.device, dtype=torch.float32)[None, None, :, None]
    cols = torch.arange(w, device=loc.device, dtype=torch.float32)[None, None, None, :]
    d2 = (cols - pts[..., 0, None, None]) ** 2 + (rows - pts[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2)).sum(1)


def centre_prior(batch: int, size: int | tuple[int, int], *, sigma_frac: float = 0.25) -> torch.Tensor:
    """The centre-prior baseline: a Gaussian at the image centre, ``sigma = sigma_frac * side``.

    >>> p = centre_prior(2, (9, 9))
    >>> p.shape, divmod(int(p[0].argmax()), 9)
    (torch.Size([2, 9, 9]), (4, 4))
    """
    check_positive(batch, "batch", integer=True)
    check_positive(sigma_frac, "sigma_frac")
    h, w = _size(size)
    rows = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2)[:, None] / (sigma_frac * h)
    cols = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2)[None, :] / (sigma_frac * w)
    return torch.exp(-(rows**2 + cols**2) / 2).expand(batch, h, w).clone()


def tap_heatmaps(
    records: dict[str, Any],
    size: tuple[int, int],
    *,
    sigma: float = 3.0,
    align_corners: dict[str, bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Heat maps ``(B, H, W)`` of every recorded tap with a spatial meaning (``spatial``, ``warp``, ``location``).

    ``records`` maps names to :class:`visattn.viz.recorder.TapRecord`; ``align_corners`` gives, per
    tap name, the grid convention of warp and location taps (defaults: warp ``True``, location
    ``False``). A tap called several times contributes the mean of its per-call maps (for a location
    tap: every glimpse of the path). Taps of other kinds are left out.
    """
    conv = align_corners or {}
    out: dict[str, torch.Tensor] = {}
    for name, rec in records.items():
        if rec.kind == "spatial":
            maps = [spatial_heatmap(c, size) for c in rec.calls]
            out[name] = torch.stack(maps).mean(0)
        elif rec.kind == "warp":
            maps = [warp_heatmap(c, size, align_corners=conv.get(name, True)) for c in rec.calls]
            out[name] = torch.stack(maps).mean(0)
        elif rec.kind == "location":
            loc = rec.stacked() if len(rec.calls) > 1 else rec.value
            out[name] = location_heatmap(loc, size, sigma=sigma, align_corners=conv.get(name, False))
    return out


def _warp_conventions(model: nn.Module) -> dict[str, bool]:
    """``align_corners`` of each tap whose owner declares one (spatial transformers, glimpse modules)."""
    conv: dict[str, bool] = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "align_corners", None), bool):
            for sub, _ in m.named_modules():
                conv[f"{name}.{sub}" if name else sub] = m.align_corners
    return conv


def localization_scores(
    model: nn.Module,
    images: torch.Tensor,
    boxes: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    batch_size: int = 64,
    gradcam: bool = True,
    tolerance: int = 0,
    sigma: float = 3.0,
) -> list[dict[str, Any]]:
    """Score every spatial-attention tap of ``model``, its Grad-CAM and the centre prior on ``images``.

    Args:
        model: a classifier (put in ``eval()`` mode here, restored afterwards).
        images: ``(N, C, H, W)`` normalised model inputs.
        boxes: ``(N, 4)`` object boxes ``(x0, y0, x1, y1)``, half-open pixels of the input.
        labels: ``(N,)`` classes for Grad-CAM's target (default: the predicted class).
        batch_size: images per forward pass.
        gradcam: also score Grad-CAM of the model (``visattn.viz.gradcam``), when it has a
            ``Conv2d`` and its forward runs with autograd (else the row is left out).
        tolerance: pointing-game tolerance in pixels.
        sigma: Gaussian width (pixels) of location taps' heat maps.

    Returns:
        Rows ``{"method", "pointing", "mass", "n"}`` (scores in ``[0, 1]``): one per spatial tap
        (``"attention: <tap>"``), ``"attention: mean of taps"`` when there are several,
        ``"grad-cam"``, ``"centre prior"`` and ``"uniform"`` (the mass a flat map gets).
    """
    from visattn.viz.recorder import record_attention

    check_type(model, "model", nn.Module)
    check_tensor(images, "images", ndim=4)
    check_tensor(boxes, "boxes", ndim=2, floating=False, layout="(N, 4)")
    if boxes.shape != (images.shape[0], 4):
        raise ValueError(f"boxes must be (N, 4) with N = {images.shape[0]}, got shape {tuple(boxes.shape)}")
    if labels is not None:
        check_tensor(labels, "labels", ndim=1, floating=False, layout="(N,)")
    check_positive(batch_size, "batch_size", integer=True)
    size = (images.shape[-2], images.shape[-1])
    conv = _warp_conventions(model)
    hits: dict[str, list[torch.Tensor]] = {}
    mass: dict[str, list[torch.Tensor]] = {}

    def score(method: str, maps: torch.Tensor, bx: torch.Tensor) -> None:
        hits.setdefault(method, []).append(pointing_game(maps, bx, tolerance=tolerance).float())
        mass.setdefault(method, []).append(mass_in_box(maps, bx))

    was_training = model.training
    model.eval()
    try:
        for i in range(0, images.shape[0], batch_size):
            x, bx = images[i : i + batch_size], boxes[i : i + batch_size].cpu()
            _, recs = record_attention(model, x)
            maps = tap_heatmaps(recs, size, sigma=sigma, align_corners=conv)
            for name, m in maps.items():
                score(f"attention: {name}", m, bx)
            if len(maps) > 1:
                norm = [m / m.flatten(1).amax(1).clamp_min(1e-12)[:, None, None] for m in maps.values()]
                score("attention: mean of taps", torch.stack(norm).mean(0), bx)
            if gradcam:
                y = None if labels is None else labels[i : i + batch_size]
                try:
                    score("grad-cam", _gradcam(model, x, targets=y).cpu(), bx)
                except ValueError:  # no Conv2d, or a forward without autograd: no Grad-CAM row
                    gradcam = False
            score("centre prior", centre_prior(x.shape[0], size), bx)
            score("uniform", torch.ones(x.shape[0], *size), bx)
    finally:
        model.train(was_training)
    rows = []
    for method in hits:
        h = torch.cat(hits[method])
        rows.append(
            {
                "method": method,
                "pointing": float(h.mean()) if method != "uniform" else float("nan"),
                "mass": float(torch.cat(mass[method]).mean()),
                "n": int(h.numel()),
            }
        )
    return rows
