"""Proposals (selective search) and their bad input, the hooked backbone, part clustering, fusion, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from two_level_helpers import make_folder

from visattn.cli import main
from visattn.pipelines.two_level import HookedClassifier, build_backbone, run_two_level
from visattn.pipelines.two_level.fusion import choose_weight
from visattn.pipelines.two_level.images import list_images, load_rgb
from visattn.pipelines.two_level.part import cluster_filters, detector_scores, filter_similarity
from visattn.pipelines.two_level.proposals import compute_proposals, image_proposals, selective_search

OPTS = {"image_size": 40, "ss_mode": "fast", "max_proposals": 5, "min_box": 8}


def _structured(size: int = 48) -> np.ndarray:
    img = np.full((size, size, 3), 120, np.uint8)
    img[5:25, 8:30] = (220, 20, 20)
    img[30:44, 20:40] = (20, 20, 220)
    return img


def test_selective_search_caps_and_min_size() -> None:
    boxes, why = selective_search(_structured(), max_proposals=4, min_box=10)
    assert why is None and boxes.dtype == np.int32 and 1 <= len(boxes) <= 4
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (w >= 10).all() and (h >= 10).all() and (boxes[:, 2] <= 48).all() and (boxes[:, 3] <= 48).all()
    assert len({tuple(b) for b in boxes.tolist()}) == len(boxes)  # no duplicates


@pytest.mark.parametrize(
    ("img", "reason"),
    [
        (np.full((32, 32, 3), 77, np.uint8), "one colour"),
        (np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8), "smaller than min_box"),
    ],
)
def test_unsegmentable_image_falls_back_to_whole_image(img: np.ndarray, reason: str) -> None:
    boxes, why = selective_search(img, min_box=8)
    assert reason in why
    assert boxes.tolist() == [[0, 0, img.shape[1], img.shape[0]]]


def test_selective_search_rejects_non_rgb_arrays() -> None:
    with pytest.raises(ValueError, match=r"img must be uint8 \(H, W, 3\) RGB, got uint8 \(8, 8\)"):
        selective_search(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        selective_search(np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA"])
def test_any_pil_mode_is_converted(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"im.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.fromarray(_structured()).convert(mode).save(path)
    assert load_rgb(path).shape == (48, 48, 3)
    res = image_proposals(str(path), OPTS, None)
    assert res["size"] == (40, 40) and len(res["boxes"]) >= 1


def test_undecodable_file_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg.*cannot be decoded"):
        load_rgb(bad)


def test_per_image_cache_is_keyed_by_file_and_options(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_structured()).save(path)
    cache = tmp_path / "cache"
    cache.mkdir()
    first = image_proposals(str(path), OPTS, str(cache))
    again = image_proposals(str(path), OPTS, str(cache))
    assert not first["cached"] and again["cached"] and np.array_equal(first["boxes"], again["boxes"])
    other = image_proposals(str(path), {**OPTS, "max_proposals": 2}, str(cache))
    assert not other["cached"] and len(other["boxes"]) <= 2
    Image.fromarray(_structured()[::-1].copy()).save(path)  # a new file under the same name
    assert not image_proposals(str(path), OPTS, str(cache))["cached"]
    assert len(list(cache.glob("*.npz"))) == 3


def test_parallel_workers_match_serial(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "s", per_class={"train": 2, "val": 1})
    images = list_images(root)
    one = compute_proposals(images, OPTS, cache_dir=None, workers=1, progress=False)
    two = compute_proposals(images, OPTS, cache_dir=None, workers=2, progress=False)
    assert torch.equal(one["boxes"], two["boxes"]) and torch.equal(one["offsets"], two["offsets"])
    assert one["stats"]["images"] == 9 and one["sizes"].tolist() == [[40, 40]] * 9
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        compute_proposals(images, OPTS, cache_dir=None, workers=0)


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither Flowers-102"):
        list_images(tmp_path / "empty")
    root = make_folder(tmp_path / "s", per_class={"train": 3, "val": 2})
    sub = list_images(root, limit_per_class=1, classes=2)
    assert sub.num_classes == 2 and sub.labels == [0, 1, 0, 1] and sub.splits == ["train"] * 2 + ["val"] * 2


def test_hook_must_name_a_layer() -> None:
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"no layer named 'features\.3'.*close names"):
        HookedClassifier(body, "features.3", num_classes=2)
    with pytest.raises(ValueError, match=r"layer '2' must output a \(B, C, h, w\) feature map, got \(1, 4\)"):
        HookedClassifier(body, "2", num_classes=2)
    with pytest.raises(ValueError, match="backbone: unknown name 'vgg'"):
        build_backbone("vgg", "x", num_classes=2)


def test_timm_backbone_with_a_hook() -> None:
    net = build_backbone("timm-scratch:test_efficientnet", "blocks.1", num_classes=3)
    out = net.forward_all(torch.rand(2, 3, 32, 32))
    assert out["logits"].shape == (2, 3) and out["mid"].shape[:2] == (2, net.mid_channels)
    out["logits"].sum().backward()
    assert net.head.weight.grad is not None
    with pytest.raises(ValueError, match="no layer named 'blocks.9'"):
        build_backbone("timm-scratch:test_efficientnet", "blocks.9", num_classes=3)


def test_spectral_clusters_follow_similarity() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 2, generator=g)
    # filters 0-2 follow signal 0, filters 3-5 follow signal 1
    resp = torch.cat([base[:, :1].repeat(1, 3), base[:, 1:].repeat(1, 3)], 1) + 0.05 * torch.randn(
        200, 6, generator=g
    )
    body = nn.Sequential(nn.Conv2d(3, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = HookedClassifier(body, "0", num_classes=2)
    lab = cluster_filters(filter_similarity(net, resp), 2)
    assert len(set(lab[:3].tolist())) == 1 and len(set(lab[3:].tolist())) == 1 and lab[0] != lab[3]
    scores = detector_scores(resp, lab, resp.mean(0), resp.std(0))
    assert torch.corrcoef(torch.stack([scores[:, int(lab[0])], base[:, 0]]))[0, 1] > 0.99
    with pytest.raises(ValueError, match=r"parts must lie in \[1, 6\]"):
        cluster_filters(filter_similarity(net, resp), 7)
    sim_w = filter_similarity(net, kind="weight")
    assert torch.allclose(sim_w.diagonal(), torch.ones(6))
    pooled = HookedClassifier(body, "1", num_classes=2)
    with pytest.raises(ValueError, match="no ungrouped Conv2d"):
        filter_similarity(pooled, kind="weight")


def test_fusion_weight_is_chosen_on_validation() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    obj = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]])  # right on 0 and 2
    part = torch.tensor([[0.4, 0.6], [0.1, 0.9], [0.45, 0.55], [0.7, 0.3]])  # right on 1, 2 and 3
    a, curve = choose_weight(obj, part, labels, grid=5)
    assert len(curve) == 5 and dict(curve)[a] == max(t for _, t in curve) == 100.0
    assert 0.0 < a < 1.0


def test_cli_runs_a_stage_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_folder(tmp_path / "s", per_class={"train": 2, "val": 1})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data_dir: {root}\nout: {tmp_path / 'run'}\nimage_size: 40\nmax_proposals: 3\nmin_box: 8\n"
    )
    assert main(["pipeline", "two-level", "--config", str(cfg), "--stage", "proposals", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["proposals"]["images"] == 9
    assert (
        main(["pipeline", "two-level", "--config", str(cfg), "--stage", "filter", "--set", "max_proposals=2"])
        == 2
    )
    assert "stage 'proposals'" in capsys.readouterr().err
    assert main(["pipeline", "two-level", "--config", str(cfg), "--set", "bogus=1"]) == 2
    assert "unknown two-level config key(s) ['bogus']" in capsys.readouterr().err


def test_run_rejects_a_factory_of_the_wrong_type(tmp_path: Path) -> None:
    from two_level_helpers import tiny_config

    root = make_folder(tmp_path / "s", per_class={"train": 1, "val": 1})
    cfg = tiny_config(root, tmp_path / "run")
    run_two_level(cfg, "proposals", progress=False)
    with pytest.raises(TypeError, match="make_net must return a HookedClassifier, got Linear"):
        run_two_level(cfg, "filter", make_net=lambda k: nn.Linear(2, k), progress=False)
