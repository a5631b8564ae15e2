"""Glimpse crops against a simple per-sample reference crop, at every scale, inside and at the border."""

from __future__ import annotations

import pytest
import torch

from visattn.functional import (
    extract_glimpses,
    extract_glimpses_direct,
    glimpse_boxes,
    glimpse_pyramid,
    glimpse_sides,
    location_to_pixels,
)


def reference_glimpse(image: torch.Tensor, px: int, py: int, side: int, size: int) -> torch.Tensor:
    """Integer crop of ``image (C, H, W)`` centred at pixel point ``(px, py)`` with zero padding, block-averaged."""
    c, h, w = image.shape
    pad = 2 * side + 8  # enough for centres a few pixels outside the image
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=image.dtype)
    padded[:, pad : pad + h, pad : pad + w] = image
    x0, y0 = px - side // 2 + pad, py - side // 2 + pad
    crop = padded[:, y0 : y0 + side, x0 : x0 + side]
    k = side // size
    return crop.reshape(c, size, k, size, k).mean(dim=(2, 4))


def to_location(px: float, py: float, h: int, w: int) -> list[float]:
    return [2.0 * px / w - 1.0, 2.0 * py / h - 1.0]


# pixel centres (px, py): well inside, at the corners and edges (patches partly outside), and outside
POINTS = [(20, 15), (0, 0), (36, 30), (36, 0), (0, 30), (7, 22), (40, 33)]


@pytest.mark.parametrize("size,num_scales,scale_factor", [(4, 3, 2), (6, 2, 3), (8, 1, 2)])
def test_crops_equal_the_reference_at_every_scale_inside_and_at_the_border(size, num_scales, scale_factor):
    h, w = 30, 36  # non-square
    g = torch.Generator().manual_seed(0)
    images = torch.rand(len(POINTS), 2, h, w, generator=g, dtype=torch.float64)
    locations = torch.tensor([to_location(px, py, h, w) for px, py in POINTS], dtype=torch.float64)
    out = extract_glimpses(images, locations, size=size, num_scales=num_scales, scale_factor=scale_factor)
    assert out.shape == (len(POINTS), num_scales, 2, size, size)
    sides = glimpse_sides(size, num_scales, scale_factor)
    for b, (px, py) in enumerate(POINTS):
        for k, side in enumerate(sides):
            want = reference_glimpse(images[b], px, py, side, size)
            torch.testing.assert_close(out[b, k], want, msg=f"point {(px, py)} scale {k}")


def test_a_half_pixel_shift_interpolates_linearly_between_neighbouring_crops():
    h, w = 20, 20
    images = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    locs = torch.tensor([to_location(x, 3, h, w) for x in (10, 10.5, 11)], dtype=torch.float64)
    out = extract_glimpses(images.expand(3, -1, -1, -1), locs, size=4, num_scales=2)
    torch.testing.assert_close(out[1], (out[0] + out[2]) / 2)


def test_padding_modes_differ_only_outside_the_image():
    images = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2)) + 1.0
    inside = torch.zeros(1, 2)
    corner = torch.tensor([[-1.0, -1.0]])
    z_in = extract_glimpses(images, inside, size=4, padding_mode="zeros")
    b_in = extract_glimpses(images, inside, size=4, padding_mode="border")
    torch.testing.assert_close(z_in, b_in)
    z = extract_glimpses(images, corner, size=4, padding_mode="zeros")
    b = extract_glimpses(images, corner, size=4, padding_mode="border")
    # zeros: 0 up to float32 rounding of the sampling coordinates; border: the image's edge values (>= 1)
    assert z[0, 0, 0, :2, :2].abs().max() < 1e-5 and (b[0, 0, 0, :2, :2] > 0.99).all()


def test_gradients_flow_to_images_and_locations_float64():
    images = torch.rand(2, 1, 10, 12, dtype=torch.float64, requires_grad=True)
    locs = torch.tensor([[0.13, -0.21], [-0.37, 0.44]], dtype=torch.float64, requires_grad=True)
    fn = lambda im, lo: extract_glimpses(im, lo, size=2, num_scales=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (images, locs))


def test_boxes_and_pixel_convention():
    locs = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(
        location_to_pixels(locs, (30, 40)), torch.tensor([[0, 0], [40, 30], [20, 15.0]])
    )
    boxes = glimpse_boxes(locs[2:], (30, 40), size=4, num_scales=3)
    torch.testing.assert_close(boxes[0, 2], torch.tensor([12.0, 7.0, 28.0, 23.0]))


def test_one_batched_call_matches_per_image_calls():
    images = torch.rand(5, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    locs = torch.rand(5, 2, generator=torch.Generator().manual_seed(4)) * 2 - 1
    batched = extract_glimpses(images, locs, size=6, num_scales=3)
    single = torch.cat(
        [extract_glimpses(images[i : i + 1], locs[i : i + 1], size=6, num_scales=3) for i in range(5)]
    )
    torch.testing.assert_close(batched, single)
    # and the scale-0 patch of a big glimpse is the same as a one-scale glimpse
    torch.testing.assert_close(batched[:, 0], extract_glimpses(images, locs, size=6)[:, 0])


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"locations": torch.zeros(2, 3)}, ValueError, "locations"),
        ({"locations": torch.zeros(3, 2)}, ValueError, r"\(2, 2\)"),
        ({"images": torch.zeros(2, 8, 8)}, ValueError, "images"),
        ({"images": torch.zeros(2, 1, 8, 8, dtype=torch.uint8)}, TypeError, "images"),
        ({"size": 0}, ValueError, "size"),
        ({"size": 2.5}, TypeError, "size"),
        ({"scale_factor": 0}, ValueError, "scale_factor"),
        ({"padding_mode": "wrap"}, ValueError, "padding_mode"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(kwargs, exc, match):
    args = {"images": torch.zeros(2, 1, 8, 8), "locations": torch.zeros(2, 2), "size": 4}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        extract_glimpses(**args)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("size,num_scales,scale_factor", [(4, 3, 2), (5, 2, 3), (3, 1, 2)])
def test_pyramid_path_equals_the_direct_computation_for_every_padding_mode(
    padding_mode, size, num_scales, scale_factor
):
    g = torch.Generator().manual_seed(3)
    images = torch.rand(6, 2, 21, 26, generator=g, dtype=torch.float64)
    # sub-pixel locations inside the image, at the corners, and outside [-1, 1] (the reflection
    # fallback and the zeros/border continuation beyond the stored padding)
    locations = torch.rand(6, 2, generator=g, dtype=torch.float64) * 2 - 1
    locations[0] = torch.tensor([-1.0, 1.0])
    locations[1] = torch.tensor([1.4, -1.7])
    opts = dict(size=size, num_scales=num_scales, scale_factor=scale_factor, padding_mode=padding_mode)
    torch.testing.assert_close(
        extract_glimpses(images, locations, **opts), extract_glimpses_direct(images, locations, **opts)
    )
    inside = locations.clamp(-1, 1)
    torch.testing.assert_close(
        extract_glimpses(images, inside, **opts), extract_glimpses_direct(images, inside, **opts)
    )


def test_a_shared_pyramid_gives_the_same_glimpses_and_the_same_gradients():
    images = torch.rand(3, 1, 20, 20, dtype=torch.float64, requires_grad=True)
    locs = [torch.rand(3, 2, dtype=torch.float64) * 2 - 1 for _ in range(3)]
    opts = dict(size=4, num_scales=3)
    pyr = glimpse_pyramid(images, **opts)
    shared = torch.stack([extract_glimpses(images, lo, pyramid=pyr, **opts) for lo in locs])
    alone = torch.stack([extract_glimpses_direct(images, lo, **opts) for lo in locs])
    torch.testing.assert_close(shared, alone)
    (g_shared,) = torch.autograd.grad(shared.square().sum(), images)
    (g_alone,) = torch.autograd.grad(alone.square().sum(), images)
    torch.testing.assert_close(g_shared, g_alone)


def test_pyramid_built_with_other_options_or_images_is_refused():
    images = torch.rand(2, 1, 20, 20)
    pyr = glimpse_pyramid(images, size=4, num_scales=2)
    with pytest.raises(ValueError, match="pyramid"):
        extract_glimpses(images, torch.zeros(2, 2), size=4, num_scales=3, pyramid=pyr)
    with pytest.raises(ValueError, match="pyramid"):
        extract_glimpses(torch.rand(2, 1, 24, 20), torch.zeros(2, 2), size=4, num_scales=2, pyramid=pyr)
    with pytest.raises(ValueError, match="padding_mode"):
        glimpse_pyramid(images, size=4, padding_mode="wrap")
