"""Attention canvases and the overlap of attention maps across them (Zhao et al., "Diversified Visual
Attention Networks for Fine-Grained Object Classification", arXiv:1606.08572).

A *canvas* is a square crop of the image at one location and scale, resized to the backbone's input
size; DVAN feeds a fixed sequence of ``T`` canvases, coarse to fine (the whole image, then crops of
decreasing size at several locations).

Convention (``../shared/STYLE.md`` rule 4): a canvas is a box ``(x, y, s)``: its centre ``(x, y)`` in
the image's normalised coordinates (``[-1, 1]``, ``x`` to the right, ``y`` down, ``align_corners=False``:
``-1`` and ``1`` are the outer edges of the border pixels) and its side ``s`` as a fraction of the
image's side (``s = 1`` is the whole image). The sampling grid maps canvas (output) coordinates ``v`` to
image (input) coordinates ``u = (x, y) + s v``. A box lies inside the image when
``|x| + s <= 1`` and ``|y| + s <= 1``.

Attention maps are distributions over the positions of each canvas's feature map. To compare the maps
of two canvases (the diversity term: do consecutive steps look at the same *image regions*?) they are
moved into the frame of the whole image by :func:`canvas_maps_to_image` and compared there by
:func:`attention_overlap`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visattn._validate import check_positive, check_range, check_tensor

__all__ = [
    "CANVAS_LOCATIONS",
    "attention_overlap",
    "canvas_boxes",
    "canvas_grid",
    "canvas_maps_to_image",
    "check_boxes",
    "diversity_loss",
    "extract_canvases",
]

# Where the crops of one scale go, in order: centre, then the four corners (x, y signs).
CANVAS_LOCATIONS = ((0.0, 0.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))


def canvas_boxes(steps: int, *, min_scale: float = 0.5) -> torch.Tensor:
    """The default canvas sequence: the whole image, then ``steps - 1`` crops of decreasing size.

    Step ``t >= 1`` has side ``s_t = min_scale ** (t / (steps - 1))`` (geometric from just below 1
    down to ``min_scale``) and its centre cycles through :data:`CANVAS_LOCATIONS` (centre, top-left,
    top-right, bottom-left, bottom-right), pushed as far as the box stays inside the image:
    ``(x, y) = (1 - s_t) * (sign_x, sign_y)``.

    Args:
        steps: ``T >= 1``, the number of canvases.
        min_scale: the side of the last (smallest) canvas, in ``(0, 1]``.

    Returns:
        ``(T, 3)`` boxes ``(x, y, s)``.

    >>> canvas_boxes(3, min_scale=0.25)
    tensor([[ 0.0000,  0.0000,  1.0000],
            [ 0.0000,  0.0000,  0.5000],
            [-0.7500, -0.7500,  0.2500]])
    """
    check_positive(steps, "steps", integer=True)
    check_range(min_scale, "min_scale", 0.0, 1.0)
    if min_scale <= 0:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale!r}")
    rows = [(0.0, 0.0, 1.0)]
    for t in range(1, steps):
        s = float(min_scale) ** (t / (steps - 1))
        sx, sy = CANVAS_LOCATIONS[(t - 1) % len(CANVAS_LOCATIONS)]
        rows.append((sx * (1 - s), sy * (1 - s), s))
    return torch.tensor(rows, dtype=torch.float32)


def check_boxes(boxes: torch.Tensor, name: str = "boxes", *, tol: float = 1e-6) -> torch.Tensor:
    """Check ``(T, 3)`` boxes ``(x, y, s)``: ``0 < s <= 1`` and every box inside the image.

    Raises:
        ValueError: naming ``name``, the offending step and box (a canvas larger than the image,
            or one reaching outside it).

    >>> check_boxes(torch.tensor([[0.0, 0.0, 1.0]])).shape
    torch.Size([1, 3])
    """
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a (T, 3) tensor of (x, y, scale), got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 3 or boxes.shape[0] < 1:
        raise ValueError(
            f"{name} must be (T, 3) rows of (x, y, scale) with T >= 1, got shape {tuple(boxes.shape)}"
        )
    for t, (x, y, s) in enumerate(boxes.tolist()):
        if not s > 0:
            raise ValueError(f"{name}[{t}] has scale {s!r}; a canvas's scale must be in (0, 1]")
        if s > 1 + tol:
            raise ValueError(
                f"{name}[{t}] has scale {s!r}: the canvas is larger than the image (scale must be <= 1)"
            )
        if abs(x) + s > 1 + tol or abs(y) + s > 1 + tol:
            raise ValueError(
                f"{name}[{t}] = (x={x:.3g}, y={y:.3g}, scale={s:.3g}) reaches outside the image; "
                "need |x| + scale <= 1 and |y| + scale <= 1"
            )
    return boxes


def canvas_grid(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Sampling grids of the canvases: ``(T, 3)`` boxes -> ``(T, size, size, 2)``, ``(x, y)`` in ``[-1, 1]``.

    ``grid[t, i, j] = (x_t, y_t) + s_t v_ij`` with ``v_ij`` the centre of canvas pixel ``(i, j)``
    (``align_corners=False``).

    >>> canvas_grid(torch.tensor([[0.0, 0.0, 1.0]]), 2)[0, 0, 0]
    tensor([-0.5000, -0.5000])
    """
    check_positive(size, "size", integer=True)
    v = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) * 2 + 1) / size - 1  # pixel centres
    vy, vx = torch.meshgrid(v, v, indexing="ij")
    base = torch.stack([vx, vy], dim=-1)  # (S, S, 2), (x, y)
    return boxes[:, None, None, :2] + boxes[:, None, None, 2:] * base


def extract_canvases(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop every canvas of every image and resize it: ``(B, C, H, W) -> (B, T, C, size, size)``.

    One bilinear ``grid_sample`` call for the whole batch (the ``T`` grids are stacked along the output
    height, so the images are not copied ``T`` times). No anti-aliasing: a canvas that shrinks the image
    by much more than 2x aliases; keep ``size`` near ``s * H``.

    >>> extract_canvases(torch.rand(2, 3, 64, 64), canvas_boxes(3), 32).shape
    torch.Size([2, 3, 3, 32, 32])
    """
    check_tensor(x, "x", ndim=4)
    check_positive(size, "size", integer=True)
    b, c = x.shape[:2]
    t = boxes.shape[0]
    grid = canvas_grid(boxes.to(x.device, x.dtype), size).reshape(1, t * size, size, 2).expand(b, -1, -1, -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(b, c, t, size, size).transpose(1, 2)


def canvas_maps_to_image(maps: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Move attention distributions from canvas frames into the image frame.

    Each canvas's map ``p_t (h, w)`` (a distribution over its feature positions) becomes a distribution
    over a ``size x size`` grid on the whole image: every image cell takes the density of the canvas cell
    its centre falls in (nearest neighbour; 0 outside the canvas), and the result is renormalised to sum
    to 1. For the whole-image canvas with ``size == h == w`` this is the map itself.

    Args:
        maps: ``(B, T, h, w)``, each ``maps[b, t]`` summing to 1.
        boxes: ``(T, 3)`` canvas boxes ``(x, y, s)``.
        size: side of the image-frame grid (a multiple of ``h / min s`` keeps it exact).

    Returns:
        ``(B, T, size, size)`` distributions.

    >>> p = torch.full((1, 1, 4, 4), 1 / 16)
    >>> bool(torch.allclose(canvas_maps_to_image(p, torch.tensor([[0.0, 0.0, 1.0]]), 4), p))
    True
    """
    check_tensor(maps, "maps", ndim=4, layout="(B, T, h, w)")
    check_positive(size, "size", integer=True)
    b, t, h, w = maps.shape
    if boxes.shape[0] != t:
        raise ValueError(f"boxes must have one row per map step ({t}), got shape {tuple(boxes.shape)}")
    boxes = boxes.to(maps.device, maps.dtype)
    u = canvas_grid(torch.tensor([[0.0, 0.0, 1.0]], dtype=maps.dtype, device=maps.device), size)[0]
    # image point u lies at canvas point v = (u - c_t) / s_t
    v = (u[None] - boxes[:, None, None, :2]) / boxes[:, None, None, 2:]  # (T, size, size, 2)
    dens = maps.transpose(0, 1).reshape(t, b, h, w)  # sample each step with its own grid
    out = F.grid_sample(
        dens.reshape(t, b, h, w), v, mode="nearest", padding_mode="zeros", align_corners=False
    )  # (T, B, size, size): the B maps of step t ride in the channel dim
    out = out.transpose(0, 1)
    return out / out.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(out.dtype).tiny)


def attention_overlap(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Histogram intersection ``sum_i min(p_i, q_i)`` of distributions over the last dim(s).

    In ``[0, 1]`` for distributions: 0 when ``p`` and ``q`` share no position, 1 exactly when they are
    equal (``sum_i min(p_i, q_i) <= sum_i p_i = 1``, with equality iff ``q >= p`` everywhere, so
    ``q = p``).

    Args:
        p, q: ``(..., N)`` distributions (same shape).

    Returns:
        ``(...)`` overlaps.

    >>> attention_overlap(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.0, 0.5, 0.5]))
    tensor(0.5000)
    """
    check_tensor(p, "p", nonempty=False, layout="(..., N)")
    check_tensor(q, "q", nonempty=False, layout="(..., N)")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return torch.minimum(p, q).sum(dim=-1)


def diversity_loss(maps: torch.Tensor) -> torch.Tensor:
    """DVAN's diversity penalty: the mean overlap of the attention maps of consecutive steps.

    ``L_div = 1 / (B (T - 1)) sum_b sum_{t=1}^{T-1} sum_i min(l_{t,i}, l_{t-1,i})`` (arXiv:1606.08572
    penalises attending to the same regions at successive steps; the intersection is our form of that
    overlap, the paper's exact form was not confirmed). ``L_div = 0`` when each step avoids the previous step's positions, ``1`` when
    all steps attend identically; ``T = 1`` gives 0.

    Args:
        maps: ``(B, T, N)`` or ``(B, T, h, w)`` distributions over ``N = h w`` positions, all steps in
            one frame (use :func:`canvas_maps_to_image` first for maps of different canvases).

    Returns:
        a scalar.

    >>> diversity_loss(torch.full((2, 3, 4), 0.25))
    tensor(1.)
    """
    check_tensor(maps, "maps", ndim=(3, 4), layout="(B, T, N) or (B, T, h, w)")
    flat = maps.flatten(2)
    if flat.shape[1] < 2:
        return flat.sum() * 0.0
    return attention_overlap(flat[:, 1:], flat[:, :-1]).mean()
