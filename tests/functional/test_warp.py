"""Behaviour of visattn.functional.warp: identity, known motions, TPS properties, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

from visattn.functional import (
    TRANSFORMS,
    affine_grid,
    attention_grid,
    base_grid,
    identity_params,
    make_grid,
    projective_grid,
    tps_control_points,
    tps_grid,
    warp,
)


def _theta(transform: str, b: int, grid_size=(3, 3), dtype=torch.float32) -> torch.Tensor:
    return identity_params(transform, grid_size, dtype=dtype).expand(b, -1).clone()


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("size", [(8, 8), (9, 13), (1, 5)])
def test_identity_returns_input(transform: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 2, *size)
    out = warp(x, _theta(transform, 3), transform=transform, grid_size=(3, 3))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_identity_align_corners_false() -> None:
    x = torch.randn(2, 3, 7, 10)
    out = warp(x, _theta("affine", 2), align_corners=False)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_identity_params_give_base_grid(transform: str) -> None:
    grid = make_grid(_theta(transform, 2), (5, 7), transform=transform, grid_size=(3, 3))
    expected = base_grid((5, 7))[:, :2].reshape(1, 5, 7, 2).expand(2, -1, -1, -1)
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)


def test_translation_by_one_pixel() -> None:
    x = torch.randn(2, 1, 6, 9)
    theta = torch.tensor([[1.0, 0.0, 2.0 / 8], [0.0, 1.0, -2.0 / 5]]).expand(2, 2, 3)
    out = warp(x, theta)  # output (i, j) reads input (i - 1, j + 1)
    torch.testing.assert_close(out[..., 1:, :-1], x[..., :-1, 1:], atol=1e-5, rtol=0)


def test_rotation_by_90_degrees_matches_rot90() -> None:
    x = torch.randn(2, 3, 7, 7)
    a = math.pi / 2
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]).expand(2, 2, 3)
    out = warp(x, theta)  # x_s = -y_t, y_s = x_t: out[i, j] = x[j, W - 1 - i], numpy's rot90
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotation_moves_a_bright_pixel() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 4] = 1.0  # top-right corner
    theta = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    out = warp(x, theta, padding_mode="zeros")
    assert out[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)  # rot90 moves top-right to top-left
    assert out.sum() == pytest.approx(1.0, abs=1e-5)


def test_downsample_identity_matches_bilinear_resize() -> None:
    x = torch.randn(2, 3, 12, 16)
    out = warp(x, _theta("affine", 2), out_size=(5, 7))
    ref = torch.nn.functional.interpolate(x, size=(5, 7), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_attention_and_projective_agree_with_affine() -> None:
    torch.manual_seed(1)
    s, tx, ty = 0.6, 0.2, -0.3
    att = attention_grid(torch.tensor([[s, tx, ty]]), (6, 5))
    aff = affine_grid(torch.tensor([[s, 0.0, tx, 0.0, s, ty]]), (6, 5))
    torch.testing.assert_close(att, aff)
    a = torch.randn(1, 2, 3)
    h = torch.cat([a, torch.tensor([[[0.0, 0.0, 1.0]]])], dim=1)
    torch.testing.assert_close(projective_grid(h, (6, 5)), affine_grid(a, (6, 5)), atol=1e-6, rtol=0)
    # scaling a homography does not change the map
    torch.testing.assert_close(projective_grid(3 * h, (6, 5)), affine_grid(a, (6, 5)), atol=1e-5, rtol=0)


def test_projective_perspective_division() -> None:
    h = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]]])
    grid = projective_grid(h, (1, 3))  # points x = -1, 0, 1 at y = 0; w = 1 + 0.5 x
    torch.testing.assert_close(grid[0, 0, :, 0], torch.tensor([-1 / 0.5, 0.0, 1 / 1.5]))


def test_tps_interpolates_control_points() -> None:
    torch.manual_seed(2)
    offsets = 0.2 * torch.randn(4, 9, 2)
    grid = tps_grid(offsets, (3, 3), grid_size=(3, 3))  # output grid == control lattice
    expected = tps_control_points((3, 3)) + offsets
    torch.testing.assert_close(grid.reshape(4, 9, 2), expected, atol=1e-5, rtol=0)


def test_tps_reproduces_affine_maps() -> None:
    a = torch.tensor([[0.9, -0.2, 0.1], [0.3, 1.1, -0.2]])
    ctrl = tps_control_points((4, 4))
    offsets = ctrl @ a[:, :2].T + a[:, 2] - ctrl
    grid = tps_grid(offsets[None], (7, 9), grid_size=(4, 4))
    torch.testing.assert_close(grid, affine_grid(a[None], (7, 9)), atol=1e-5, rtol=0)


def test_tps_zero_offsets_exact_identity() -> None:
    x = torch.randn(2, 1, 10, 10)
    out = warp(x, torch.zeros(2, 32), transform="tps")
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_padding_modes_outside_the_image() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4) + 1
    far = torch.tensor([[1.0, 0.0, 5.0, 0.0, 1.0, 0.0]])  # every output pixel reads x_s >= 4
    assert warp(x, far, padding_mode="zeros").abs().max() == 0
    border = warp(x, far, padding_mode="border")
    torch.testing.assert_close(border, x[..., -1:].expand_as(x))


def test_batch_has_no_cross_talk() -> None:
    torch.manual_seed(3)
    x = torch.randn(4, 2, 8, 8)
    theta = identity_params("affine").expand(4, -1) + 0.1 * torch.randn(4, 6)
    out = warp(x, theta)
    one = torch.cat([warp(x[i : i + 1], theta[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(out, one)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_gradcheck_float64(transform: str) -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    theta = _theta(transform, 2, grid_size=(2, 2), dtype=torch.float64)
    theta = (theta + 0.07 * torch.randn_like(theta)).requires_grad_(True)

    def fn(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return warp(x, theta, transform=transform, grid_size=(2, 2), out_size=(3, 4), padding_mode="zeros")

    assert torch.autograd.gradcheck(fn, (x, theta), eps=1e-6, atol=1e-5)


def test_bad_inputs_raise() -> None:
    x = torch.randn(2, 1, 6, 6)
    eye = _theta("affine", 2)
    with pytest.raises(ValueError, match="transform"):
        warp(x, eye, transform="similarity")
    with pytest.raises(ValueError, match="padding_mode"):
        warp(x, eye, padding_mode="wrap")
    with pytest.raises(ValueError, match="batch 2"):
        warp(x, eye[:1])
    with pytest.raises(ValueError, match=r"\(B, 2, 3\)"):
        warp(x, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="x must have 4 dims"):
        warp(x[0], eye)
    with pytest.raises(TypeError, match="theta"):
        warp(x, eye.long())
    with pytest.raises(ValueError, match="grid_size"):
        tps_grid(torch.zeros(1, 2), (4, 4), grid_size=(1, 1))
    with pytest.raises(ValueError, match="offsets"):
        tps_grid(torch.zeros(1, 30), (4, 4), grid_size=(4, 4))
    with pytest.raises(ValueError, match="out_size"):
        warp(x, eye, out_size=(0, 3))
