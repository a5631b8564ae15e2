"""compose_affine / affine_rotation / residual_rotation on hand-made maps and on the RTS generator's."""

from __future__ import annotations

import math

import pytest
import torch

from visattn.data.distorted import rotate_translate_scale
from visattn.functional import affine_rotation, compose_affine, residual_rotation, warp


def _affine(angle_deg: float, scale: tuple[float, float] = (1.0, 1.0), shear: float = 0.0, shift=(0.0, 0.0)):
    """``R(angle) @ S`` with ``S = [[sx, shear], [shear, sy]]`` (symmetric) and a translation, as (1, 2, 3)."""
    a = math.radians(angle_deg)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    sym = torch.tensor([[scale[0], shear], [shear, scale[1]]], dtype=torch.float64)
    return torch.cat([rot @ sym, torch.tensor(shift, dtype=torch.float64).view(2, 1)], 1).unsqueeze(0)


EYE = _affine(0.0)


def test_rotation_of_hand_made_maps():
    assert affine_rotation(_affine(30.0)).item() == pytest.approx(30.0)
    assert affine_rotation(_affine(-72.5, scale=(0.5, 0.5), shift=(0.3, -0.2))).item() == pytest.approx(-72.5)
    # anisotropic scale and shear around a rotation: the polar decomposition's rotation is still found
    assert affine_rotation(_affine(40.0, scale=(1.3, 0.6), shear=0.2)).item() == pytest.approx(40.0)
    assert affine_rotation(_affine(180.0)).item() == pytest.approx(180.0)
    mirror = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert math.isnan(affine_rotation(mirror).item())


def test_residual_rotation_undone_left_and_half():
    d = _affine(35.0, scale=(1.4, 1.4), shift=(0.1, -0.3))  # a distortion: digit turned by +35 degrees
    assert residual_rotation(EYE, d).item() == pytest.approx(35.0)  # nothing undone: its own angle
    undo = _affine(-35.0, scale=(0.7, 0.7), shift=(0.2, 0.1))  # undone exactly (any zoom and shift)
    assert residual_rotation(undo, d).item() == pytest.approx(0.0, abs=1e-9)
    assert residual_rotation(_affine(-20.0), d).item() == pytest.approx(15.0)  # 15 degrees left
    assert residual_rotation(_affine(-50.0), d).item() == pytest.approx(-15.0)  # over-turned


def test_compose_affine_is_applying_inner_then_outer():
    torch.manual_seed(0)
    a, b = torch.randn(4, 2, 3), torch.randn(4, 6)
    pts = torch.randn(4, 7, 2)
    hom = torch.cat([pts, torch.ones(4, 7, 1)], 2)
    inner = hom @ b.view(4, 2, 3).transpose(1, 2)
    inner_hom = torch.cat([inner, torch.ones(4, 7, 1)], 2)
    want = inner_hom @ a.transpose(1, 2)
    got = torch.cat([pts, torch.ones(4, 7, 1)], 2) @ compose_affine(a, b).transpose(1, 2)
    torch.testing.assert_close(got, want)


def test_composition_order_matches_warping_twice():
    """Warping by D, then the transformer warps that by T: the same as one warp by compose_affine(D, T)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 41), torch.linspace(-1, 1, 41), indexing="ij")
    img = torch.exp(-((xs - 0.2) ** 2 + 2 * (ys + 0.1) ** 2) * 3).view(1, 1, 41, 41)  # smooth, asymmetric
    d = _affine(25.0, scale=(0.8, 0.8), shift=(0.3, 0.0)).float()
    t = _affine(-10.0, scale=(1.0, 0.6), shift=(0.0, 0.2)).float()  # maps that do not commute
    twice = warp(warp(img, d, padding_mode="zeros"), t, padding_mode="zeros")
    once = warp(img, compose_affine(d, t), padding_mode="zeros")
    assert (twice - once)[..., 8:-8, 8:-8].abs().max() < 0.02  # bilinear resampled twice vs once
    other_order = warp(img, compose_affine(t, d), padding_mode="zeros")
    assert (twice - other_order)[..., 8:-8, 8:-8].abs().max() > 0.05


def test_rts_generator_exposes_its_maps():
    digits = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    digits[:, :, 6:22, 12:16] = 255
    out, p = rotate_translate_scale(digits, generator=torch.Generator().manual_seed(3))
    assert p["theta"].shape == (64, 2, 3)
    identity = EYE.float().expand(64, 2, 3)
    torch.testing.assert_close(residual_rotation(identity, p["theta"]), p["angle"], atol=1e-4, rtol=0)
    again = warp(digits.float(), p["theta"], out_size=42, padding_mode="zeros").round().clamp(0, 255)
    assert (again.to(torch.uint8).int() - out.int()).abs().max() <= 1  # theta is the map that made them


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="theta"):
        affine_rotation(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="outer"):
        compose_affine(torch.zeros(2, 4), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="same batch"):
        compose_affine(torch.zeros(2, 6), torch.zeros(3, 6))
