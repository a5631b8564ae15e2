"""The HTML report: built from run folders, checked in headless Chromium (Debian's ``chromium``).

The page must load with no request at all (self-contained), every image must decode with a
non-zero size, and a screenshot must not be blank. Chromium is driven with its own ``--dump-dom``
(after a checker script, injected into a copy of the page, has written its verdict into
``document.title``) and ``--screenshot``. Install: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from visattn.attention._tap import AttentionTap
from visattn.data import DatasetSplits, ImageTensorDataset
from visattn.data._registry import _DATASETS
from visattn.models import InputSpec
from visattn.models._registry import _MODELS
from visattn.report import fixed_test_batch, read_run, spread_indices, write_report

TOY_MODEL, TOY_DATA = "_atlas_toy_net", "_atlas_toy_boxes"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHECKER = """<script>
window.__errs = [];
window.addEventListener("error", function (e) {
  window.__errs.push(String((e.target && (e.target.src || e.target.href)) || e.message));
}, true);
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0); });
  var req = performance.getEntriesByType("resource").map(function (r) { return r.name; });
  document.title = "ATLAS-CHECK " + JSON.stringify({images: imgs.length, bad: bad.length,
    requests: req, errors: window.__errs});
});
</script>"""


class ToyNet(nn.Module):
    """A toy classifier emitting a spatial mask, channel gates, a warp, glimpse locations and gains."""

    def __init__(self, *, num_classes: int = 4, in_chans: int = 1) -> None:
        super().__init__()
        self.input_spec = InputSpec(in_chans, (8, 8))
        self.conv = nn.Conv2d(in_chans, 6, 3, padding=1)
        self.mask = AttentionTap("spatial")
        self.gate = AttentionTap("channel")
        self.warp = AttentionTap("warp")
        self.where = AttentionTap("location")
        self.gains = AttentionTap("gains")
        self.head = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.conv(x))
        f = f * self.mask(torch.sigmoid(x.mean(1, keepdim=True)))
        f = f * self.gate(torch.sigmoid(f.mean((2, 3))))[:, :, None, None]
        theta = torch.tensor([[0.6, 0.0, 0.2], [0.0, 0.6, -0.2]]).expand(x.shape[0], 2, 3)
        f = F.grid_sample(
            f, self.warp(F.affine_grid(theta, list(f.shape), align_corners=False)), align_corners=False
        )
        for t in range(3):
            self.where(torch.tanh(f[:, t : t + 2].mean((2, 3))))
        pooled = f.mean((2, 3))
        return {"logits": self.head(pooled * self.gains(torch.sigmoid(pooled)))}


def _toy_data(*, data_dir=None, download=False, seed=0, n=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x0, y0 = torch.randint(0, 20, (n,), generator=g), torch.randint(0, 20, (n,), generator=g)
    for i in range(n):  # test data only
        x[i, 0, y0[i] : y0[i] + 8, x0[i] : x0[i] + 8] = 255
    y = (x0 >= 10).long() + 2 * (y0 >= 10).long()
    ds = ImageTensorDataset(x, y)
    boxes = torch.stack([x0, y0, x0 + 8, y0 + 8], 1)
    return DatasetSplits(
        TOY_DATA, ds, ds, 4, 1, (28, 28), (0.1,), (0.3,), ["tl", "tr", "bl", "br"], {"test_boxes": boxes}
    )


@pytest.fixture
def toy_registry():
    """Register the toy model and dataset for one test, then take them out again."""
    _MODELS.register(TOY_MODEL)(lambda **kw: ToyNet(**kw))
    _DATASETS.register(TOY_DATA)(_toy_data)
    yield
    del _MODELS._entries[TOY_MODEL], _DATASETS._entries[TOY_DATA]


def _run_dir(root: Path, name: str, model: str, net: nn.Module | None, epochs: int = 3) -> Path:
    d = root / name
    d.mkdir()
    cfg = {"model": model, "data": TOY_DATA, "seed": 0, "model_kwargs": {}, "data_kwargs": {}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    hist = [
        {"epoch": e + 1, "train_loss": 1.5 / (e + 1), "val_loss": 1.6 / (e + 1), "val_top1": 40.0 + 10 * e}
        for e in range(epochs)
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
    summary = {
        "model": model,
        "data": TOY_DATA,
        "params": 123,
        "best_val_top1": hist[-1]["val_top1"],
        "test_top1": 55.5,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    if net is not None:
        torch.save({"model": net.state_dict(), "epoch": epochs}, d / "best.pt")
    return d


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium (Debian's package)")
    return exe


def _check_in_browser(page: Path, tmp: Path) -> dict:
    """Load a copy of ``page`` with the checker injected; return the checker's verdict."""
    probe = tmp / f"probe_{page.stem}.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + CHECKER, 1))
    out = subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r"<title>ATLAS-CHECK (.*?)</title>", out.stdout, re.S)
    assert m, f"the checker did not run; chromium rc={out.returncode}, stderr tail: {out.stderr[-800:]}"
    return json.loads(html.unescape(m.group(1)))


def test_report_renders_in_headless_chromium(tmp_path, toy_registry):
    torch.manual_seed(0)
    runs = [
        _run_dir(tmp_path, "00_toy", TOY_MODEL, ToyNet()),
        _run_dir(tmp_path, "01_toy_no_weights", TOY_MODEL, None, epochs=2),
    ]
    page = write_report(
        runs, tmp_path / "out" / "report.html", images=4, class_images=32, localization_images=40
    )
    text = page.read_text()
    # self-contained: no reference leaves the page
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "<script" not in text
    # content: metrics, curves, every view of the toy's taps, localisation rows, the missing weights noted
    for needle in (
        "55.50",
        "learning curves",
        "where it looks",
        "glimpse path: where",
        "filter gains: gains",
        "channel weights",
        "pointing game",
        "attention: mask",
        "grad-cam",
        "centre prior",
        "no best.pt or last.pt",
    ):
        assert needle in text, needle
    n_img = text.count("<img ")
    assert n_img >= 5

    verdict = _check_in_browser(page, tmp_path)
    assert verdict == {"images": n_img, "bad": 0, "requests": [], "errors": []}

    shot = tmp_path / "shot.png"
    res = subprocess.run(
        [
            _chromium(),
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            f"--screenshot={shot}",
            "--window-size=1200,1400",
            "--hide-scrollbars",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), res.stderr[-800:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1400, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text, tables and plots, not a blank page


def test_the_browser_check_catches_broken_pages(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>x</title></head><body>"
        '<img src="data:image/png;base64,AAAA"><img src="http://example.invalid/a.png"></body></html>'
    )
    verdict = _check_in_browser(bad, tmp_path)
    assert verdict["images"] == 2 and verdict["bad"] == 2
    assert verdict["requests"] == ["http://example.invalid/a.png"]


def test_load_run_and_argument_errors(tmp_path, toy_registry):
    d = _run_dir(tmp_path, "run", TOY_MODEL, None)
    rec = read_run(d)
    assert rec.config["model"] == TOY_MODEL and len(rec.history) == 3 and rec.weights is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        write_report([tmp_path / "nowhere"], tmp_path / "r.html")
    with pytest.raises(ValueError, match="run_dirs"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(ValueError, match="images"):
        write_report([d], tmp_path / "r.html", images=0)


def test_fixed_test_images_spread_over_the_classes_of_a_class_sorted_set():
    """Issue 21 case 10: the first images shown are not all of class 0 of a class-sorted test set."""
    y = torch.arange(5).repeat_interleave(40)  # 200 images, sorted by class
    x = torch.randint(0, 256, (200, 1, 8, 8), dtype=torch.uint8)
    ds = ImageTensorDataset(x, y)
    splits = DatasetSplits("sorted", ds, ds, 5, 1, (8, 8), (0.5,), (0.5,))
    xb, yb, idx, boxes = fixed_test_batch(splits, 6)
    assert xb.shape == (6, 1, 8, 8) and boxes is None
    assert yb[:5].tolist() == [0, 1, 2, 3, 4] and yb.tolist() == y[idx].tolist()
    # the report draws its 256-image batch and shows the first few: still one per class
    _, yb, idx, _ = fixed_test_batch(splits, 256)
    assert len(idx) == 200 == len(set(idx.tolist())) and yb[:5].tolist() == [0, 1, 2, 3, 4]
    # evenly spaced within a class: class 0 of 40 images, 2 picks -> its first and last
    assert spread_indices(y, 10)[[0, 5]].tolist() == [0, 39]
    # a class short of images gives its share to the others
    few = torch.tensor([0] * 9 + [1])
    assert torch.bincount(few[spread_indices(few, 6)]).tolist() == [5, 1]
