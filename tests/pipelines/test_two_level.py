"""The two-level attention pipeline end to end on a tiny synthetic folder, and its cache validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from two_level_helpers import tiny_config, tiny_net

from visattn.pipelines.two_level import STAGES, StageCacheError, TwoLevelConfig, run_two_level
from visattn.pipelines.two_level.stages import load_stage


def _run(cfg: TwoLevelConfig, stage: str = "all", **kw):
    return run_two_level(cfg, stage, make_net=tiny_net, progress=False, **kw)


def test_all_stages_run_and_cache(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    report = _run(cfg, figures=1)
    assert list(report) == list(STAGES)
    digest = None
    for s in STAGES:
        assert (tmp_path / "run" / f"{s}.pt").is_file() and (tmp_path / "run" / f"{s}.json").is_file()
    prop = report["proposals"]
    assert prop["images"] == 18 and 0 < prop["proposals"] <= 18 * 6
    filt = report["filter"]
    assert filt["scored_patches"] == prop["proposals"]
    # threshold 0 keeps every proposal, so no image falls back to the whole image
    assert filt["kept_patches"] == prop["proposals"] and filt["whole_image_fallback"] == 0
    part = report["part"]
    assert sum(part["cluster_sizes"]) == 8 and len(part["cluster_sizes"]) == 2
    fuse = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(fuse["val_top1"]) == {"whole_image", "object", "part", "fused"}
    assert 0.0 <= fuse["object_weight"] <= 1.0 and fuse["n_val"] == 6 and "test_top1" not in fuse
    # the fused accuracy is the best point of the validation curve
    assert fuse["val_top1"]["fused"] == max(t for _, t in fuse["val_curve"])
    assert len(fuse["figures"]) == 1 and Path(fuse["figures"][0]).is_file()
    del digest


def test_part_boxes_come_from_kept_patches(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    _run(cfg, figures=0)
    from visattn.pipelines.two_level.pipeline import pipeline_images

    digest = pipeline_images(cfg).digest()
    filt = load_stage(cfg, "filter", first_inputs=digest)
    part = load_stage(cfg, "part", first_inputs=digest)
    dom = load_stage(cfg, "domain", first_inputs=digest)
    offs = filt["kept_offsets"]
    assert part["chosen_boxes"].shape == (18, 2, 4)
    assert dom["responses"].shape == (int(offs[-1]), 8)
    for i in range(18):
        kept = {tuple(b) for b in filt["kept_boxes"][int(offs[i]) : int(offs[i + 1])].tolist()}
        assert {tuple(b) for b in part["chosen_boxes"][i].tolist()} <= kept
    probs = dom["object_probs"]
    assert torch.allclose(probs.sum(1), torch.ones(18), atol=1e-5)


def test_stage_alone_needs_its_input(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    with pytest.raises(StageCacheError, match="stage 'proposals': no cache"):
        _run(cfg, "filter")


def test_cache_from_other_options_is_an_error_naming_the_stage(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    _run(cfg, "proposals")
    _run(cfg, "filter")
    other = tiny_config(shapes_dir, tmp_path / "run", max_proposals=4)
    with pytest.raises(
        StageCacheError, match=r"stage 'proposals'.*other options.*max_proposals: cache 6 vs config 4"
    ):
        _run(other, "filter")
    # a filter option invalidates the filter cache for the domain stage, not the proposals
    other = tiny_config(shapes_dir, tmp_path / "run", filter_threshold=0.5)
    with pytest.raises(StageCacheError, match=r"stage 'filter'.*filter_threshold"):
        _run(other, "domain")


def test_rerun_upstream_makes_downstream_stale(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    _run(cfg, "proposals")
    _run(cfg, "filter")
    _run(cfg, "domain")
    cfg2 = tiny_config(shapes_dir, tmp_path / "run", seed=1)  # a new filter stage (other seed) ...
    _run(cfg2, "filter")
    with pytest.raises(StageCacheError, match="stage 'domain'.*other options"):
        _run(cfg2, "part")
    _run(cfg, "filter")  # ... and back to the first options: the domain cache's input changed since
    with pytest.raises(StageCacheError, match="stage 'domain'.*stale"):
        _run(cfg, "part")


def test_altered_cache_file_is_refused(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    _run(cfg, "proposals")
    with open(tmp_path / "run" / "proposals.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(StageCacheError, match="stage 'proposals'.*does not match its manifest"):
        _run(cfg, "filter")


def test_new_images_make_proposals_stale(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    _run(cfg, "proposals")
    (shapes_dir / "val" / "class0" / "0.png").write_bytes(
        (shapes_dir / "val" / "class0" / "1.png").read_bytes()
    )
    with pytest.raises(StageCacheError, match="stage 'proposals'.*stale.*image list"):
        _run(cfg, "filter")


def test_no_kept_patch_falls_back_to_whole_image(shapes_dir: Path, tmp_path: Path) -> None:
    # threshold 1.0 keeps no proposal (a softmax over 3 classes never reaches 1 in float32 here)
    cfg = tiny_config(shapes_dir, tmp_path / "run", filter_threshold=1.0)
    report = _run(cfg, "proposals")
    report = _run(cfg, "filter")
    assert report["filter"]["kept_patches"] == 0 and report["filter"]["whole_image_fallback"] == 18
    from visattn.pipelines.two_level.pipeline import pipeline_images

    filt = load_stage(cfg, "filter", first_inputs=pipeline_images(cfg).digest())
    assert filt["kept_boxes"].tolist() == [[0, 0, 40, 40]] * 18
    # the rest of the pipeline runs on the whole images
    rep = _run(cfg, "domain")
    assert rep["domain"]["train_patches"] == 12


def test_unknown_stage_and_bad_config() -> None:
    with pytest.raises(ValueError, match="stage"):
        run_two_level(TwoLevelConfig(), "bogus")
    with pytest.raises(ValueError, match="max_proposals"):
        TwoLevelConfig(max_proposals=0)
    with pytest.raises(TypeError, match="'patch_size' must be int"):
        TwoLevelConfig(patch_size="64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ss_mode"):
        TwoLevelConfig(ss_mode="slow")


def test_a_part_option_reruns_only_the_part_stage(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapes_dir, tmp_path / "run")
    _run(cfg, figures=0)
    filt_before = (tmp_path / "run" / "filter.json").read_text()
    cfg2 = tiny_config(shapes_dir, tmp_path / "run", part_similarity="weight", parts=3)
    with pytest.raises(StageCacheError, match=r"stage 'part'.*parts: cache 2 vs config 3"):
        _run(cfg2, "fuse")
    rep = _run(cfg2, "part")  # reads the filter and domain caches of the first run: still valid
    assert len(rep["part"]["cluster_sizes"]) == 3 and sum(rep["part"]["cluster_sizes"]) == 8
    assert (tmp_path / "run" / "filter.json").read_text() == filt_before
    assert _run(cfg2, "fuse", figures=0)["fuse"]["n_val"] == 6
