"""Localisation scores on hand-made maps, heat maps of each tap kind, and the end-to-end scorer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visattn.attention._tap import AttentionTap
from visattn.viz.localization import (
    box_mask,
    centre_prior,
    localization_scores,
    location_heatmap,
    mass_in_box,
    pointing_game,
    spatial_heatmap,
    warp_heatmap,
)

BOX = torch.tensor([[4, 2, 9, 6]])  # x0, y0, x1, y1: columns 4..8, rows 2..5


def test_box_mask_is_half_open_and_tolerance_grows_it():
    m = box_mask(BOX, (10, 12))[0]
    assert m.sum() == 5 * 4
    assert m[2, 4] and m[5, 8] and not m[6, 8] and not m[5, 9] and not m[1, 4] and not m[2, 3]
    assert box_mask(BOX, (10, 12), tolerance=1)[0].sum() == 7 * 6


@pytest.mark.parametrize(
    ("row", "col", "hit"),
    [(3, 5, True), (2, 4, True), (5, 8, True), (6, 8, False), (0, 0, False), (3, 9, False)],
)
def test_pointing_game_peak_inside_scores_one_outside_zero(row, col, hit):
    m = torch.rand(1, 10, 12) * 0.5
    m[0, row, col] = 1.0
    assert pointing_game(m, BOX).tolist() == [hit]


def test_pointing_game_ties_point_at_their_centroid():
    flat = torch.ones(2, 10, 12)
    centre = torch.tensor([[5, 4, 7, 6], [0, 0, 3, 3]])  # holds pixel (row 5, col 6) / the top-left corner
    assert pointing_game(flat, centre).tolist() == [True, False]
    two = torch.zeros(1, 10, 12)
    two[0, 3, 4] = two[0, 3, 8] = 1.0  # two equal peaks: centroid (3, 6)
    assert pointing_game(two, torch.tensor([[6, 3, 7, 4]])).tolist() == [True]


def test_pointing_game_tolerance():
    m = torch.zeros(1, 10, 12)
    m[0, 6, 9] = 1.0  # one pixel diagonally outside the box
    assert pointing_game(m, BOX).tolist() == [False]
    assert pointing_game(m, BOX, tolerance=1).tolist() == [True]


def test_mass_in_box():
    inside = box_mask(BOX, (10, 12)).float()
    assert mass_in_box(inside, BOX).tolist() == [1.0]
    assert mass_in_box(1 - inside, BOX).tolist() == [0.0]
    flat = torch.ones(1, 10, 12)
    assert mass_in_box(flat, BOX).item() == pytest.approx(20 / 120)
    assert mass_in_box(torch.zeros(1, 10, 12), BOX).item() == pytest.approx(20 / 120)  # zero map = uniform
    half = inside + (1 - inside) * (20 / 100)  # 20 units inside, 20 outside
    assert mass_in_box(half, BOX).item() == pytest.approx(0.5)
    assert mass_in_box(-inside, BOX).item() == pytest.approx(20 / 120)  # negatives clamped -> all zero


def test_bad_shapes_raise_naming_the_argument():
    with pytest.raises(ValueError, match="boxes"):
        pointing_game(torch.rand(2, 10, 12), BOX)
    with pytest.raises(ValueError, match="maps"):
        mass_in_box(torch.rand(10, 12), BOX)
    with pytest.raises(TypeError, match="maps"):
        mass_in_box(torch.ones(1, 10, 12, dtype=torch.long), BOX)
    m = torch.rand(1, 10, 12)
    assert mass_in_box(m, BOX.float()).tolist() == mass_in_box(m, BOX).tolist()


def test_heatmaps_of_each_kind_peak_where_the_attention_is():
    att = torch.zeros(1, 3, 5, 6)
    att[0, :, 1, 4] = 1.0  # low-res cell (1, 4) -> upsampled centre ~ (1.5*4, 4.5*4)
    hm = spatial_heatmap(att, (20, 24))
    assert hm.shape == (1, 20, 24)
    r, c = divmod(int(hm[0].argmax()), 24)
    assert 4 <= r <= 7 and 16 <= c <= 19
    # a grid reading the top-left quarter (align_corners=True: -1 is pixel 0's centre)
    ys, xs = torch.meshgrid(torch.linspace(-1, -0.2, 5), torch.linspace(-1, -0.2, 5), indexing="ij")
    d = warp_heatmap(torch.stack([xs, ys], -1)[None], (11, 11))
    assert d.sum() == 25 and d[0, :5, :5].sum() == 25
    # points outside the input are dropped
    assert warp_heatmap(torch.full((1, 2, 2, 2), 3.0), (8, 8)).sum() == 0
    # glimpse locations: align_corners=False, (0, 0) is the exact centre, x is the column
    lm = location_heatmap(torch.tensor([[[-0.5, 0.5], [-0.5, 0.5]]]), (20, 20), sigma=1.0)
    assert divmod(int(lm[0].argmax()), 20) in {(14, 4), (15, 5), (14, 5), (15, 4)}
    p = centre_prior(3, (11, 13))
    assert p.shape == (3, 11, 13) and divmod(int(p[1].argmax()), 13) == (5, 6)


class BlobNet(nn.Module):
    """A 'mechanism' whose spatial mask is the input itself: it attends exactly to the bright blob."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.tap = AttentionTap("spatial")
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.tap(x.clamp_min(0))
        return self.head((self.conv(x) * m).mean((2, 3)))


def _blobs(n: int, size: int = 24, side: int = 5):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, size, size)
    x0 = torch.randint(0, size - side, (n,), generator=g)
    y0 = torch.randint(0, size - side, (n,), generator=g)
    for i in range(n):  # test data only
        x[i, 0, y0[i] : y0[i] + side, x0[i] : x0[i] + side] = 1.0
    return x, torch.stack([x0, y0, x0 + side, y0 + side], 1)


def test_localization_scores_end_to_end():
    torch.manual_seed(0)
    net = BlobNet().train()
    x, boxes = _blobs(12)
    rows = {r["method"]: r for r in localization_scores(net, x, boxes, batch_size=5)}
    assert net.training  # mode restored
    assert set(rows) == {"attention: tap", "grad-cam", "centre prior", "uniform"}
    assert rows["attention: tap"]["pointing"] == 1.0 and rows["attention: tap"]["mass"] > 0.95
    assert all(r["n"] == 12 for r in rows.values())
    assert rows["uniform"]["mass"] == pytest.approx(25 / 24**2)
    assert 0.0 <= rows["grad-cam"]["mass"] <= 1.0 and 0.0 <= rows["centre prior"]["pointing"] <= 1.0
    # boxes moved away from the blobs: the attention no longer points inside them
    far = (boxes + 12) % 19
    moved = {r["method"]: r for r in localization_scores(net, x, far, gradcam=False)}
    assert "grad-cam" not in moved and moved["attention: tap"]["pointing"] < 0.5
    with pytest.raises(ValueError, match="boxes"):
        localization_scores(net, x, boxes[:3])
