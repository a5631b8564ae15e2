"""The engine's pose task (visattn.train.pose): heatmap loss, arg-max decoding, PCK@0.2 against
hand-computed cases, and a tiny synthetic training run through the engine."""

from __future__ import annotations

import json

import pytest
import torch

from visattn.train import TrainConfig, fit
from visattn.train.pose import PoseTask, decode_heatmaps, heatmap_loss, pck, to_image


def test_heatmap_loss_is_the_visible_joints_mse_summed_over_stacks():
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0, 0] = 1.0
    vis = torch.tensor([[1.0, 0.0]])
    a = torch.zeros(1, 2, 2, 2)  # error 1 at one pixel of joint 0: MSE 1/4
    b = torch.full((1, 2, 2, 2), 0.5)  # joint 0: (0.25 + 3 * 0.25) / 4 = 0.25; joint 1 is masked
    assert heatmap_loss({"stacks": (a,)}, target, vis).item() == pytest.approx(0.25)
    assert heatmap_loss({"stacks": (a, b)}, target, vis).item() == pytest.approx(0.5)
    assert heatmap_loss({"stacks": (target,)}, target, vis).item() == 0.0
    assert heatmap_loss(a, target, torch.zeros(1, 2)).item() == 0.0  # nothing visible: no loss


def test_decoding_takes_the_argmax_and_a_quarter_pixel_step_towards_the_higher_neighbour():
    h = torch.zeros(1, 3, 6, 6)
    h[0, 0, 2, 3], h[0, 0, 2, 2], h[0, 0, 3, 3] = 1.0, 0.5, 0.2  # left and lower neighbours higher
    h[0, 1, 4, 1] = 1.0  # ties: no step
    h[0, 2, 0, 5], h[0, 2, 0, 4] = 1.0, 0.9  # at the border: no step
    torch.testing.assert_close(decode_heatmaps(h)[0], torch.tensor([[2.75, 2.25], [1.0, 4.0], [5.0, 0.0]]))


def test_heatmap_coordinates_map_back_through_the_crop_transform():
    # crop -> image: x_img = 2 u + 10, y_img = 2 v + 20; heatmap stride 4: u = 4 h + 1.5
    a = torch.tensor([[[2.0, 0.0, 10.0], [0.0, 2.0, 20.0]]])
    out = to_image(torch.tensor([[[0.0, 0.0], [1.0, 2.0]]]), a, 4.0)
    torch.testing.assert_close(out, torch.tensor([[[13.0, 23.0], [21.0, 39.0]]]))


def _person(torso: float = 50.0) -> torch.Tensor:
    gt = torch.zeros(1, 14, 2)
    gt[0, 8] = torch.tensor([10.0, 10.0])  # right shoulder
    gt[0, 3] = torch.tensor([10.0 + 0.6 * torso, 10.0 + 0.8 * torso])  # left hip, |d| = torso
    return gt


def test_pck_threshold_is_a_fifth_of_the_right_shoulder_to_left_hip_distance():
    gt = _person(50.0)  # threshold 10 px
    pred = gt.clone()
    pred[0, 0] += torch.tensor([6.0, 8.0])  # 10 px: correct (<=)
    pred[0, 1] += torch.tensor([6.0, 8.1])  # just over
    pred[0, 2] += torch.tensor([0.0, 30.0])  # far off, but invisible: not counted
    vis = torch.ones(1, 14)
    vis[0, 2] = 0
    correct, counted, skipped = pck(pred, gt, vis)
    assert correct[0] == 1 and correct[1] == 0 and counted[2] == 0 and skipped == 0
    assert correct.sum() == 12 and counted.sum() == 13


def test_pck_falls_back_to_the_other_diagonal_and_counts_people_without_a_torso():
    gt = _person(50.0)
    gt[0, 9] = torch.tensor([0.0, 0.0])  # left shoulder
    gt[0, 2] = torch.tensor([0.0, 20.0])  # right hip: other diagonal 20 px, threshold 4 px
    pred = gt.clone()
    pred[0, 0] += 5.0  # 7.07 px off
    vis = torch.ones(2, 14)
    vis[0, 8] = 0  # no right shoulder: use the other diagonal
    vis[1, [8, 9]] = 0  # no shoulder at all: skipped
    correct, counted, skipped = pck(torch.cat([pred, pred]), torch.cat([gt, gt]), vis)
    assert correct[0] == 0 and counted[0] == 1 and skipped == 1
    vis[0, 8] = 1
    correct, _, _ = pck(pred, gt, vis[:1])
    assert correct[0] == 1  # 7.07 <= 0.2 * 50


def test_evaluate_reports_per_joint_and_mean_pck(lsp_folder):
    import scipy.io

    from visattn.data.pose import load_pose_splits

    root, joints = lsp_folder(
        4, splits={"train": ["im00001.jpg", "im00002.jpg"], "test": ["im00003.jpg", "im00004.jpg"]}
    )
    joints[:, 8, :2], joints[:, 3, :2] = (4.0, 4.0), (43.0, 35.0)  # torso 49.7 px: threshold 9.9 px
    scipy.io.savemat(str(root / "joints.mat"), {"joints": joints.transpose(1, 2, 0)})
    sp = load_pose_splits(root, input_size=32, heatmap_size=8)  # one heatmap pixel: at most 6.9 image px
    oracle = lambda x: {"stacks": (oracle.y["heatmaps"],)}  # noqa: E731  (predicts the targets)
    batch = torch.utils.data.default_collate([sp.test[0], sp.test[1]])
    oracle.y = batch[1]
    res = PoseTask().evaluate(_Wrap(oracle), [batch], torch.device("cpu"))
    assert res["n"] == 2 and res["pck_skipped"] == 0 and res["loss"] == 0.0
    assert res["pck"] == 100.0 and res["pck_head_top"] == 100.0 and res["pck_all"] == 100.0


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_tiny_synthetic_pose_run_through_the_engine_selects_on_validation_pck(lsp_folder, tmp_path):
    root, _ = lsp_folder(14, size=(40, 36))
    cfg = TrainConfig(
        task="pose",
        model="hourglass",
        model_kwargs={"width": 8, "depth": 1, "n_stacks": 2},
        data="lspet",
        data_dir=str(root),
        data_kwargs={"input_size": 32, "heatmap_size": 8, "sigma": 1.0},
        epochs=3,
        batch_size=4,
        optimizer="adamw",
        lr=1e-2,
        weight_decay=0.0,
        out=str(tmp_path / "run"),
        progress=False,
    )
    summary = fit(cfg)
    hist = summary["history"]
    assert len(hist) == 3 and all("val_pck" in row and "train_heatmap_mse" in row for row in hist)
    assert summary["best_val_pck"] == max(row["val_pck"] for row in hist)
    assert 0.0 <= summary["test_pck"] <= 100.0 and "test_pck_r_shoulder" in summary
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == 1 + max(range(3), key=lambda i: (hist[i]["val_pck"], -i))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_n"] == round(0.1 * 14)


def test_config_refuses_an_unknown_task():
    with pytest.raises(ValueError, match="task"):
        TrainConfig(task="segmentation")


def test_cli_train_takes_the_pose_task(capsys):
    from visattn.cli import main

    argv = [
        "train",
        "--task",
        "pose",
        "--model",
        "mca_hourglass",
        "--data",
        "lspet",
        "--data-dir",
        "path/to/lspet",
    ]
    assert main([*argv, "--model-arg", "crf_iters=0", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "task: pose" in out and "crf_iters: 0" in out
