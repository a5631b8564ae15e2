"""Sampling grids and the bilinear warp of Spatial Transformer Networks.

Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NIPS 2015, sec. 3.2-3.3.

A transformation ``T_theta`` maps every point ``G_i = (x_i^t, y_i^t)`` of a regular grid over the
*output* to the point ``(x_i^s, y_i^s) = T_theta(G_i)`` of the *input* that the output pixel samples
(eq. 1); a bilinear kernel then reads the input there (eq. 5, ``grid_sample``).

Convention (every function here):

* coordinates are ``(x, y)`` with ``x`` along the width and ``y`` along the height, both in
  ``[-1, 1]``: ``(-1, -1)`` is the top-left and ``(1, 1)`` the bottom-right of the image;
* ``theta`` maps **output to input** (target to source) coordinates, as in the paper: a grid
  value ``grid[b, i, j] = (x_s, y_s)`` says where output pixel ``(i, j)`` reads the input;
* ``align_corners=True`` (the default) puts ``-1`` and ``1`` on the *centres* of the corner
  pixels, so the identity transform samples exactly the input pixel centres at equal size and a
  warp is the identity up to float rounding; ``align_corners=False`` puts them on the pixel
  edges (``grid_sample``'s other convention). Grids and samplers must agree, so every function
  takes the flag.

Transforms and their parameters ``theta`` (flat ``(B, P)`` or the shapes below):

* ``"affine"``: ``(B, 2, 3)`` (``P = 6``), ``[x_s, y_s] = A [x_t, y_t, 1]`` (eq. 1);
* ``"attention"``: ``(B, 3)`` = ``(s, t_x, t_y)``, isotropic scale and translation (eq. 2);
* ``"projective"``: ``(B, 3, 3)`` (``P = 9``), ``[x', y', w] = H [x_t, y_t, 1]``, ``x_s = x'/w``;
* ``"tps"``: ``(B, K, 2)`` (``P = 2K``) offsets of the ``K = gh * gw`` control points of a regular
  ``grid_size`` lattice over ``[-1, 1]^2``: a thin-plate spline maps control point ``p_k`` of the
  output to ``p_k + offset_k`` of the input. Zero offsets are exactly the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from visattn._validate import check_choice, check_positive, check_tensor, check_type

__all__ = [
    "TRANSFORMS",
    "PADDING_MODES",
    "affine_grid",
    "attention_grid",
    "base_grid",
    "identity_params",
    "make_grid",
    "num_params",
    "projective_grid",
    "tps_control_points",
    "tps_grid",
    "warp",
]

TRANSFORMS = ("affine", "attention", "projective", "tps")
PADDING_MODES = ("border", "zeros", "reflection")
_EPS_W = 1e-6  # smallest |w| of a projective point, to keep x'/w finite


def _pair(value: Any, name: str) -> tuple[int, int]:
    """``n`` or ``(h, w)`` of positive ints -> ``(h, w)``."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    check_type(pair, name, (tuple, list))
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair (H, W), got {value!r}")
    for v in pair:
        check_positive(v, name, integer=True)
    return int(pair[0]), int(pair[1])


def base_grid(
    size: int | tuple[int, int],
    *,
    align_corners: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The regular output grid ``G`` in homogeneous coordinates, ``(H*W, 3)`` rows ``(x_t, y_t, 1)``.

    Rows run over ``y`` then ``x`` (row-major, like the image). A size-1 axis sits at 0.

    >>> base_grid((2, 3)).shape
    torch.Size([6, 3])
    >>> base_grid((1, 3))[:, 0].tolist()
    [-1.0, 0.0, 1.0]
    """
    h, w = _pair(size, "size")

    def axis(n: int) -> torch.Tensor:
        if n == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        if align_corners:
            return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
        return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1

    ys, xs = torch.meshgrid(axis(h), axis(w), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).reshape(-1)], dim=1)


def affine_grid(
    theta: torch.Tensor, size: int | tuple[int, int], *, align_corners: bool = True
) -> torch.Tensor:
    """Affine sampling grid, eq. 1: ``(x_s, y_s) = A_theta (x_t, y_t, 1)``.

    Args:
        theta: ``(B, 2, 3)`` or ``(B, 6)`` output-to-input affine matrices.
        size: output ``(H_out, W_out)``.

    Returns:
        ``(B, H_out, W_out, 2)`` grid of input coordinates ``(x_s, y_s)`` in ``[-1, 1]`` units.

    >>> eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> affine_grid(eye, (4, 5)).shape
    torch.Size([1, 4, 5, 2])
    """
    check_tensor(theta, "theta", ndim=(2, 3), layout="(B, 2, 3) or (B, 6)")
    theta = theta.reshape(theta.shape[0], -1)
    if theta.shape[1] != 6:
        raise ValueError(f"affine theta must be (B, 2, 3) or (B, 6), got shape {tuple(theta.shape)}")
    h, w = _pair(size, "size")
    g = base_grid((h, w), align_corners=align_corners, device=theta.device, dtype=theta.dtype)
    grid = torch.einsum("nk,bjk->bnj", g, theta.reshape(-1, 2, 3))
    return grid.reshape(theta.shape[0], h, w, 2)


def attention_grid(
    theta: torch.Tensor, size: int | tuple[int, int], *, align_corners: bool = True
) -> torch.Tensor:
    """Attention grid, eq. 2: ``(x_s, y_s) = s (x_t, y_t) + (t_x, t_y)``.

    Args:
        theta: ``(B, 3)`` rows ``(s, t_x, t_y)``; ``s < 1`` zooms in (crops a window of side ``s``).
        size: output ``(H_out, W_out)``.

    Returns:
        ``(B, H_out, W_out, 2)``.

    >>> attention_grid(torch.tensor([[0.5, 0.0, 0.0]]), (3, 3))[0, 0, 0].tolist()
    [-0.5, -0.5]
    """
    check_tensor(theta, "theta", ndim=2, layout="(B, 3)")
    if theta.shape[1] != 3:
        raise ValueError(f"attention theta must be (B, 3) = (s, t_x, t_y), got shape {tuple(theta.shape)}")
    s, tx, ty = theta.unbind(1)
    zero = torch.zeros_like(s)
    mat = torch.stack([s, zero, tx, zero, s, ty], dim=1)
    return affine_grid(mat, size, align_corners=align_corners)


def projective_grid(
    theta: torch.Tensor, size: int | tuple[int, int], *, align_corners: bool = True
) -> torch.Tensor:
    """Projective (homography) grid: ``(x', y', w) = H (x_t, y_t, 1)``, ``(x_s, y_s) = (x'/w, y'/w)``.

    ``|w|`` is kept at least ``1e-6`` (sign kept) so a degenerate homography gives far-away,
    finite coordinates instead of ``inf``/``nan``.

    Args:
        theta: ``(B, 3, 3)`` or ``(B, 9)`` output-to-input homographies.
        size: output ``(H_out, W_out)``.

    Returns:
        ``(B, H_out, W_out, 2)``.

    >>> projective_grid(torch.eye(3)[None], (2, 2))[0].reshape(-1, 2).tolist()
    [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]
    """
    check_tensor(theta, "theta", ndim=(2, 3), layout="(B, 3, 3) or (B, 9)")
    theta = theta.reshape(theta.shape[0], -1)
    if theta.shape[1] != 9:
        raise ValueError(f"projective theta must be (B, 3, 3) or (B, 9), got shape {tuple(theta.shape)}")
    h, w = _pair(size, "size")
    g = base_grid((h, w), align_corners=align_corners, device=theta.device, dtype=theta.dtype)
    pts = torch.einsum("nk,bjk->bnj", g, theta.reshape(-1, 3, 3))
    den = pts[..., 2:]
    sign = torch.where(den < 0, -1.0, 1.0).to(den.dtype)
    den = sign * den.abs().clamp_min(_EPS_W)
    return (pts[..., :2] / den).reshape(theta.shape[0], h, w, 2)


def tps_control_points(
    grid_size: int | tuple[int, int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ``K = gh * gw`` control points ``(K, 2)`` of a regular lattice over ``[-1, 1]^2``, ``(x, y)``.

    >>> tps_control_points((2, 2)).tolist()
    [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]
    """
    gh, gw = _pair(grid_size, "grid_size")
    if gh < 2 or gw < 2:
        raise ValueError(f"grid_size must be at least (2, 2) for a thin-plate spline, got {(gh, gw)}")
    return base_grid((gh, gw), align_corners=True, device=device, dtype=dtype)[:, :2]


def _tps_kernel(r2: torch.Tensor) -> torch.Tensor:
    """Thin-plate radial basis ``U(r) = r^2 log r^2`` from squared distances, with ``U(0) = 0``."""
    return r2 * torch.log(torch.where(r2 > 0, r2, torch.ones_like(r2)))


def tps_grid(
    offsets: torch.Tensor,
    size: int | tuple[int, int],
    *,
    grid_size: int | tuple[int, int] = (4, 4),
    align_corners: bool = True,
) -> torch.Tensor:
    """Thin-plate-spline grid: control point ``p_k`` of the output samples ``p_k + offset_k`` of the input.

    The spline ``f(g) = sum_k w_k U(|g - p_k|) + a_0 + a_x x + a_y y`` interpolates the offsets (it
    is linear in them), and the grid is ``g + f(g)``: zero offsets give exactly the base grid. The
    ``(K + 3)`` system ``L [w; a] = [offsets; 0]`` is solved for the whole batch in one
    ``torch.linalg.solve`` (``L`` depends only on the control points).

    Args:
        offsets: ``(B, K, 2)`` or ``(B, 2K)`` input-space displacements ``(dx, dy)`` of the
            control points, ``K = gh * gw`` in row-major order (see ``tps_control_points``).
        size: output ``(H_out, W_out)``.
        grid_size: ``(gh, gw)`` control lattice, at least ``(2, 2)``.

    Returns:
        ``(B, H_out, W_out, 2)``.

    >>> tps_grid(torch.zeros(2, 16, 2), (5, 6)).shape
    torch.Size([2, 5, 6, 2])
    """
    check_tensor(offsets, "offsets", ndim=(2, 3), layout="(B, K, 2) or (B, 2K)")
    ctrl = tps_control_points(grid_size, device=offsets.device, dtype=offsets.dtype)
    k = ctrl.shape[0]
    b = offsets.shape[0]
    if offsets[0].numel() != 2 * k:
        raise ValueError(
            f"offsets must be (B, {k}, 2) or (B, {2 * k}) for"
            f" grid_size={_pair(grid_size, 'grid_size')}, got shape {tuple(offsets.shape)}"
        )
    offsets = offsets.reshape(b, k, 2)
    h, w = _pair(size, "size")
    ones = torch.ones(k, 1, device=ctrl.device, dtype=ctrl.dtype)
    p = torch.cat([ones, ctrl], dim=1)  # (K, 3)
    lhs = torch.zeros(k + 3, k + 3, device=ctrl.device, dtype=ctrl.dtype)
    lhs[:k, :k] = _tps_kernel(torch.cdist(ctrl, ctrl).square())
    lhs[:k, k:] = p
    lhs[k:, :k] = p.T
    rhs = torch.cat([offsets, offsets.new_zeros(b, 3, 2)], dim=1)  # (B, K + 3, 2)
    coef = torch.linalg.solve(lhs, rhs)  # (B, K + 3, 2)
    g = base_grid((h, w), align_corners=align_corners, device=ctrl.device, dtype=ctrl.dtype)
    phi = torch.cat([_tps_kernel(torch.cdist(g[:, :2], ctrl).square()), g[:, 2:], g[:, :2]], dim=1)
    disp = torch.einsum("nm,bmj->bnj", phi, coef)  # (B, H*W, 2)
    return (g[:, :2] + disp).reshape(b, h, w, 2)


def num_params(transform: str, grid_size: int | tuple[int, int] = (4, 4)) -> int:
    """Number of flat parameters ``P`` of ``transform``.

    >>> [num_params(t) for t in TRANSFORMS]
    [6, 3, 9, 32]
    """
    check_choice(transform, "transform", TRANSFORMS)
    if transform == "tps":
        gh, gw = _pair(grid_size, "grid_size")
        return 2 * gh * gw
    return {"affine": 6, "attention": 3, "projective": 9}[transform]


def identity_params(
    transform: str,
    grid_size: int | tuple[int, int] = (4, 4),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Flat parameters ``(P,)`` of the identity transform (the bias of a localisation net's last layer).

    >>> identity_params("attention").tolist()
    [1.0, 0.0, 0.0]
    """
    n = num_params(transform, grid_size)
    if transform == "affine":
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], device=device, dtype=dtype)
    if transform == "attention":
        return torch.tensor([1.0, 0.0, 0.0], device=device, dtype=dtype)
    if transform == "projective":
        return torch.eye(3, device=device, dtype=dtype).reshape(-1)
    return torch.zeros(n, device=device, dtype=dtype)


def make_grid(
    theta: torch.Tensor,
    size: int | tuple[int, int],
    *,
    transform: str = "affine",
    grid_size: int | tuple[int, int] = (4, 4),
    align_corners: bool = True,
) -> torch.Tensor:
    """Sampling grid ``(B, H_out, W_out, 2)`` of any of ``TRANSFORMS`` from its parameters ``theta``.

    >>> make_grid(torch.zeros(1, 18), 4, transform="tps", grid_size=3).shape
    torch.Size([1, 4, 4, 2])
    """
    check_choice(transform, "transform", TRANSFORMS)
    if transform == "affine":
        return affine_grid(theta, size, align_corners=align_corners)
    if transform == "attention":
        return attention_grid(theta, size, align_corners=align_corners)
    if transform == "projective":
        return projective_grid(theta, size, align_corners=align_corners)
    return tps_grid(theta, size, grid_size=grid_size, align_corners=align_corners)


def warp(
    x: torch.Tensor,
    theta: torch.Tensor,
    *,
    transform: str = "affine",
    out_size: int | tuple[int, int] | None = None,
    grid_size: int | tuple[int, int] = (4, 4),
    padding_mode: str = "border",
    align_corners: bool = True,
) -> torch.Tensor:
    """Warp ``x`` by ``T_theta`` with a bilinear sampler (eqs. 1 and 5 of the paper).

    ``V[b, :, i, j] = sum_{n, m} U[b, :, n, m] max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|)`` with
    ``(x_s, y_s) = T_theta(G_ij)`` in pixel units. See the module docstring for the coordinate
    convention (``(x, y)``, ``[-1, 1]``, output-to-input, ``align_corners``).

    Args:
        x: ``(B, C, H, W)`` input.
        theta: the transform's parameters for each of the ``B`` images (shapes in the module doc).
        transform: one of ``"affine"``, ``"attention"``, ``"projective"``, ``"tps"``.
        out_size: output ``(H_out, W_out)``; default the input's ``(H, W)``.
        grid_size: TPS control lattice ``(gh, gw)``.
        padding_mode: what is read outside the input: ``"border"`` (nearest edge value),
            ``"zeros"`` or ``"reflection"``.
        align_corners: see the convention above.

    Returns:
        ``(B, C, H_out, W_out)``.

    >>> x = torch.rand(2, 3, 8, 8)
    >>> eye = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).expand(2, 6)
    >>> bool(torch.allclose(warp(x, eye), x, atol=1e-5))
    True
    >>> warp(x, eye, out_size=(4, 6)).shape
    torch.Size([2, 3, 4, 6])
    """
    check_tensor(x, "x", ndim=4)
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    check_tensor(theta, "theta", ndim=(2, 3), layout="(B, ...) parameters")
    if theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"theta must have one row per image: x has batch {x.shape[0]},"
            f" theta has shape {tuple(theta.shape)}"
        )
    size = (x.shape[-2], x.shape[-1]) if out_size is None else _pair(out_size, "out_size")
    grid = make_grid(theta, size, transform=transform, grid_size=grid_size, align_corners=align_corners)
    return F.grid_sample(
        x, grid.to(x.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
    )
