"""`visattn report` on pose runs: predicted skeletons over test crops beside the attention maps."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import yaml
from PIL import Image

from visattn.cli import main

_SIZE, _SCALE = 32, 2  # crop side of the tiny runs; pose_attention_panel's default enlargement


def _train(tmp_path, data, name: str, model: str, **model_kwargs):
    run = tmp_path / name
    cfg = {
        "task": "pose",
        "model": model,
        "model_kwargs": {"width": 8, "depth": 1, "n_stacks": 2, **model_kwargs},
        "data": "lspet",
        "data_dir": str(data),
        "data_kwargs": {"input_size": _SIZE, "heatmap_size": 8},
        "epochs": 1,
        "batch_size": 4,
        "optimizer": "adamw",
        "lr": 0.01,
        "weight_decay": 0.0,
        "device": "cpu",
        "progress": False,
        "out": str(run),
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / f"{name}.yaml")]) == 0
    return run


def _pose_png(page: str) -> np.ndarray:
    m = re.search(
        r'<img alt="predicted skeletons and attention maps" src="data:image/png;base64,([^"]+)"', page
    )
    assert m, "no pose panel on the page"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("RGB"))


def test_report_draws_skeletons_beside_the_holistic_and_part_maps(lsp_folder, tmp_path):
    splits = {"train": [f"im{k:05d}.jpg" for k in range(1, 11)], "val": ["im00011.jpg", "im00012.jpg"]}
    splits["test"] = [f"im{k:05d}.jpg" for k in range(13, 17)]
    data, _ = lsp_folder(16, size=(40, 36), splits=splits)
    mca = _train(tmp_path, data, "mca", "mca_hourglass", n_res=2, crf_iters=1)
    plain = _train(tmp_path, data, "plain", "hourglass")
    out = tmp_path / "r.html"
    assert main(["report", str(mca), str(plain), "--out", str(out), "--images", "3"]) == 0
    page = out.read_text()
    mca_part, plain_part = page.split("<h3>plain", 1)
    # MCA: 2 multi-resolution maps, 2 holistic, 1 part attention (the later stack) beside the skeleton
    caption = re.search(r"columns: ([^<]+)\.</p>", mca_part).group(1).split(", ")
    assert len(caption) == 5 and sum(".attention.tap" in c for c in caption) == 3
    kinds = [c.split(" (")[0] for c in caption]
    assert sorted(kinds) == ["HolisticAttention"] * 2 + ["MultiResolutionAttention"] * 2 + ["PartAttention"]
    img = _pose_png(mca_part)
    assert img.shape == (3 * _SIZE * _SCALE, 6 * _SIZE * _SCALE, 3)  # 3 test people, skeleton + 5 maps
    skeleton = img[:, : _SIZE * _SCALE].reshape(-1, 3)
    limb_colours = {(230, 40, 40), (40, 120, 240), (250, 200, 0)}
    assert any(tuple(p) in limb_colours for p in skeleton[::1].tolist())  # limbs drawn in the first column
    assert "test people 0, 2, 3" in mca_part  # evenly spaced over the 4 test people
    # the plain hourglass records no attention: its panel is the skeleton column only
    assert "none (the model records no attention map)" in plain_part
    assert _pose_png(plain_part).shape == (3 * _SIZE * _SCALE, _SIZE * _SCALE, 3)
    # the metrics table shows the runs' PCK, not an empty top-1 column
    summary = yaml.safe_load((mca / "summary.json").read_text())
    assert f'<td class="">{summary["test_pck"]:.2f}</td>' in page
