"""Multi-context attention (Chu et al., CVPR 2017): HRU, the CRF's mean-field iterations, holistic and
part attention, multi-resolution attention, and the recorder seeing every map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visattn
from visattn.attention.multi_context import (
    CRFAttention,
    HolisticAttention,
    HourglassResidualUnit,
    MCAHourglass,
    MultiResolutionAttention,
    PartAttention,
)
from visattn.viz import AttentionRecorder


def test_hru_is_identity_plus_residual_plus_pooled_branch():
    torch.manual_seed(0)
    hru = HourglassResidualUnit(8).eval()
    x = torch.randn(2, 8, 7, 10)
    with torch.no_grad():
        pooled = hru.pooled(F.max_pool2d(x, 2, 2, ceil_mode=True))
        want = hru.residual(x) + F.interpolate(pooled, size=(7, 10), mode="nearest")
        torch.testing.assert_close(hru(x), want)
        assert hru(x).shape == x.shape
    hru.train()
    hru(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hru.pooled.parameters() if p.dim() > 1)


def test_crf_iterations_follow_the_mean_field_recurrence_with_shared_weights():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 9, 9)
    att = CRFAttention(8, maps=3, crf_iters=3)
    with torch.no_grad():
        u = att.unary(f)
        phi = torch.sigmoid(u)
        for _ in range(3):
            phi = torch.sigmoid(u + att.message(phi))
        torch.testing.assert_close(att(f), phi)
    # the message convolution is shared: 1 to 5 iterations have the same parameters
    counts = {t: sum(p.numel() for p in CRFAttention(8, maps=3, crf_iters=t).parameters()) for t in (1, 2, 5)}
    assert len(set(counts.values())) == 1
    assert sum(p.numel() for p in CRFAttention(8, maps=3, crf_iters=0).parameters()) < counts[1]


def test_crf_iteration_count_changes_the_maps_unless_the_messages_are_zero():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 9, 9)
    att = CRFAttention(8, crf_iters=1)
    outs = []
    with torch.no_grad():
        for t in (0, 1, 2, 4):
            att.crf_iters = t
            outs.append(att(f))
        torch.testing.assert_close(outs[0], torch.sigmoid(att.unary(f)))
        for a, b in zip(outs, outs[1:], strict=False):
            assert (a - b).abs().max() > 1e-4
        att.message.weight.zero_()
        att.message.bias.zero_()
        att.crf_iters = 4
        torch.testing.assert_close(att(f), outs[0])  # zero messages: the CRF leaves sigmoid(U)
    assert ((outs[-1] > 0) & (outs[-1] < 1)).all()


def test_holistic_attention_scales_every_channel_by_one_map():
    torch.manual_seed(0)
    m = HolisticAttention(8, crf_iters=2)
    f = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(f), f * m.attention(f))
    assert m.attention(f).shape == (2, 1, 6, 5)


def test_part_attention_is_each_joints_map_on_the_features_then_a_1x1_score():
    torch.manual_seed(0)
    m = PartAttention(8, num_joints=4, crf_iters=1)
    with torch.no_grad():
        m.bias.normal_()
    f = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        phi = m.attention(f)  # (2, 4, 6, 6)
        w = m.score.weight[:, :, 0, 0]  # (4, 8)
        want = torch.stack(
            [torch.einsum("c,bchw->bhw", w[p], f * phi[:, p : p + 1]) + m.bias[0, p] for p in range(4)], 1
        )
        torch.testing.assert_close(m(f), want, rtol=1e-5, atol=1e-5)


def test_multi_resolution_attention_averages_upsampled_maps():
    torch.manual_seed(0)
    m = MultiResolutionAttention(4, n_res=2, crf_iters=0)
    feats = [torch.randn(1, 4, 2, 2), torch.randn(1, 4, 4, 4), torch.randn(1, 4, 8, 8)]
    f = feats[-1]
    with torch.no_grad():
        p1 = F.interpolate(m.maps[0](feats[1]), size=(8, 8), mode="bilinear", align_corners=False)
        p2 = m.maps[1](feats[2])
        torch.testing.assert_close(m(f, feats), f * (p1 + p2) / 2)
    with pytest.raises(ValueError, match="n_res"):
        MultiResolutionAttention(4, n_res=4)(f, feats)


def test_mca_hourglass_keeps_the_shape_and_refuses_bad_options():
    hg = MCAHourglass(8, depth=2, n_res=3)
    assert hg(torch.randn(2, 8, 8, 12)).shape == (2, 8, 8, 12)
    assert isinstance(hg.down[0][0], HourglassResidualUnit)
    with pytest.raises(ValueError, match="n_res"):
        MCAHourglass(8, depth=2, n_res=4)
    with pytest.raises(ValueError, match="kernel"):
        CRFAttention(8, kernel=2)
    with pytest.raises(ValueError, match="crf_iters"):
        CRFAttention(8, crf_iters=-1)
    with pytest.raises(ValueError, match="part_from"):
        visattn.create_model("mca_hourglass", n_stacks=2, part_from=2)


def test_recorder_sees_holistic_part_and_multiresolution_maps():
    torch.manual_seed(0)
    m = visattn.create_model("mca_hourglass", num_joints=5, n_stacks=2, depth=2, width=16, crf_iters=1).eval()
    with AttentionRecorder(m) as rec, torch.no_grad():
        m(torch.randn(2, 3, 64, 64))
    fired = rec.fired()
    holistic = {n: r.value for n, r in fired.items() if "heads" in n and r.value.shape[1] == 1}
    part = {n: r.value for n, r in fired.items() if "heads" in n and r.value.shape[1] == 5}
    multires = {n: r.value for n, r in fired.items() if n.endswith("multires.tap")}
    assert len(holistic) == 2 and len(part) == 1 and len(multires) == 2  # part maps in the later stack only
    assert all(v.shape == (2, 5, 16, 16) for v in part.values())
    assert all(((r.value > 0) & (r.value < 1)).all() for r in fired.values())


@pytest.mark.parametrize(
    "flags",
    [
        {"use_hru": True, "multires": False, "holistic": False, "part": False, "crf_iters": 0},
        {"use_hru": True, "multires": False, "holistic": True, "part": False, "crf_iters": 0},
        {"use_hru": True, "multires": False, "holistic": True, "part": True, "crf_iters": 0},
        {"use_hru": True, "multires": True, "holistic": True, "part": True, "crf_iters": 2},
    ],
)
def test_each_ablation_step_adds_parameters(flags):
    def count(**kw):
        return sum(
            p.numel() for p in visattn.create_model("mca_hourglass", width=16, depth=2, **kw).parameters()
        )

    off = {"use_hru": False, "multires": False, "holistic": False, "part": False, "crf_iters": 0}
    assert count(**flags) > count(**off)
