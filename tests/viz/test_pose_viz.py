"""Pose pictures: skeletons drawn where the joints are; the panel shows every attention map."""

from __future__ import annotations

import numpy as np
import torch

import visattn
from visattn.viz.pose import draw_skeleton, pose_attention_panel


def test_skeleton_is_drawn_at_the_joints_and_skips_invisible_limbs():
    joints = torch.tensor([[4.0, 4.0]] * 14)
    joints[1] = torch.tensor([12.0, 4.0])  # right knee: the limb 0-1 runs along y = 4
    vis = torch.ones(14)
    im = np.asarray(draw_skeleton(torch.zeros(3, 16, 16), joints, vis, scale=1))
    assert im[4, 8].tolist() == [230, 40, 40]  # red (right side) between joints 0 and 1
    assert im[12, 12].sum() == 0  # far from every joint: untouched
    vis[1] = 0
    im = np.asarray(draw_skeleton(torch.zeros(3, 16, 16), joints, vis, scale=1))
    assert im[4, 8].sum() == 0


def test_panel_has_a_skeleton_column_and_one_column_per_attention_map():
    torch.manual_seed(0)
    m = visattn.create_model("mca_hourglass", num_joints=14, n_stacks=2, depth=2, width=8, crf_iters=1)
    x = torch.randn(2, 3, 32, 32)
    panel, info = pose_attention_panel(m, x, scale=1)
    n_maps = len(info["maps"])
    assert n_maps == 2 + 2 + 1  # multi-resolution x 2 stacks, holistic x 2, part x 1
    assert panel.size == (32 * (1 + n_maps), 32 * 2)
    assert info["joints"].shape == (2, 14, 2)
    assert ((info["joints"] >= 0) & (info["joints"] <= 31)).all()
