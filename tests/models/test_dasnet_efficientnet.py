"""dasNet steering a fine-tuned EfficientNet-Lite0 (the leaderboard's dasNet row), on a tiny input size."""

from __future__ import annotations

import pytest
import torch

import visattn
from visattn.models.efficientnet_lite import mbconv_filters

K = 3


def _plain(seed: int = 0):
    torch.manual_seed(seed)
    net = visattn.create_model("efficientnet_lite0", num_classes=K, pretrained=False, image_size=32)
    with torch.no_grad():  # moved BatchNorm statistics: a "fine-tuned" network, not a fresh one
        for _ in range(2):
            net.train()(torch.randn(8, 3, 32, 32))
    return net.eval()


def test_dasnet_over_the_fine_tuned_plain_checkpoint(tmp_path):
    plain = _plain()
    torch.save({"model": plain.state_dict(), "epoch": 3}, tmp_path / "best.pt")
    steer = mbconv_filters(plain, [14, 15])
    assert steer == ["net._blocks.14._bn2", "net._blocks.15._bn2"]
    net = visattn.create_model(
        "dasnet",
        base=tmp_path / "best.pt",
        base_model="efficientnet_lite0",
        num_classes=K,
        in_chans=3,
        base_kwargs={"pretrained": False, "image_size": 32},
        steer=",".join(steer),
        passes=2,
        population=4,
        sigma0=0.1,
    )
    assert net.num_filters == 192 + 320 and net.policy_dim == 512 * (512 + K) + 512
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, K, (6,), generator=g)
    with torch.no_grad():
        ref = plain(x)
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)  # theta = 0: every gain is 1
    before = {k: v.clone() for k, v in net.base.state_dict().items()}
    stats = net.train_step(x, y)
    assert stats["loss"] > 0 and net.search.mu.abs().sum() > 0  # the policy moved ...
    assert all(torch.equal(v, net.base.state_dict()[k]) for k, v in before.items())  # ... the base did not
    passes = net.forward_passes(x)
    assert passes["gains"].shape == (2, 6, 512) and not torch.equal(passes["gains"][1], passes["gains"][0])
    assert not torch.allclose(net(x), ref)  # the steered last pass differs from the base


def test_mbconv_filters_bad_input_names_the_option():
    plain = _plain()
    assert mbconv_filters(plain, -1, "depthwise") == ["net._blocks.15._bn1"]
    assert mbconv_filters(plain.net, [3], "expand") == ["_blocks.3._bn0"]
    with pytest.raises(ValueError, match="blocks: 16"):
        mbconv_filters(plain, [16])
    with pytest.raises(ValueError, match="blocks: block 0 has no 'expand'"):
        mbconv_filters(plain, [0], "expand")
    with pytest.raises(ValueError, match="part"):
        mbconv_filters(plain, [1], "head")
    with pytest.raises(ValueError, match="blocks must name distinct"):
        mbconv_filters(plain, [15, -1])
    with pytest.raises(ValueError, match="model: .*MBConv"):
        mbconv_filters(visattn.create_model("mnist_cnn"), [0])
