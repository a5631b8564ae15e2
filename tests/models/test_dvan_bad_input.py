"""DVAN's bad input over its real backbone (EfficientNet-Lite0): each error names the option (issue 19)."""

from __future__ import annotations

import pytest
import torch

import visattn
from visattn.train.build import check_model_fits

LITE = {"pretrained": False}


def _dvan(**kw):
    return visattn.create_model("dvan", num_classes=3, backbone_kwargs=LITE, **kw)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        (
            {"image_size": 64, "canvas_size": 16},
            ValueError,
            r"canvas_size=16: .*cannot take 16x16 canvases.*32x32",
        ),
        (
            {"image_size": 64, "feature_layer": "fc"},
            ValueError,
            r"feature_layer 'fc' must output a spatial feature map .* got \(1, 1\)",
        ),
        (
            {"image_size": 64, "feature_layer": "net._blocks.99"},
            ValueError,
            "feature_layer: backbone EfficientNetLite has no submodule",
        ),
        ({"image_size": 64, "steps": 0}, ValueError, "steps"),
        ({"image_size": 64, "steps": -2}, ValueError, "steps"),
        ({"image_size": 64, "steps": True}, TypeError, "steps must be int, got bool"),
        (
            {"image_size": 64, "steps": 1, "boxes": [[0.0, 0.0, 1.5]]},
            ValueError,
            r"boxes\[0\] .*larger than the image",
        ),
        ({"image_size": 12}, ValueError, "image_size must be >= 16"),
        (
            {"image_size": 32, "min_scale": 0.1},
            ValueError,
            "min_scale: the smallest canvas covers 3.2 pixels",
        ),
    ],
)
def test_bad_options_over_efficientnet_lite0_name_the_option(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        _dvan(**kwargs)


def test_bad_images_name_the_size_before_and_during_training():
    net = _dvan(image_size=64, canvas_size=32, steps=2, hidden_size=8).eval()
    with pytest.raises(ValueError, match=r"x must be square .*got shape \(1, 3, 64, 48\)"):
        net(torch.randn(1, 3, 64, 48))
    with pytest.raises(ValueError, match=r"x must be 64x64 \(image_size=64\)"):
        net(torch.randn(1, 3, 32, 32))
    # the engine, before training
    with pytest.raises(ValueError, match="needs images of at least 64x64, the data has 64x48"):
        check_model_fits(net, "dvan", 3, (64, 48))
    with pytest.raises(ValueError, match="needs 64x64 images, the data has 80x64"):
        check_model_fits(net, "dvan", 3, (80, 64))
    with pytest.raises(ValueError, match="needs images of at least 64x64, the data has 24x24"):
        check_model_fits(net, "dvan", 3, (24, 24))
