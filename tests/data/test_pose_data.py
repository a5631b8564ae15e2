"""LSP/LSPET pose data (visattn.data.pose): layouts, splits, crops, flips, heatmaps, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch

from visattn.data import load_dataset
from visattn.data.pose import (
    FLIP_PAIRS,
    crop_to_heatmap,
    flip_permutation,
    gaussian_heatmaps,
    heatmap_to_crop,
    load_pose_splits,
    read_lsp,
)
from visattn.train.pose import decode_heatmaps, to_image


def test_both_joint_layouts_read_the_same(lsp_folder, tmp_path):
    root, joints = lsp_folder(4, layout="14x3")
    a = read_lsp(root).joints
    np.testing.assert_allclose(a, joints)
    scipy.io.savemat(str(root / "joints.mat"), {"joints": joints.transpose(2, 1, 0)})  # LSP: 3 x 14 x N
    np.testing.assert_allclose(read_lsp(root).joints, joints)
    inv = read_lsp(root, invert_visibility=True).joints
    assert (inv[..., 2] == 0).all()


def test_gaussian_heatmap_matches_hand_computed_values():
    h = gaussian_heatmaps(torch.tensor([[2.0, 1.0], [0.5, 0.5]]), torch.tensor([1.0, 0.0]), 4, 1.0)
    assert h.shape == (2, 4, 4)
    assert h[0, 1, 2] == 1.0  # peak at (x=2, y=1): row 1, column 2
    assert torch.isclose(h[0, 1, 3], torch.tensor(np.exp(-0.5), dtype=torch.float32))
    assert torch.isclose(h[0, 2, 3], torch.tensor(np.exp(-1.0), dtype=torch.float32))
    assert torch.isclose(h[0, 3, 0], torch.tensor(np.exp(-(4 + 4) / 2), dtype=torch.float32))
    assert (h[1] == 0).all()  # invisible: no target


def test_crop_heatmap_coordinates_round_trip():
    u = torch.tensor([0.0, 1.5, 63.25, 127.0])
    torch.testing.assert_close(heatmap_to_crop(crop_to_heatmap(u, 4), 4), u)
    assert crop_to_heatmap(torch.tensor(1.5), 4) == 0  # heatmap pixel 0 is the centre of crop pixels 0..3


def test_eval_crop_puts_joints_where_the_heatmaps_peak_and_maps_back(lsp_folder):
    root, joints = lsp_folder(6, splits={"train": ["im00001.jpg", "im00002.jpg"], "test": ["im00003.jpg"]})
    sp = load_pose_splits(root, input_size=64, heatmap_size=16)
    assert sp.val is None and len(sp.train) == 2 and len(sp.test) == 1
    x, y = sp.test[0]
    assert x.shape == (3, 64, 64) and y["heatmaps"].shape == (14, 16, 16)
    assert y["index"] == 2 and (y["visible"] == 1).all()
    torch.testing.assert_close(y["joints"], torch.from_numpy(joints[2, :, :2]).float())
    # the person's box (visible joints' box, padded by 1.25) is centred in the crop
    xy = joints[2, :, :2]
    side = 1.25 * (xy.max(0) - xy.min(0)).max()
    centre_in_image = to_image(crop_to_heatmap(torch.full((1, 1, 2), 31.5), 4), y["crop_to_image"][None], 4)
    torch.testing.assert_close(centre_in_image[0, 0], torch.tensor((xy.max(0) + xy.min(0)) / 2).float())
    assert abs(float(torch.linalg.det(y["crop_to_image"][:, :2])) - (side / 64) ** 2) < 1e-4
    # decoding the target heatmaps and mapping back lands within one heatmap pixel of the joints
    pred = to_image(decode_heatmaps(y["heatmaps"][None]), y["crop_to_image"][None], 4)[0]
    err = (pred - y["joints"]).norm(dim=-1)
    assert err.max() < side / 16  # one heatmap pixel in image pixels


def test_flip_mirrors_the_image_and_swaps_left_and_right_joints(lsp_folder):
    root, _ = lsp_folder(3, splits={"train": ["im00001.jpg", "im00002.jpg"], "test": ["im00003.jpg"]})
    sp = load_pose_splits(root, input_size=64, heatmap_size=16, scale=0.0, rotate_p=0.0, flip_p=1.0)
    plain = sp.train.with_augment(False)
    torch.manual_seed(0)
    xf, yf = sp.train[1]
    x0, y0 = plain[1]
    torch.testing.assert_close(xf, x0.flip(-1), atol=1e-5, rtol=0)
    perm = flip_permutation()
    assert perm[8] == 9 and perm[9] == 8 and perm[12] == 12  # shoulders swap, neck stays
    torch.testing.assert_close(yf["heatmaps"], y0["heatmaps"][perm].flip(-1), atol=1e-5, rtol=0)
    # the flipped sample maps its (swapped) joints back onto the same image positions
    torch.testing.assert_close(yf["joints"], y0["joints"][perm])
    pred = to_image(decode_heatmaps(yf["heatmaps"][None]), yf["crop_to_image"][None], 4)[0]
    assert (pred - yf["joints"]).norm(dim=-1).max() < 4


def test_augmentation_changes_crops_and_keeps_targets_consistent(lsp_folder):
    root, _ = lsp_folder(3, splits={"train": ["im00001.jpg", "im00002.jpg"], "test": ["im00003.jpg"]})
    sp = load_pose_splits(root, input_size=64, heatmap_size=16, rotate_p=1.0)
    torch.manual_seed(0)
    (xa, ya), (xb, yb) = sp.train[0], sp.train[0]
    assert not torch.equal(xa, xb)
    for y in (ya, yb):  # visible targets decode back onto the joints (rotation, scale, flip included)
        v = y["visible"] > 0
        pred = to_image(decode_heatmaps(y["heatmaps"][None]), y["crop_to_image"][None], 4)[0]
        scale = float(torch.linalg.det(y["crop_to_image"][:, :2]).abs().sqrt()) * 4
        assert ((pred - y["joints"]).norm(dim=-1)[v] <= scale).all()


def test_without_a_split_file_the_present_images_are_split_with_the_seed(lsp_folder):
    root, _ = lsp_folder(20)
    (root / "images" / "im00007.jpg").unlink()
    a = load_pose_splits(root, seed=1)
    b = load_pose_splits(root, seed=1)
    assert a.skipped["missing_image"] == 1
    assert (len(a.train), len(a.val), len(a.test)) == (15, 2, 2)
    assert a.test.indices == b.test.indices
    assert 6 not in a.train.indices + a.val.indices + a.test.indices
    assert set(a.train.indices).isdisjoint(a.test.indices + a.val.indices)


def test_people_with_too_few_visible_joints_or_far_outside_are_skipped_and_counted(lsp_folder):
    root, joints = lsp_folder(8)
    joints[1, 1:, 2] = 0  # one visible joint
    joints[2, 0, 0] = 500.0  # a visible joint ten image widths outside
    scipy.io.savemat(str(root / "joints.mat"), {"joints": joints.transpose(1, 2, 0)})
    sp = load_pose_splits(root, val_fraction=0.0, test_fraction=0.25)
    assert sp.skipped["fewer_than_2_visible"] == 1 and sp.skipped["far_outside_image"] == 1
    kept = sp.train.indices + sp.test.indices
    assert 1 not in kept and 2 not in kept and len(kept) == 6


def test_bad_input_raises_naming_the_problem(lsp_folder, tmp_path):
    root, joints = lsp_folder(4)
    scipy.io.savemat(str(root / "joints.mat"), {"joints": np.zeros((13, 3, 4))})
    with pytest.raises(ValueError, match=r"14 x 3 x N.*\(13, 3, 4\)"):
        read_lsp(root)
    scipy.io.savemat(str(root / "joints.mat"), {"points": np.zeros((14, 3, 4))})
    with pytest.raises(ValueError, match="no 'joints'"):
        read_lsp(root)
    scipy.io.savemat(str(root / "joints.mat"), {"joints": joints.transpose(1, 2, 0)})
    (root / "splits.json").write_text(
        json.dumps({"train": ["im00001.jpg", "im00009.jpg"], "test": ["im00002.jpg"]})
    )
    with pytest.raises(ValueError, match="im00009.jpg.*4 columns"):
        load_pose_splits(root)
    (root / "images" / "im00002.jpg").unlink()
    (root / "splits.json").write_text(json.dumps({"train": ["im00001.jpg"], "test": ["im00002.jpg"]}))
    with pytest.raises(FileNotFoundError, match="im00002.jpg"):
        load_pose_splits(root)
    (root / "splits.json").write_text(json.dumps({"train": ["im00001.jpg"], "test": []}))
    with pytest.raises(ValueError, match="split 'test'.*empty"):
        load_pose_splits(root)
    (root / "splits.json").write_text(json.dumps({"train": ["photo.jpg"], "test": ["im00001.jpg"]}))
    with pytest.raises(ValueError, match="imNNNNN"):
        load_pose_splits(root)
    with pytest.raises(FileNotFoundError, match="joints.mat"):
        read_lsp(tmp_path / "nowhere")


def test_registered_dataset_carries_the_pose_extras(lsp_folder):
    root, _ = lsp_folder(10, splits={"train": [f"im{k:05d}.jpg" for k in range(1, 7)],
                                     "val": ["im00007.jpg", "im00008.jpg"], "test": ["im00009.jpg", "im00010.jpg"]})  # fmt: skip
    ds = load_dataset("lspet", data_dir=str(root), input_size=64, heatmap_size=16)
    assert ds.num_classes == 14 and ds.image_size == (64, 64) and ds.extras["task"] == "pose"
    assert len(ds.extras["val"]) == 2 and len(ds.train) == 6 and len(ds.test) == 2
    assert ds.train.augment and not ds.extras["val"].augment and not ds.test.augment
    assert len(FLIP_PAIRS) == 6
    with pytest.raises(FileNotFoundError, match="data-dir"):
        load_dataset("lspet", data_dir=None)
