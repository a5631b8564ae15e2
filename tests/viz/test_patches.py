"""The patch-attention renderer of the two-level pipeline."""

from __future__ import annotations

import pytest
import torch

from visattn.viz.patches import PART_COLOURS, draw_boxes, plot_patch_attention, render_patch_panels


def test_draw_boxes_outlines_only_the_border() -> None:
    img = torch.zeros(3, 10, 12, dtype=torch.uint8)
    out = draw_boxes(img, torch.tensor([[2, 3, 8, 9]]), (255, 0, 0))
    red = (out[0] == 255) & (out[1] == 0)
    assert red[3, 2:8].all() and red[8, 2:8].all() and red[3:9, 2].all() and red[3:9, 7].all()
    assert not red[4:8, 3:7].any() and red.sum() == 2 * 6 + 2 * 4
    assert img.sum() == 0  # the input is not modified


def test_draw_boxes_clips_and_accepts_float_and_grey() -> None:
    out = draw_boxes(torch.full((1, 6, 6), 0.5), [[-5, -5, 100, 100]], (0, 0, 255), width=2)
    assert out.shape == (3, 6, 6) and out.dtype == torch.uint8
    assert out[:, 0, 0].tolist() == [0, 0, 255] and out[:, 3, 3].tolist() == [128, 128, 128]


def test_render_panels_colours_each_part() -> None:
    img = torch.zeros(3, 20, 20, dtype=torch.uint8)
    parts = [[0, 0, 10, 10], [10, 10, 20, 20]]
    out = render_patch_panels(img, [[0, 0, 5, 5]], [[1, 1, 6, 6]], parts, gap=2)
    assert out.shape == (3, 20, 64)
    third = out[:, :, 44:]
    assert third[:, 0, 0].tolist() == list(PART_COLOURS[0]) and third[:, 19, 19].tolist() == list(
        PART_COLOURS[1]
    )
    assert out[:, 0, 0].tolist() == [160, 160, 160] and out[:, 1, 23].tolist() == [0, 200, 0]


def test_figure_and_bad_input() -> None:
    fig = plot_patch_attention(
        torch.rand(3, 24, 24), torch.zeros(0, 4), [[0, 0, 5, 5]], [[1, 1, 9, 9]], title="t"
    )
    assert [ax.get_title() for ax in fig.axes] == ["0 proposals", "1 kept (object level)", "1 part detectors"]
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\).*got shape \(2, 3\)"):
        draw_boxes(torch.zeros(3, 4, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"image must have 3 dims \(3, H, W\)"):
        draw_boxes(torch.zeros(4, 4), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="colours must be one RGB triple or 2"):
        draw_boxes(torch.zeros(3, 4, 4), [[0, 0, 1, 1], [1, 1, 2, 2]], [(1, 2, 3)])
