"""Stacked hourglass (Newell et al. 2016) and the shared bottom-up top-down block; the pose models'
contract (the classification contract in tests/test_registry.py leaves them out)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visattn
from visattn.attention import Hourglass, ResidualAttentionModule
from visattn.attention.hourglass import BottomUpTopDown

POSE_MODELS = [
    ("hourglass", {}),
    ("mca_hourglass", {}),
    ("mca_hourglass", {"use_hru": False, "multires": False, "part": False}),
]
SMALL = {"width": 16, "depth": 2}


def _build(name, **kw):
    torch.manual_seed(0)
    return visattn.create_model(name, num_joints=5, **SMALL, **kw)


@pytest.mark.parametrize(("name", "kw"), POSE_MODELS)
@pytest.mark.parametrize("n_stacks", [1, 2, 3])
def test_pose_models_give_one_heatmap_per_stack(name, kw, n_stacks):
    m = _build(name, n_stacks=n_stacks, **kw)
    out = m(torch.randn(2, 3, 64, 48))
    assert len(out["stacks"]) == n_stacks
    assert all(h.shape == (2, 5, 16, 12) for h in out["stacks"])
    assert out["heatmaps"] is out["stacks"][-1]


def test_128_px_input_gives_32x32_heatmaps_with_the_default_depth():
    m = visattn.create_model("hourglass", num_joints=14, n_stacks=2, width=16)
    assert m.depth == 4
    assert m(torch.randn(1, 3, 128, 128))["heatmaps"].shape == (1, 14, 32, 32)


@pytest.mark.parametrize(("name", "kw"), POSE_MODELS)
def test_every_parameter_gets_a_gradient_from_the_summed_stack_losses(name, kw):
    m = _build(name, **kw).train()
    out = m(torch.randn(2, 3, 32, 40))
    sum(h.square().mean() for h in out["stacks"]).backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize(("name", "kw"), POSE_MODELS)
def test_eval_is_deterministic_and_state_dict_round_trips(name, kw):
    m = _build(name, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = m(x)["heatmaps"], m(x)["heatmaps"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(1)
    twin = visattn.create_model(name, num_joints=5, **SMALL, **kw).eval()
    twin.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(twin(x)["heatmaps"], a)


@pytest.mark.parametrize("name", ["hourglass", "mca_hourglass"])
def test_bad_inputs_and_options_raise(name):
    m = _build(name)
    with pytest.raises(ValueError, match="channels"):
        m(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(1, 3, 8, 8))  # depth 2 needs at least 4 * 2^2 = 16 px
    with pytest.raises(ValueError, match="depth"):
        visattn.create_model(name, depth=0)
    with pytest.raises(ValueError, match="width"):
        visattn.create_model(name, width=0)


def test_num_classes_from_the_engine_sets_the_joint_count():
    m = visattn.create_model("hourglass", num_classes=16, width=8, depth=1)
    assert m(torch.randn(1, 3, 16, 16))["heatmaps"].shape[1] == 16


def test_hourglass_depth_one_is_the_papers_recursion():
    torch.manual_seed(0)
    hg = Hourglass(8, depth=1).eval()
    x = torch.randn(2, 8, 6, 7)
    with torch.no_grad():
        low = hg.up[0](hg.bottom(hg.down[0](F.max_pool2d(x, 2, 2, ceil_mode=True))))
        want = hg.skips[0](x) + F.interpolate(low, size=(6, 7), mode="nearest")
        torch.testing.assert_close(hg(x), want)


def test_hourglass_depth_two_nests_a_depth_one_hourglass():
    torch.manual_seed(0)
    hg = Hourglass(8, depth=2).eval()
    x = torch.randn(1, 8, 8, 8)
    pool = lambda t: F.max_pool2d(t, 2, 2, ceil_mode=True)  # noqa: E731
    up = lambda t, s: F.interpolate(t, size=s, mode="nearest")  # noqa: E731
    with torch.no_grad():
        d1 = hg.down[0](pool(x))
        inner = hg.skips[1](d1) + up(hg.up[1](hg.bottom(hg.down[1](pool(d1)))), d1.shape[-2:])
        want = hg.skips[0](x) + up(hg.up[0](inner), x.shape[-2:])
        torch.testing.assert_close(hg(x), want)


def test_residual_attention_mask_branch_runs_the_same_block():
    ram = ResidualAttentionModule(8, skip_levels=1)
    assert isinstance(ram, BottomUpTopDown) and isinstance(Hourglass(8), BottomUpTopDown)
    assert type(ram).bottom_up_top_down is BottomUpTopDown.bottom_up_top_down
    assert ram.skip_from == 1 and len(ram.skips) == 1 and isinstance(ram.bottom, torch.nn.Identity)
    hg = Hourglass(8, depth=3)
    assert hg.skip_from == 0 and len(hg.skips) == 3


def test_mca_with_every_piece_off_is_exactly_the_hourglass():
    off = {"use_hru": False, "multires": False, "holistic": False, "part": False, "crf_iters": 0}
    hg, mca = _build("hourglass").eval(), _build("mca_hourglass", **off).eval()
    assert sum(p.numel() for p in hg.parameters()) == sum(p.numel() for p in mca.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mca(x)["heatmaps"], hg(x)["heatmaps"], rtol=0, atol=0)
