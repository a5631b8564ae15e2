"""Drawing DVAN's per-step maps on its canvases."""

from __future__ import annotations

import pytest
import torch

from visattn.models.dvan import DVAN
from visattn.viz.canvases import canvas_overlays, plot_canvases


def test_overlay_puts_the_heat_where_the_map_is():
    canv = torch.zeros(1, 2, 3, 16, 16)  # black canvases: the colour comes from the map alone
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0, 0, 0] = 1.0  # step 1 looks top-left
    maps[0, 1, 3, 3] = 1.0  # step 2 looks bottom-right
    out = canvas_overlays(canv, maps, alpha=1.0)
    assert out.shape == (1, 2, 3, 16, 16) and 0 <= out.min() and out.max() <= 1
    red = out[0, :, 0]  # jet: hot = red, cold = dark blue (no red)
    assert red[0, :4, :4].mean() > 0.5 and red[0, 12:, 12:].mean() == 0
    assert red[1, 12:, 12:].mean() > 0.5 and red[1, :4, :4].mean() == 0
    torch.testing.assert_close(canvas_overlays(torch.rand(1, 2, 3, 16, 16), maps, alpha=1.0), out)


def test_alpha_zero_shows_the_canvas_min_max_scaled():
    canv = torch.rand(2, 3, 3, 8, 8) * 4 - 2
    out = canvas_overlays(canv, torch.rand(2, 3, 2, 2), alpha=0.0)
    assert out[0, 1].min() == 0 and out[0, 1].max() == 1
    lo = canv[0, 1].min()
    torch.testing.assert_close(out[0, 1], (canv[0, 1] - lo) / (canv[0, 1].max() - lo))


def test_figure_from_a_dvan_forward_has_one_panel_per_image_and_step():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU())
    net = DVAN(backbone, num_classes=3, feature_layer="1", steps=3, image_size=32, hidden_size=8).eval()
    x = torch.randn(2, 3, 32, 32)
    fig = plot_canvases(
        net.canvases(x), net(x)["attention"], titles=["a", "b"], step_titles=["1", ".7", ".5"]
    )
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["1", ".7", ".5"]


def test_mismatched_inputs_raise_naming_them():
    with pytest.raises(ValueError, match="canvases"):
        canvas_overlays(torch.rand(2, 3, 3, 8, 8), torch.rand(2, 2, 2, 2))
    with pytest.raises(ValueError, match="maps"):
        canvas_overlays(torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 2))
    with pytest.raises(ValueError, match="step_titles"):
        plot_canvases(torch.rand(1, 3, 3, 8, 8), torch.rand(1, 3, 2, 2), step_titles=["a"])
