"""FilterGains: the per-filter gain module of dasNet (visattn.attention.feedback)."""

from __future__ import annotations

import pytest
import torch

from visattn.attention import AttentionTap, FilterGains, create_attention, get_attention_class


def test_identity_when_unset_and_with_unit_gains():
    x = torch.randn(3, 5, 4, 6)
    fg = FilterGains(5)
    assert torch.equal(fg(x), x)
    fg.set_gains(torch.ones(3, 5))
    assert torch.equal(fg(x), x)
    fg.set_gains(None)
    assert fg.gains is None and torch.equal(fg(x), x)


def test_scales_each_channel_by_its_gain():
    x = torch.randn(2, 3, 4, 5)
    g = torch.tensor([[0.0, 1.0, 2.0], [0.5, 3.0, -1.0]])
    fg = FilterGains(3)
    fg.set_gains(g)
    y = fg(x)
    for b in range(2):
        for c in range(3):
            assert torch.allclose(y[b, c], g[b, c] * x[b, c])


def test_static_weight_multiplies_external_gains():
    torch.manual_seed(0)
    fg = FilterGains(6, identity_init=False)
    w = fg.weight.detach()
    assert bool(((w >= 0.5) & (w <= 1.5)).all()) and not torch.equal(w, torch.ones(6))
    x = torch.randn(2, 6, 3, 3)
    assert torch.allclose(fg(x), x * w[None, :, None, None])
    g = torch.rand(2, 6)
    fg.set_gains(g)
    assert torch.allclose(fg(x), x * (g * w)[:, :, None, None])


@pytest.mark.parametrize("channels_last", [False, True])
def test_gains_for_r_copies_broadcast_the_batch(channels_last):
    x = torch.randn(2, 3, 4, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.rand(6, 3)  # 3 gain settings x 2 images, row r * 2 + b
    fg = FilterGains(3, identity_init=False)
    fg.set_gains(g)
    y = fg(x)
    assert y.shape == (6, 3, 4, 5)
    ref = x.repeat(3, 1, 1, 1) * (g * fg.weight.detach())[:, :, None, None]
    assert torch.allclose(y, ref)
    assert torch.equal(y[4:], fg(x.repeat(3, 1, 1, 1))[4:])  # the same numbers as copying x first
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_tap_emits_gains_b_by_c():
    fg = FilterGains(4)
    seen = []
    handle = fg.tap.register_forward_hook(lambda m, i, o: seen.append(o))
    g = torch.rand(2, 4)
    fg.set_gains(g)
    fg(torch.randn(2, 4, 3, 3))
    handle.remove()
    assert isinstance(fg.tap, AttentionTap) and fg.tap.kind == "gains"
    assert len(seen) == 1 and seen[0].shape == (2, 4) and torch.allclose(seen[0], g)


def test_registered_and_follows_contract():
    assert get_attention_class("filter_gains") is FilterGains
    assert FilterGains.supports_identity_init is True
    m = create_attention("filter_gains", 8, identity_init=True)
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(m(x), x)


def test_gradients_reach_weight_gains_and_input():
    fg = FilterGains(3, identity_init=False)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    g = torch.rand(2, 3, requires_grad=True)
    fg.set_gains(g)
    fg(x).square().sum().backward()
    assert x.grad is not None and g.grad is not None and fg.weight.grad is not None
    assert fg.weight.grad.abs().sum() > 0 and g.grad.abs().sum() > 0


def test_state_dict_round_trip():
    a, b = FilterGains(4, identity_init=False), FilterGains(4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(a(x), b(x))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="channels"):
        FilterGains(0)
    with pytest.raises(TypeError, match="identity_init"):
        FilterGains(3, identity_init=1)  # type: ignore[arg-type]
    fg = FilterGains(3)
    with pytest.raises(ValueError, match="gains"):
        fg.set_gains(torch.ones(2, 4))
    with pytest.raises(ValueError, match="gains"):
        fg.set_gains(torch.ones(3))
    with pytest.raises(ValueError, match="x"):
        fg(torch.randn(2, 4, 3, 3))
    fg.set_gains(torch.ones(2, 3))
    with pytest.raises(ValueError, match="batch of 2"):
        fg(torch.randn(5, 3, 3, 3))
    fg.set_gains(torch.ones(6, 3))
    with pytest.raises(ValueError, match="multiple"):
        fg(torch.randn(4, 3, 3, 3))
