"""Affine maps as ``(B, 2, 3)`` matrices: composition, and the rotation a map applies.

Convention: that of ``visattn.functional.warp``: ``(x, y)`` coordinates in ``[-1, 1]`` with ``y``
pointing down (as displayed), ``theta`` maps **output to input** coordinates, ``[x_s, y_s] = A [x_t,
y_t, 1]``. On square images the two axes have the same scale, so angles in these coordinates are
angles in pixels. An angle is positive when the *content* of the output appears turned
counter-clockwise (as displayed) relative to the input, the sign of ``visattn.data.distorted``'s
``angle``: a map with linear part ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` shows its input turned by
``+a``.

Residual rotation of a spatial transformer (Jaderberg et al., NIPS 2015, Fig. 3): a distortion ``D``
maps canvas coordinates to the clean digit's, the transformer ``T`` maps its output's coordinates to
the canvas's; ``D o T`` maps the transformer's output to the clean digit, so its rotation is the turn
left in the "canonicalised" digit: 0 when ``T`` undoes the distortion's rotation exactly, the
distortion's own angle when ``T`` does not rotate at all.
"""

from __future__ import annotations

import math

import torch

from visattn._validate import check_tensor

__all__ = ["affine_rotation", "compose_affine", "residual_rotation"]


def _as_affine(theta: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(theta, name, ndim=(2, 3), layout="(B, 2, 3) or (B, 6)")
    if theta.shape[1:] not in ((2, 3), (6,)):
        raise ValueError(
            f"{name} must be (B, 2, 3) or (B, 6) affine matrices, got shape {tuple(theta.shape)}"
        )
    return theta.reshape(-1, 2, 3)


def compose_affine(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer o inner`` ``(B, 2, 3)``: the map ``p -> outer(inner(p))``; both ``(B, 2, 3)`` or ``(B, 6)``.

    >>> shift = torch.tensor([[1.0, 0.0, 0.5, 0.0, 1.0, 0.0]])
    >>> double = torch.tensor([[2.0, 0.0, 0.0, 0.0, 2.0, 0.0]])
    >>> compose_affine(double, shift).tolist()  # shift by 0.5, then double: x -> 2x + 1
    [[[2.0, 0.0, 1.0], [0.0, 2.0, 0.0]]]
    """
    a, b = _as_affine(outer, "outer"), _as_affine(inner, "inner")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"outer and inner must have the same batch, got {a.shape[0]} and {b.shape[0]}")
    linear = a[:, :, :2] @ b[:, :, :2]
    shift = a[:, :, :2] @ b[:, :, 2:] + a[:, :, 2:]
    return torch.cat([linear, shift], dim=2)


def affine_rotation(theta: torch.Tensor) -> torch.Tensor:
    """Rotation ``(B,)`` in degrees, ``(-180, 180]``, of the affine maps ``theta`` ``(B, 2, 3)`` or ``(B, 6)``.

    The angle of the rotation ``R`` closest to the linear part ``M`` (the polar decomposition
    ``M = R S``, ``S`` symmetric positive definite): ``atan2(m_10 - m_01, m_00 + m_11)``, exact for any
    scale, anisotropy or shear. A mirror (``det M <= 0``) has no such rotation: ``nan``.

    >>> a = math.radians(30)
    >>> rot = torch.tensor([[2 * math.cos(a), -2 * math.sin(a), 0.3, 2 * math.sin(a), 2 * math.cos(a), 0.0]])
    >>> affine_rotation(rot).round(decimals=4).tolist()
    [30.0]
    """
    m = _as_affine(theta, "theta")[:, :, :2]
    angle = torch.atan2(m[:, 1, 0] - m[:, 0, 1], m[:, 0, 0] + m[:, 1, 1]) * (180 / math.pi)
    return torch.where(torch.linalg.det(m) > 0, angle, torch.full_like(angle, float("nan")))


def residual_rotation(transformer: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
    """The rotation ``(B,)`` in degrees left in the transformer's output: ``affine_rotation(D o T)``.

    Args:
        transformer: ``T`` ``(B, 2, 3)`` or ``(B, 6)``, output-to-input map of the spatial transformer.
        distortion: ``D`` ``(B, 2, 3)`` or ``(B, 6)``, output-to-input map of the distortion that made
            the transformer's input (``visattn.data.distorted``'s ``params["theta"]``).

    >>> d = torch.tensor([[0.0, -1.0, 0.0, 1.0, 0.0, 0.0]])  # the digit turned by +90 degrees
    >>> eye = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    >>> undo = torch.tensor([[0.0, 1.0, 0.0, -1.0, 0.0, 0.0]])
    >>> residual_rotation(eye, d).tolist(), residual_rotation(undo, d).tolist()
    ([90.0], [0.0])
    """
    return affine_rotation(compose_affine(distortion, transformer))
