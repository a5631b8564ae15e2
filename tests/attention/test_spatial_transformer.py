"""Behaviour of the SpatialTransformer module (Jaderberg et al., NIPS 2015)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import visattn
from visattn.attention import SpatialTransformer
from visattn.functional import TRANSFORMS, num_params, warp


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("size", [(8, 8), (9, 13), (28, 28)])
def test_registered_default_is_identity_on_any_input(transform: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    st = visattn.create_attention("spatial_transformer", 3, transform=transform)
    assert type(st).supports_identity_init is True
    x = torch.randn(2, 3, *size)
    out = st(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_identity_inside_a_network_at_insertion() -> None:
    torch.manual_seed(1)
    plain = visattn.create_model("resnet20", num_classes=10).eval()
    with_st = visattn.create_model("resnet20", num_classes=10, attn_layer="spatial_transformer").eval()
    missing, unexpected = with_st.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".attn." in k for k in missing) and missing
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(with_st(x), plain(x), atol=1e-4, rtol=1e-4)


def test_out_size_downsamples() -> None:
    st = SpatialTransformer(2, out_size=(5, 7))
    x = torch.randn(3, 2, 12, 16)
    ref = nn.functional.interpolate(x, size=(5, 7), mode="bilinear", align_corners=True)
    torch.testing.assert_close(st(x), ref, atol=1e-5, rtol=0)


def test_grid_goes_through_the_warp_tap() -> None:
    st = SpatialTransformer(1, transform="projective", out_size=6)
    assert st.tap.kind == "warp"
    seen: list[torch.Tensor] = []
    handle = st.tap.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(4, 1, 10, 12)
    st(x)
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (4, 6, 6, 2)
    torch.testing.assert_close(st(x), warp(x, st.localize(x), transform="projective", out_size=6))


def test_identity_init_sets_last_layer() -> None:
    st = SpatialTransformer(1, transform="attention")
    last = st.localization[-1]
    assert torch.count_nonzero(last.weight) == 0
    assert last.bias.tolist() == [1.0, 0.0, 0.0]
    free = SpatialTransformer(1, transform="attention", identity_init=False)
    assert torch.count_nonzero(free.localization[-1].weight) > 0


def test_gradients_reach_the_localisation_network() -> None:
    torch.manual_seed(2)
    st = SpatialTransformer(1, transform="affine")
    x = torch.randn(4, 1, 12, 12)
    st(x).square().sum().backward()
    assert st.localization[-1].weight.grad.abs().sum() > 0  # the last layer learns first
    with torch.no_grad():  # once it is non-zero, the earlier layers get a gradient too
        st.localization[-1].weight.normal_(0, 0.01)
    st.zero_grad()
    st(x).square().sum().backward()
    assert st.localization[0].weight.grad.abs().sum() > 0


def test_learns_to_undo_a_translation() -> None:
    torch.manual_seed(3)
    target = torch.zeros(8, 1, 16, 16)
    target[:, :, 5:11, 6:10] = 1.0
    shifted = torch.roll(target, shifts=(2, -3), dims=(-2, -1))
    st = SpatialTransformer(1, transform="attention", padding_mode="zeros")
    opt = torch.optim.Adam(st.parameters(), lr=3e-3)
    start = nn.functional.mse_loss(st(shifted), target).item()
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(st(shifted), target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * start
    s, tx, ty = st.localize(shifted).mean(0).tolist()
    assert tx < 0 and ty > 0  # the content sits 3 px left and 2 px down


def test_custom_localization() -> None:
    p = num_params("tps", (3, 3))
    loc = nn.Sequential(nn.Flatten(1), nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, p))
    st = SpatialTransformer(1, transform="tps", grid_size=3, localization=loc)
    x = torch.randn(2, 1, 5, 5)  # a user net sets its own minimum size
    torch.testing.assert_close(st(x), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["border", "zeros", "reflection"])
def test_padding_mode_is_used(mode: str) -> None:
    st = SpatialTransformer(1, padding_mode=mode)
    with torch.no_grad():
        st.localization[-1].bias.copy_(torch.tensor([1.0, 0.0, 1.5, 0.0, 1.0, 0.0]))
    x = torch.rand(1, 1, 8, 8) + 1
    out = st(x)
    ref = warp(x, st.localize(x), padding_mode=mode)
    torch.testing.assert_close(out, ref)
    assert (out[..., -1] == 0).all() == (mode == "zeros")


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="transform"):
        visattn.create_attention("spatial_transformer", 3, transform="similarity")
    with pytest.raises(ValueError, match="padding_mode"):
        SpatialTransformer(3, padding_mode="wrap")
    with pytest.raises(ValueError, match="grid_size"):
        SpatialTransformer(3, transform="tps", grid_size=1)
    with pytest.raises(TypeError, match="channels"):
        SpatialTransformer(3.0)
    with pytest.raises(ValueError, match="6 outputs"):
        SpatialTransformer(1, localization=nn.Sequential(nn.Flatten(1), nn.Linear(64, 5)))
    st = SpatialTransformer(3)
    with pytest.raises(ValueError, match="at least 8x8"):
        st(torch.randn(1, 3, 7, 9))
    with pytest.raises(ValueError, match="3 channels"):
        st(torch.randn(1, 2, 8, 8))
    bad = SpatialTransformer(
        1, localization=nn.Sequential(nn.Flatten(1), nn.Linear(64, 6), nn.Unflatten(1, (2, 3)))
    )
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        bad(torch.randn(2, 1, 8, 8))


def test_plot_warps_writes_png(tmp_path) -> None:
    from visattn.viz.warps import capture_warps, grid_to_pixels, plot_warps

    model = visattn.create_model("st_cnn_mnist", transform="tps")
    x = torch.rand(3, 1, 28, 28)
    (rec,) = capture_warps(model, x)
    assert rec["grid"].shape == (3, 28, 28, 2) and rec["output"].shape == (3, 1, 28, 28)
    px = grid_to_pixels(rec["grid"], (28, 28))  # identity at init: pixel (i, j) reads (col j, row i)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    torch.testing.assert_close(px[0], torch.stack([cols, rows], -1), atol=1e-4, rtol=0)
    path = plot_warps(model, x, tmp_path / "sub" / "warps.png", max_images=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not model.st._forward_hooks and not model.st.tap._forward_hooks  # hooks removed
    with pytest.raises(ValueError, match="no SpatialTransformer"):
        capture_warps(torch.nn.Conv2d(1, 1, 1), x)
