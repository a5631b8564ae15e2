"""DVAN (arXiv:1606.08572): canvases, attention distributions, the diversity term, training, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import visattn
from visattn.cli import main
from visattn.functional.canvas import (
    attention_overlap,
    canvas_boxes,
    canvas_maps_to_image,
    diversity_loss,
    extract_canvases,
)
from visattn.models.dvan import DVAN
from visattn.viz import AttentionRecorder


def _tiny_backbone() -> nn.Module:
    """Two convs, stride 4 overall: a (B, 16, 8, 8) map for 32x32 canvases at layer "3"."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),  # makes the tail unusable as features; DVAN must stop at "3"
    )


def _net(**kw) -> DVAN:
    torch.manual_seed(0)
    opts = {"steps": 3, "image_size": 48, "canvas_size": 32, "hidden_size": 32, "attention_hidden": 16}
    opts.update(kw)
    return DVAN(_tiny_backbone(), num_classes=5, feature_layer="3", **opts)


def _randomise_scores(net: DVAN) -> None:
    with torch.no_grad():  # at init the maps are uniform; make them depend on the input
        net.attention.score.weight.normal_(0, 1.0)


def test_shapes_and_averaged_prediction():
    net = _net().eval()
    out = net(torch.randn(4, 3, 48, 48))
    assert out["logits"].shape == (4, 5)
    assert out["step_logits"].shape == (4, 3, 5)
    assert out["attention"].shape == (4, 3, 8, 8)
    torch.testing.assert_close(out["logits"], out["step_logits"].mean(1))
    assert net.canvases(torch.randn(4, 3, 48, 48)).shape == (4, 3, 3, 32, 32)


def test_attention_maps_are_distributions_over_positions():
    net = _net().eval()
    _randomise_scores(net)
    maps = net(torch.randn(3, 3, 48, 48))["attention"]
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum((2, 3)), torch.ones(3, 3))
    assert maps.flatten(2).std(-1).min() > 0  # not uniform once the scores are not 0


def test_recorder_captures_one_map_per_step():
    net = _net(steps=4, min_scale=0.6).eval()
    _randomise_scores(net)
    x = torch.randn(2, 3, 48, 48)
    with AttentionRecorder(net) as rec:
        out = net(x)
    (name,) = rec.records
    assert rec.records[name].kind == "spatial"
    stacked = rec.records[name].stacked()
    assert stacked.shape == (2, 4, 1, 8, 8)
    torch.testing.assert_close(stacked[:, :, 0], out["attention"].detach())


def test_whole_canvas_is_the_image_and_a_corner_crop_is_its_quadrant():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 1.0], [-0.5, -0.5, 0.5], [0.5, 0.5, 0.5]])
    whole = extract_canvases(x, boxes[:1], 8)
    torch.testing.assert_close(whole[:, 0], x)
    quads = extract_canvases(x, boxes[1:], 4)
    torch.testing.assert_close(quads[:, 0], x[:, :, :4, :4])
    torch.testing.assert_close(quads[:, 1], x[:, :, 4:, 4:])


def test_default_canvases_shrink_and_stay_inside_the_image():
    b = canvas_boxes(6, min_scale=0.4)
    assert b[0].tolist() == [0.0, 0.0, 1.0]
    assert (b[1:, 2].diff() < 0).all() and b[-1, 2] == pytest.approx(0.4)
    assert ((b[:, :2].abs() + b[:, 2:]) <= 1 + 1e-6).all()
    assert len({tuple(r) for r in b[:, :2].tolist()}) > 2  # several locations


def test_maps_move_to_the_image_region_their_canvas_covers():
    boxes = torch.tensor([[0.0, 0.0, 1.0], [-0.5, -0.5, 0.5]])
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 1, 1] = 1.0  # whole image: bottom-right cell
    maps[0, 1, 0, 0] = 1.0  # top-left quarter canvas: its top-left cell
    img = canvas_maps_to_image(maps, boxes, 4)
    assert img[0, 0, 2:, 2:].sum() == pytest.approx(1.0)
    assert img[0, 1, 0, 0] == pytest.approx(1.0)
    torch.testing.assert_close(img.sum((2, 3)), torch.ones(1, 2))


def test_regulariser_is_zero_for_disjoint_and_maximal_for_identical_maps():
    n = 16
    p = torch.zeros(2, 3, n)
    p[:, 0, :5], p[:, 1, 5:10], p[:, 2, 10:] = 1 / 5, 1 / 5, 1 / 6  # consecutive steps disjoint
    assert diversity_loss(p).item() == 0.0
    same = torch.softmax(torch.randn(2, 1, n), -1).expand(2, 3, n)
    assert diversity_loss(same).item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    rand = torch.softmax(3 * torch.randn(64, 4, n, generator=g), -1)
    overlaps = attention_overlap(rand[:, 1:], rand[:, :-1])
    assert (overlaps < 1).all() and (overlaps > 0).all()  # strictly between the two extremes
    assert diversity_loss(torch.full((2, 1, n), 1 / n)).item() == 0.0  # one step: nothing to compare


def test_regulariser_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.5], [0.5, 0.5, 0.5]], dtype=torch.float64)

    def f(z):
        maps = torch.softmax(z.flatten(2), -1).view_as(z)
        return diversity_loss(canvas_maps_to_image(maps, boxes, 4))

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-5)
    p = torch.softmax(torch.randn(3, 4, 9, dtype=torch.float64, generator=g), -1).requires_grad_()
    assert torch.autograd.gradcheck(diversity_loss, (p,), eps=1e-6, atol=1e-5)


def test_extra_losses_follow_the_weights_and_the_diversity_term_can_be_minimised():
    x, y = torch.randn(4, 3, 48, 48), torch.tensor([0, 1, 2, 3])
    off = _net(diversity_weight=0.0, step_loss_weight=0.0)
    assert off.extra_losses(off(x), y) == {}
    net = _net(diversity_weight=2.0)
    _randomise_scores(net)
    out = net(x)
    losses = net.extra_losses(out, y)
    assert set(losses) == {"step_ce", "diversity"}
    assert losses["diversity"].item() == pytest.approx(2.0 * net.diversity(out["attention"]).item())
    # the penalty drives the attention itself: steps on it alone lower the overlap
    net.eval()
    opt = torch.optim.Adam(net.attention.parameters(), lr=0.05)
    before = net.diversity(net(x)["attention"]).item()
    for _ in range(30):
        loss = net.diversity(net(x)["attention"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert net.diversity(net(x)["attention"]).item() < 0.7 * before


def test_tiny_overfit_reaches_full_train_accuracy():
    g = torch.Generator().manual_seed(0)
    n, k = 8, 4
    y = torch.arange(n) % k
    x = 0.3 * torch.randn(n, 3, 48, 48, generator=g)
    for i in range(n):  # a bright square whose corner depends on the class
        r, c = divmod(int(y[i]), 2)
        x[i, int(y[i]) % 3, 8 + 24 * r : 16 + 24 * r, 8 + 24 * c : 16 + 24 * c] += 2.0
    net = _net(steps=2, dropout=0.0, diversity_weight=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        out = net(x)
        loss = nn.functional.cross_entropy(out["logits"], y) + sum(net.extra_losses(out, y).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x)["logits"].argmax(1) == y).float().mean().item()
    assert acc == 1.0


def test_trains_with_visattn_train(tmp_path, fmnist_small):
    out = tmp_path / "run"
    args = ["train", "--model", "dvan", "--data", "npz", "--data-dir", str(fmnist_small)]
    args += ["--epochs", "1", "--batch-size", "32", "--out", str(out), "--set", "progress=false"]
    args += ["--set", "limit_train=64", "--set", "eval_batch_size=100"]
    for kv in (
        "backbone=mnist_cnn",
        "feature_layer=stage2",
        "steps=2",
        "image_size=28",
        "hidden_size=32",
        "diversity_weight=0.5",
    ):
        args += ["--set", f"model_kwargs.{kv}"]
    assert main(args) == 0
    assert (out / "best.pt").is_file()
    import json

    hist = json.loads((out / "summary.json").read_text())["history"]
    assert "train_diversity" in hist[0] and "train_step_ce" in hist[0]


def test_frozen_backbone_tail_and_create_model_by_name():
    net = visattn.create_model(
        "dvan", num_classes=3, backbone="resnet20", feature_layer="layer3", image_size=32
    )
    assert set(net.frozen_backbone_params) == {"fc.weight", "fc.bias"}
    assert not net.backbone.fc.weight.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"steps": 0}, "steps"),
        ({"boxes": [[0.0, 0.0, 1.2]], "steps": 1}, "larger than the image"),
        ({"boxes": [[0.5, 0.0, 0.8]], "steps": 1}, "outside the image"),
        ({"boxes": [[0.0, 0.0, 1.0]], "steps": 2}, "boxes must have steps=2"),
        ({"min_scale": 1.5}, "min_scale"),
        ({"image_size": 8}, "image_size"),
        ({"image_size": 16, "min_scale": 0.1}, "min_scale"),
        ({"feature_layer": "4"}, "feature_layer '4' must output a spatial feature map"),
        ({"feature_layer": "head"}, "feature_layer: backbone Sequential has no submodule 'head'"),
    ],
)
def test_bad_options_raise_naming_the_option(kwargs, needle):
    opts = {"feature_layer": "3"} | kwargs
    with pytest.raises(ValueError, match=needle):
        DVAN(_tiny_backbone(), num_classes=5, **opts)


def test_bad_images_raise_naming_the_option():
    net = _net().eval()
    with pytest.raises(ValueError, match="square"):
        net(torch.randn(1, 3, 48, 40))
    with pytest.raises(ValueError, match="image_size=48"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(1, 1, 48, 48))
    with pytest.raises(ValueError, match="feature_layer is required"):
        visattn.create_model("dvan", backbone="resnet20")
