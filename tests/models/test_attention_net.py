"""Residual Attention Networks: sizes against the paper, layouts, input handling, masks in one pass."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import visattn
from visattn.attention import AttentionTap, ResidualAttentionModule
from visattn.attention._preact import PreActBottleneck
from visattn.viz.masks import record_spatial_masks, save_mask_overlays


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "params_m", "gmacs"), [("attention56", 31.9, 6.2), ("attention92", 51.3, 10.4)]
)
def test_imagenet_params_and_multiply_adds_within_5_percent_of_the_paper(name, params_m, gmacs):
    # shapes only: the meta device allocates nothing, FlopCounterMode counts conv/matmul FLOPs = 2 x MACs
    with torch.device("meta"):
        model = visattn.create_model(name, num_classes=1000)
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    macs = counter.get_total_flops() / 2
    assert abs(_params(model) / 1e6 - params_m) / params_m < 0.05
    assert abs(macs / 1e9 - gmacs) / gmacs < 0.05


def test_cifar_sizes():
    n92 = _params(visattn.create_model("attention92_cifar"))
    n56 = _params(visattn.create_model("attention56_cifar"))
    assert abs(n92 / 1e6 - 1.9) / 1.9 < 0.10  # the paper's 1.9M
    assert n56 < 0.7 * n92


def _trunk_depth(model) -> int:
    """Weighted layers on the longest trunk path: stem conv + 3 per unit + fc."""
    units = 0
    for stage in (model.stage1, model.stage2, model.stage3, model.stage4):
        for block in stage:
            if isinstance(block, PreActBottleneck):
                units += 1
            else:
                units += len(block.pre) + len(block.trunk) + len(block.post)
    return 1 + 3 * units + 1


@pytest.mark.parametrize(
    ("name", "per_stage", "depth"),
    [
        ("attention56", (1, 1, 1), 56),
        ("attention92", (1, 2, 3), 92),
        ("attention56_cifar", (1, 1, 1), 56),
        ("attention92_cifar", (2, 2, 2), 92),
    ],
)
def test_layouts_modules_per_stage_depth_and_mask_depth(name, per_stage, depth):
    with torch.device("meta"):
        model = visattn.create_model(name)
    for stage, m, skips in zip((model.stage1, model.stage2, model.stage3), per_stage, (2, 1, 0)):
        mods = [b for b in stage if isinstance(b, ResidualAttentionModule)]
        assert len(mods) == m
        assert all(b.skip_levels == skips for b in mods)
    assert _trunk_depth(model) == depth


def test_every_mask_is_recorded_in_one_forward_pass_at_its_stage_resolution():
    torch.manual_seed(0)
    model = visattn.create_model("attention92_cifar").eval()
    masks = record_spatial_masks(model, torch.randn(2, 3, 32, 32))
    assert len(masks) == 6 == sum(isinstance(m, AttentionTap) for m in model.modules())
    shapes = {k: tuple(v.shape) for k, v in masks.items()}
    assert shapes == {
        "stage1.1.tap": (2, 64, 32, 32),
        "stage1.2.tap": (2, 64, 32, 32),
        "stage2.1.tap": (2, 128, 16, 16),
        "stage2.2.tap": (2, 128, 16, 16),
        "stage3.1.tap": (2, 256, 8, 8),
        "stage3.2.tap": (2, 256, 8, 8),
    }
    assert all((v >= 0).all() and (v <= 1).all() for v in masks.values())  # mixed: sigmoid, [0, 1] in float32
    assert not any(h._forward_hooks for h in model.modules() if isinstance(h, AttentionTap))  # hooks removed


def test_cifar_variants_take_fashion_mnist_and_refuse_too_small_inputs():
    torch.manual_seed(0)
    model = visattn.create_model("attention56_cifar", in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
        assert model(torch.randn(1, 1, 8, 11)).shape == (1, 10)
    with pytest.raises(ValueError, match="at least 8x8"):
        model(torch.randn(1, 1, 7, 28))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 3, 28, 28))


def test_imagenet_variant_runs_at_its_smallest_accepted_size_and_refuses_smaller():
    torch.manual_seed(0)
    model = visattn.create_model("attention56", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 45)).shape == (1, 5)
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 3, 31, 64))


@pytest.mark.parametrize("mask", ["channel", "spatial"])
def test_mask_and_residual_options_reach_every_module(mask):
    model = visattn.create_model("attention56_cifar", mask=mask, residual=False)
    mods = [m for m in model.modules() if isinstance(m, ResidualAttentionModule)]
    assert len(mods) == 3 and all(m.mask == mask and not m.residual for m in mods)
    with pytest.raises(ValueError, match="layout"):
        visattn.models.attention_net.ResidualAttentionNet((1, 1, 1), layout="tiny")
    with pytest.raises(ValueError, match="modules_per_stage"):
        visattn.models.attention_net.ResidualAttentionNet((1, 1), layout="cifar")


@pytest.mark.parametrize("name", ["attention56_cifar", "attention56"])
def test_inference_fast_paths_give_the_autograd_path_outputs(name):
    # inference mode takes the in-place / separable-pooling / lerp up-sampling paths; with autograd
    # recording the network runs the plain ops (channels-last max_pool2d, matmul up-sampling, out of place)
    torch.manual_seed(0)
    model = visattn.create_model(name, num_classes=7).eval()
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):  # running statistics that keep activations O(1)
            bn.running_var.fill_(4.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        fast = model(x)
    with torch.enable_grad():
        plain = model(x.requires_grad_())
    torch.testing.assert_close(fast, plain.detach(), rtol=1e-4, atol=1e-5)
    assert fast.abs().max() > 1e-3


def test_a_few_sgd_steps_fit_a_small_batch():
    torch.manual_seed(0)
    model = visattn.create_model("attention56_cifar", in_chans=1, num_classes=4).train()
    x, y = torch.randn(16, 1, 16, 16), torch.arange(16) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_mask_overlays_are_written_one_png_per_image(tmp_path):
    torch.manual_seed(0)
    model = visattn.create_model("attention56_cifar").eval()
    paths = save_mask_overlays(model, torch.randn(2, 3, 32, 32), tmp_path, prefix="ra")
    assert [p.name for p in paths] == ["ra_0.png", "ra_1.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="AttentionTap"):
        save_mask_overlays(visattn.create_model("resnet20"), torch.randn(1, 3, 32, 32), tmp_path)
    with pytest.raises(ValueError, match="alpha"):
        save_mask_overlays(model, torch.randn(1, 3, 32, 32), tmp_path, alpha=2.0)
