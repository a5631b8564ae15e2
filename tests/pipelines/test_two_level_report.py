"""The two-level run folder in the HTML report: its patches (proposals, kept, parts) and its accuracies."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from two_level_helpers import make_folder, tiny_config, tiny_net

from visattn.pipelines.two_level import StageCacheError, run_two_level
from visattn.pipelines.two_level.figures import is_two_level_run, patch_views, run_config
from visattn.pipelines.two_level.pipeline import pipeline_images
from visattn.pipelines.two_level.stages import load_stage
from visattn.report import write_report


@pytest.fixture
def scored_run(tmp_path: Path) -> Path:
    """A tiny two-level run that scored its test split (3 test images per class)."""
    data = make_folder(tmp_path / "shapes", per_class={"train": 4, "val": 2, "test": 3})
    cfg = tiny_config(data, tmp_path / "run", score_test=True)
    run_two_level(cfg, "all", make_net=tiny_net, progress=False, figures=0)
    return tmp_path / "run"


def _pngs(page: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(b)))
        for b in re.findall(r"data:image/png;base64,([^\"]+)", page)
    ]


def test_patch_views_show_the_cached_boxes_of_test_images(scored_run: Path) -> None:
    assert is_two_level_run(scored_run) and not is_two_level_run(scored_run.parent)
    cfg = run_config(scored_run)
    assert cfg.score_test and cfg.out == str(scored_run) and cfg.parts == 2
    views = patch_views(scored_run, count=4)
    assert len(views) == 4 and all(v["title"].startswith("test image") for v in views)
    images = pipeline_images(cfg)
    test = images.index("test")
    assert [v["index"] for v in views] == [test[0], test[3], test[5], test[8]]  # evenly spaced over 9
    digest = images.digest()
    p = load_stage(cfg, "proposals", first_inputs=digest)
    f = load_stage(cfg, "filter", first_inputs=digest)
    for v in views:
        i = v["index"]
        n_prop = int(p["offsets"][i + 1] - p["offsets"][i])
        n_kept = int(f["kept_offsets"][i + 1] - f["kept_offsets"][i])
        assert v["counts"] == (n_prop, n_kept, 2)
        img = Image.open(io.BytesIO(v["png"]))
        assert (
            img.size[0] > 200 and len(np.unique(np.asarray(img.convert("L")))) > 10
        )  # a drawn figure, not blank
    assert [v["title"].split()[0] for v in patch_views(scored_run, count=2, split="val")] == ["val", "val"]


def test_report_holds_the_two_level_section(scored_run: Path, tmp_path: Path) -> None:
    page = write_report([str(scored_run)], tmp_path / "report.html", images=3).read_text()
    summary = json.loads((scored_run / "report.json").read_text())
    assert "<h2>Two-level attention</h2>" in page and "two-level attention pipeline" in page
    assert len(_pngs(page)) == 3 and all(im.size[0] > 200 for im in _pngs(page))
    assert page.count("part detectors&#x27; patches") == 3
    fused_row = re.search(
        r"<td class=\"l\">fused</td><td class=\"\">([\d.]+)</td><td class=\"\">([\d.]+)</td>", page
    )
    assert fused_row is not None
    assert float(fused_row.group(1)) == pytest.approx(summary["val_top1"]["fused"], abs=0.006)
    assert float(fused_row.group(2)) == pytest.approx(summary["test_top1"]["fused"], abs=0.006)


def test_a_stale_run_gets_a_note_naming_the_stage(scored_run: Path, tmp_path: Path) -> None:
    part = torch.load(scored_run / "part.pt", weights_only=True)
    part["chosen_boxes"] = part["chosen_boxes"].flip(0)
    torch.save(part, scored_run / "part.pt")  # altered after its manifest was written
    with pytest.raises(StageCacheError, match="stage 'part'.*does not match its manifest"):
        patch_views(scored_run)
    page = write_report([str(scored_run)], tmp_path / "report.html").read_text()
    assert "patch pictures unavailable: StageCacheError: stage &#x27;part&#x27;" in page
    assert not _pngs(page)
    with pytest.raises(ValueError, match="count"):
        patch_views(scored_run, count=0)
