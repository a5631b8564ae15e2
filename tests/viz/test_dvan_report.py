"""`visattn report` on a DVAN run draws each step's map on its canvas (tiny synthetic image folder)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from visattn.cli import main
from visattn.models.dvan import DVAN
from visattn.viz import attention_views
from visattn.viz.recorder import record_attention
from visattn.viz.views import matching_records


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
                img[8:24, 8:24, c] = 220  # a class-coloured square
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def _tiny_dvan() -> DVAN:
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU())
    return DVAN(backbone, num_classes=3, feature_layer="1", steps=3, image_size=32, hidden_size=8).eval()


def test_the_dvan_view_claims_the_step_maps_from_the_input_overlay():
    net, x = _tiny_dvan(), torch.randn(4, 3, 32, 32)
    _, recs = record_attention(net, x)
    matched = {spec.name: set(r) for spec, r in matching_records(net, recs)}
    assert matched["dvan canvases"] == {"attention.tap"}
    assert matched.get("overlay", set()) == set()  # not drawn over the whole image, whose frame it is not
    views = {v.title: v for v in attention_views(net, x, show=2, with_gradcam=False)}
    assert views["DVAN attention on its canvases: attention.tap"].png.startswith(b"\x89PNG")


def test_report_of_a_dvan_run_shows_the_maps_on_the_canvases(tmp_path, capsys):
    data = _folder(tmp_path / "shapes")
    run = tmp_path / "dvan_run"
    cfg = {
        "model": "dvan",
        "model_kwargs": {
            "backbone": "resnet20",
            "feature_layer": "layer3",
            "steps": 2,
            "image_size": 32,
            "hidden_size": 16,
        },
        "data": "imagefolder",
        "data_dir": str(data),
        "data_kwargs": {"size": 32},
        "epochs": 1,
        "batch_size": 4,
        "lr": 0.01,
        "device": "cpu",
        "progress": False,
        "out": str(run),
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--images", "3"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "DVAN attention on its canvases: attention.tap" in page
    section = page[page.index("DVAN attention on its canvases") - 2000 :]
    assert re.search(
        r'<img alt="DVAN attention on its canvases: attention.tap" src="data:image/png;base64,', page
    )
    assert "one column per step" in section
