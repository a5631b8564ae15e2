"""EfficientNet-Lite0 as a registered model: the input conversion, the feature tap, retrofit, bad input."""

from __future__ import annotations

import pytest
import torch

import visattn
from visattn.models.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD


def _net(**kw):
    torch.manual_seed(0)
    return visattn.create_model(
        "efficientnet_lite0", num_classes=5, pretrained=False, image_size=64, **kw
    ).eval()


def test_imagenet_inputs_are_converted_to_the_weights_normalisation():
    net = _net()
    raw = _net(input_norm="raw")
    raw.load_state_dict(net.state_dict())
    x255 = torch.randint(0, 256, (2, 3, 64, 64)).float()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        a = net((x255 / 255 - mean) / std)
        b = raw((x255 - 127) / 128)
        c = raw.fc(raw.net((x255 - 127) / 128))  # the package's own forward (its _fc moved to fc)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b, c, atol=1e-5, rtol=1e-5)


def test_features_tap_and_retrofit_find_every_mbconv_block():
    net = _net()
    seen = []
    net.features.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        net(torch.randn(1, 3, 64, 64))
    assert seen == [torch.Size([1, 1280, 2, 2])]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        net = visattn.retrofit(net, "se", identity_init=True)
        after = net(x)
    assert len(net.visattn_inserted) == 16 and net.visattn_inserted[0].startswith("net._blocks.0.")
    torch.testing.assert_close(after, before)


def test_bad_options_raise_naming_them():
    with pytest.raises(ValueError, match="input_norm"):
        _net(input_norm="caffe")
    with pytest.raises(ValueError, match="in_chans"):
        visattn.create_model("efficientnet_lite0", in_chans=1, pretrained=False)


def test_st_cnn_runs_over_it():
    torch.manual_seed(0)
    kw = {"pretrained": False, "image_size": 64}
    net = visattn.create_model("st_cnn", num_classes=3, backbone="efficientnet_lite0", backbone_kwargs=kw)
    assert net.feature_dim == 1280
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_checkpoints_with_the_old_head_name_still_load():
    net = _net()
    old = {("net._fc." + k[3:] if k.startswith("fc.") else k): v for k, v in net.state_dict().items()}
    twin = _net()
    torch.nn.init.zeros_(twin.fc.weight)
    twin.load_state_dict(old)
    torch.testing.assert_close(twin.fc.weight, net.fc.weight)
