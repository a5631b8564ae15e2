"""ResidualAttentionModule (Wang et al., CVPR 2017): shapes, gradients, mask ranges, ARL vs naive,
identity at insertion, pooling depth vs input size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visattn
from visattn.attention import ResidualAttentionModule
from visattn.attention.residual import mask_activation, skip_levels_for


def _record_mask(module: ResidualAttentionModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the module; return (output, the mask M that went through its tap)."""
    seen = {}
    h = module.tap.register_forward_hook(lambda _m, _i, out: seen.setdefault("m", out.detach()))
    try:
        y = module(x)
    finally:
        h.remove()
    return y, seen["m"]


@pytest.mark.parametrize("skip_levels", [0, 1, 2])
@pytest.mark.parametrize("hw", [(8, 8), (9, 13), (17, 10), (32, 24)])
def test_output_has_input_shape_for_every_depth_and_size(skip_levels, hw):
    torch.manual_seed(0)
    m = ResidualAttentionModule(8, skip_levels=skip_levels)
    x = torch.randn(2, 8, *hw)
    y, mask = _record_mask(m, x)
    assert y.shape == x.shape
    assert mask.shape == x.shape


@pytest.mark.parametrize("mask", ["mixed", "channel", "spatial"])
@pytest.mark.parametrize("residual", [True, False])
def test_every_parameter_and_the_input_get_a_gradient(mask, residual):
    torch.manual_seed(0)
    m = ResidualAttentionModule(8, skip_levels=2, mask=mask, residual=residual).train()
    x = torch.randn(2, 8, 11, 14, requires_grad=True)
    m(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"


def test_mask_ranges_follow_the_documented_activation():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 12, 10) * 3
    for mask in ("mixed", "channel", "spatial"):
        m = ResidualAttentionModule(16, mask=mask).eval()
        _, mk = _record_mask(m, x)
        if mask == "mixed":
            assert mk.min() > 0 and mk.max() < 1
        elif mask == "channel":
            # unit L2 norm over channels at every position, so every element in [-1, 1], signs mixed
            torch.testing.assert_close(mk.norm(dim=1), torch.ones(3, 12, 10))
            assert mk.min() < 0 < mk.max() and mk.abs().max() <= 1 + 1e-6
        else:
            assert mk.min() > 0 and mk.max() < 1
            z = torch.logit(mk.double())  # the standardised map: mean 0, variance 1 within each channel
            torch.testing.assert_close(
                z.mean(dim=(2, 3)), torch.zeros(3, 16, dtype=torch.double), atol=1e-4, rtol=0
            )
            torch.testing.assert_close(
                z.var(dim=(2, 3), correction=0), torch.ones(3, 16, dtype=torch.double), atol=1e-3, rtol=0
            )


def test_spatial_activation_matches_the_formula():
    z = torch.randn(2, 3, 5, 4, dtype=torch.double)
    mean = z.mean(dim=(2, 3), keepdim=True)
    std = (z.var(dim=(2, 3), keepdim=True, correction=0) + 1e-5).sqrt()
    torch.testing.assert_close(mask_activation(z, "spatial"), torch.sigmoid((z - mean) / std))
    torch.testing.assert_close(mask_activation(z, "mixed"), torch.sigmoid(z))
    torch.testing.assert_close(mask_activation(z, "channel"), z / z.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("residual", [True, False])
def test_output_is_the_documented_composition_of_trunk_and_mask(residual):
    torch.manual_seed(0)
    m = ResidualAttentionModule(8, p=1, t=2, skip_levels=1, residual=residual).eval()
    x = torch.randn(2, 8, 10, 12)
    with torch.no_grad():
        y, mk = _record_mask(m, x)
        feats = m.pre(x)
        t = m.trunk(feats)
        torch.testing.assert_close(m.soft_mask(feats), mk)
        expected = m.post((1 + mk) * t if residual else mk * t)
    torch.testing.assert_close(y, expected)
    # the two forms really differ (the mask is not trivially 0 or 1)
    other = ResidualAttentionModule(8, p=1, t=2, skip_levels=1, residual=not residual).eval()
    other.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert not torch.allclose(other(x), y)


@pytest.mark.parametrize("mask", ["mixed", "channel", "spatial"])
def test_identity_init_is_exactly_the_identity_and_can_learn(mask):
    torch.manual_seed(0)
    m = ResidualAttentionModule(8, skip_levels=1, mask=mask, identity_init=True)
    x = torch.randn(2, 8, 9, 12)
    for mode in (m.train, m.eval):
        mode()
        y, mk = _record_mask(m, x)
        assert torch.equal(y, x)
        assert torch.equal(mk, torch.zeros_like(mk))
    # equal to its trunk path: perturb the trunk, the output follows (1 + 0) * T exactly
    with torch.no_grad():
        for unit in m.trunk:
            unit.conv3.weight.normal_()
        torch.testing.assert_close(m(x), m.post(m.trunk(m.pre(x))), rtol=0, atol=0)
    # one gradient step moves the gain off zero, so the mask starts to act
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    (m(x) * torch.randn_like(x)).sum().backward()
    assert m.gain.grad.abs().sum() > 0
    opt.step()
    _, mk = _record_mask(m.eval(), x)
    assert mk.abs().sum() > 0


def test_identity_init_keeps_a_network_unchanged_when_inserted_into_a_residual_block():
    torch.manual_seed(0)
    net = visattn.create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        for layer in (net.layer1, net.layer2, net.layer3):
            for block in layer:
                block.attn = visattn.create_attention("residual", block.bn2.num_features, identity_init=True)
        net.eval()
        after = net(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_pooling_levels_follow_the_input_and_too_small_inputs_are_refused():
    torch.manual_seed(0)
    m = ResidualAttentionModule(8, skip_levels=2).eval()
    sizes = []
    hooks = [d.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:]))) for d in m.down]
    with torch.no_grad():
        m(torch.randn(1, 8, 56, 56))
        assert sizes == [(28, 28), (14, 14), (7, 7)]
        sizes.clear()
        m(torch.randn(1, 8, 28, 19))
        assert sizes == [(14, 10), (7, 5), (4, 3)]
        sizes.clear()
        m(torch.randn(1, 8, 8, 8))  # the smallest accepted: 2 ** 3
        assert sizes == [(4, 4), (2, 2), (1, 1)]
    for h in hooks:
        h.remove()
    assert m.min_size == 8
    with pytest.raises(ValueError, match=r"7x9.*skip_levels=2.*>= 8"):
        m(torch.randn(1, 8, 7, 9))
    ResidualAttentionModule(8, skip_levels=1)(torch.randn(1, 8, 7, 9))  # fewer levels fit
    assert [skip_levels_for(s, 7) for s in (56, 28, 14, 7)] == [2, 1, 0, 0]
    assert [skip_levels_for(s, 4) for s in (32, 28, 16, 8)] == [2, 2, 1, 0]


def test_unit_counts_follow_p_t_r():
    m = ResidualAttentionModule(8, p=2, t=3, r=2, skip_levels=1)
    assert len(m.pre) == len(m.post) == 2 and len(m.trunk) == 3
    assert len(m.down) == len(m.up) == 2 and len(m.skips) == 1
    assert all(len(d) == 2 for d in m.down) and all(len(u) == 2 for u in m.up)
    p0 = ResidualAttentionModule(8, p=0)
    x = torch.randn(1, 8, 8, 8)
    assert p0(x).shape == x.shape and len(p0.pre) == 0


def test_width_slims_every_unit_and_the_mask_head_and_keeps_identity_init():
    c, w = 64, 4
    slim = ResidualAttentionModule(c, width=w, identity_init=True)
    units = [*slim.pre, *slim.trunk, *slim.post, *slim.skips, *(u for d in slim.down for u in d)]
    units += [u for up in slim.up for u in up]
    assert len(units) == 9 and all(u.conv1.out_channels == w and u.conv3.in_channels == w for u in units)
    assert slim.mask_head[2].out_channels == w and slim.mask_head[5].in_channels == w
    n_slim = sum(p.numel() for p in slim.parameters())
    n_full = sum(p.numel() for p in ResidualAttentionModule(c, identity_init=True).parameters())
    # 9 units of (BN(C) + C w + 9 w^2 + 2 BN(w) + w C), the head BN(C) + C w + BN(w) + w C, the gain C
    assert n_slim == 9 * (2 * c + 2 * c * w + 9 * w * w + 4 * w) + (2 * c + 2 * c * w + 2 * w) + c
    assert n_slim < n_full / 5
    x = torch.randn(2, c, 9, 7)
    assert torch.equal(slim.eval()(x), x)  # still exactly the identity at insertion
    torch.manual_seed(0)
    trained = ResidualAttentionModule(c, width=w)
    y = trained(x)
    y.square().mean().backward()
    assert y.shape == x.shape and all(p.grad is not None for p in trained.parameters())
    with pytest.raises(ValueError, match="width"):
        ResidualAttentionModule(c, width=0)
    assert "width=4" in repr(slim)


def test_bad_arguments_raise_naming_the_argument():
    with pytest.raises(ValueError, match="mask"):
        ResidualAttentionModule(8, mask="softmax")
    with pytest.raises(ValueError, match="identity_init"):
        ResidualAttentionModule(8, residual=False, identity_init=True)
    with pytest.raises(ValueError, match="skip_levels"):
        ResidualAttentionModule(8, skip_levels=-1)
    with pytest.raises(ValueError, match="t must be"):
        ResidualAttentionModule(8, t=0)
    with pytest.raises(TypeError, match="residual"):
        ResidualAttentionModule(8, residual=1)
    with pytest.raises(ValueError, match="channels"):
        ResidualAttentionModule(8)(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="dims"):
        ResidualAttentionModule(8)(torch.randn(8, 8, 8))


def test_float64_gradcheck_of_the_whole_module():
    torch.manual_seed(0)
    m = ResidualAttentionModule(4, skip_levels=1, mask="spatial").double().eval()
    x = torch.randn(1, 4, 5, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-4)


def test_upsampling_and_pooling_helpers_match_torch():
    from visattn.attention.residual import _maxpool, _upsample

    torch.manual_seed(0)
    for shape, size in [
        ((2, 3, 5, 7), (9, 13)),
        ((1, 4, 7, 7), (14, 14)),
        ((1, 2, 1, 1), (3, 2)),
        ((1, 2, 8, 6), (8, 6)),
    ]:
        x = torch.randn(*shape)
        ref = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(_upsample(x, size), ref)
        assert torch.equal(_maxpool(x), torch.nn.functional.max_pool2d(x, 3, 2, 1))
        assert _maxpool(x).is_contiguous()


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad, torch.enable_grad])
@pytest.mark.parametrize("hw", [(8, 8), (9, 13), (16, 11), (23, 24), (1, 1), (2, 9)])
def test_fast_pooling_and_up_sampling_paths_match_torch(mode, hw):
    # without autograd, maps >= 8x8 are pooled separably and exact 2x up-samplings use lerp passes
    from visattn.attention.residual import _maxpool, _upsample

    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw) * 4
    x[0, 0, 0, 0] = float("nan")  # max-pooling propagates NaN as F.max_pool2d does
    x = x.contiguous(memory_format=torch.channels_last) if hw[0] == 16 else x
    with mode():
        pooled = _maxpool(x)
        assert pooled.is_contiguous()
        torch.testing.assert_close(pooled, F.max_pool2d(x, 3, 2, 1), rtol=0, atol=0, equal_nan=True)
        x = torch.nan_to_num(x)
        for size in [(2 * hw[0], 2 * hw[1]), (2 * hw[0] + 1, 2 * hw[1])]:
            ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            torch.testing.assert_close(_upsample(x, size), ref, rtol=1e-5, atol=1e-5)


def _reference_forward(m: ResidualAttentionModule, x: torch.Tensor) -> torch.Tensor:
    """The module's formula written out with the plain torch ops (no fused or in-place paths)."""
    feats = m.pre(x)
    trunk = m.trunk(feats)
    d, skips = feats, []
    for level, down in enumerate(m.down):
        d = down(F.max_pool2d(d, 3, 2, 1))
        if level < m.skip_levels:
            skips.append(m.skips[level](d))
    u = m.up[-1](d)
    for level in range(m.skip_levels - 1, -1, -1):
        up = F.interpolate(u, size=skips[level].shape[-2:], mode="bilinear", align_corners=False)
        u = m.up[level](up + skips[level])
    u = F.interpolate(u, size=feats.shape[-2:], mode="bilinear", align_corners=False)
    z = m.mask_head(u)
    if m.mask == "mixed":
        mk = torch.sigmoid(z)
    elif m.mask == "channel":
        mk = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        mean, var = z.mean(dim=(2, 3), keepdim=True), z.var(dim=(2, 3), keepdim=True, correction=0)
        mk = torch.sigmoid((z - mean) / torch.sqrt(var + 1e-5))
    if m.gain is not None:
        mk = mk * m.gain
    return m.post((1 + mk) * trunk if m.residual else mk * trunk)


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad, torch.enable_grad])
@pytest.mark.parametrize(
    ("mask", "residual"), [("mixed", True), ("mixed", False), ("spatial", True), ("channel", True)]
)
def test_fast_forward_equals_the_unfused_formula(mode, mask, residual):
    torch.manual_seed(0)
    m = ResidualAttentionModule(8, skip_levels=2, mask=mask, residual=residual).eval()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.normal_(1, 0.5)
                bn.bias.normal_(0, 0.5)
                bn.running_mean.normal_(0, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
    for hw in [(32, 32), (19, 26)]:  # exact 2x levels (fast paths) and odd sizes
        x = torch.randn(2, 8, *hw)
        with torch.no_grad():
            ref = _reference_forward(m, x)
        with mode():
            y, mk = _record_mask(m, x)
        assert y.shape == x.shape
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(mk).all()
