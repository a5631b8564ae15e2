"""ECA and CBAM from timm's attention factory: timm's modules, identity at insertion into a pretrained-style
EfficientNet-Lite0, gradients at step 0, taps, bad options."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import create_attn

import visattn
from visattn.attention.cbam import ConvBlockAttention
from visattn.attention.eca import EfficientChannelAttention, eca_kernel_size
from visattn.viz.recorder import AttentionRecorder


def _trained_like_lite0():
    """EfficientNet-Lite0 (random weights) whose BatchNorm statistics were estimated from data, so its
    output depends on its input (with the default init and fresh statistics the signal dies out by the
    head): not a fresh network."""
    torch.manual_seed(0)
    net = visattn.create_model("efficientnet_lite0", num_classes=5, pretrained=False, image_size=64)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the statistics of the batches below
            m.reset_running_stats()
    with torch.no_grad():
        for _ in range(2):
            net.train()(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    return net.eval()


@pytest.mark.parametrize("name", ["eca", "cbam"])
def test_retrofit_into_efficientnet_lite0_keeps_its_outputs(name):
    net = _trained_like_lite0()
    before = copy.deepcopy(net)
    x = torch.randn(3, 3, 64, 64)
    net = visattn.retrofit(net, name, identity_init=True)
    assert len(net.visattn_inserted) == 16
    assert net.visattn_inserted[0] == "net._blocks.0._project_conv.attn"
    with torch.no_grad():
        ref, out = before(x), net(x)
    assert (out - ref).abs().max() <= 1e-5
    assert (ref - ref.mean(0)).abs().max() > 0.05  # a real output that depends on the input


@pytest.mark.parametrize("name", ["eca", "cbam"])
def test_the_zeroed_layers_get_gradients_at_the_first_step(name):
    m = visattn.create_attention(name, 24, identity_init=True)
    x = torch.randn(4, 24, 6, 6)
    (m(x) * torch.randn_like(x)).sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    first = "module.conv.weight" if name == "eca" else "module.channel.fc2.weight"
    assert grads[first].abs().sum() > 0
    if name == "cbam":
        assert grads["module.spatial.conv.bn.weight"].abs().sum() > 0


def test_without_identity_init_it_is_timms_module():
    torch.manual_seed(0)
    x = torch.randn(2, 40, 5, 7)
    ours = EfficientChannelAttention(40)
    theirs = create_attn("eca", 40)
    assert ours.kernel_size == theirs.conv.kernel_size[0] == eca_kernel_size(40)
    theirs.load_state_dict(ours.module.state_dict())
    torch.testing.assert_close(ours(x), theirs(x))
    ours_c = ConvBlockAttention(40, reduction=8).eval()
    theirs_c = create_attn("cbam", 40, rd_ratio=1 / 8).eval()
    theirs_c.load_state_dict(ours_c.module.state_dict())
    torch.testing.assert_close(ours_c(x), theirs_c(x))
    # timm's own module is not the identity at a zero init: its sigmoid gate halves x
    torch.nn.init.zeros_(theirs.conv.weight)
    torch.testing.assert_close(theirs(x), 0.5 * x)


def test_gates_are_recorded_with_their_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 5, 6)
    for module, want in [
        (EfficientChannelAttention(16), {"module.gate.tap": (2, 16)}),
        (
            ConvBlockAttention(16, reduction=4),
            {"module.channel.gate.tap": (2, 16), "module.spatial.gate.tap": (2, 1, 5, 6)},
        ),
    ]:
        with AttentionRecorder(module) as rec:
            module(x)
        assert {n: tuple(r.calls[0].shape) for n, r in rec.records.items()} == want
        for r in rec.records.values():
            assert ((r.calls[0] > 0) & (r.calls[0] < 1)).all()  # timm's sigmoid gates


def test_bad_options_and_inputs_name_the_option():
    with pytest.raises(ValueError, match="kernel_size"):
        EfficientChannelAttention(16, kernel_size=4)
    with pytest.raises(ValueError, match="spatial_kernel_size"):
        ConvBlockAttention(16, spatial_kernel_size=6)
    with pytest.raises(ValueError, match="reduction"):
        ConvBlockAttention(16, reduction=0)
    with pytest.raises(ValueError, match="x"):
        EfficientChannelAttention(16)(torch.randn(2, 15, 4, 4))
    with pytest.raises(ValueError, match=r"x: .*BatchNorm.*\(1, 16, 1, 1\)"):
        ConvBlockAttention(16).train()(torch.randn(1, 16, 1, 1))


def test_without_timm_the_error_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm.layers", None)  # `from timm.layers import ...` now fails
    assert "eca" in visattn.list_attention()  # listing needs no timm
    with pytest.raises(ImportError, match=r"pip install 'visattn\[timm\]'"):
        visattn.create_attention("cbam", 8)
