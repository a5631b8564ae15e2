"""The two-level attention pipeline (Xiao et al., "The Application of Two-level Attention Models in Deep
Convolutional Neural Network for Fine-grained Image Classification", CVPR 2015), stage by stage.

Stages, in order, each cached on disk under ``cfg.out`` (see :mod:`.stages`) so any one can be
re-run alone: ``proposals`` (bottom-up, selective search) -> ``filter`` (FilterNet fine-tuned on
whole images, scores every proposal, keeps the confident ones) -> ``domain`` (DomainNet fine-tuned on
the kept patches; object-level prediction) -> ``part`` (mid-layer filters clustered into part
detectors; part-level classifier) -> ``fuse`` (object/part weight chosen on validation; report).

Python use with any backbone: ``run_two_level(cfg, make_net=lambda k: HookedClassifier(body, "layer",
num_classes=k))``; then ``cfg.backbone`` should name that backbone, since it is part of the cache key.

>>> from visattn.pipelines.two_level.config import STAGES
>>> STAGES
('proposals', 'filter', 'domain', 'part', 'fuse')
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from visattn._validate import check_choice
from visattn.pipelines.two_level.backbone import HookedClassifier, build_backbone
from visattn.pipelines.two_level.config import STAGES, TwoLevelConfig
from visattn.pipelines.two_level.fusion import choose_weight, top1
from visattn.pipelines.two_level.images import ImageList, list_images
from visattn.pipelines.two_level.stages import load_stage, save_stage

__all__ = ["run_two_level", "pipeline_images", "write_patch_figures"]


def pipeline_images(cfg: TwoLevelConfig) -> ImageList:
    """The config's images; the test split only when ``cfg.score_test``."""
    images = list_images(cfg.data_dir, limit_per_class=cfg.limit_per_class, classes=cfg.classes)
    if not cfg.score_test:
        keep = [i for i, s in enumerate(images.splits) if s != "test"]
        images = ImageList([images.paths[i] for i in keep], [images.labels[i] for i in keep],
                           [images.splits[i] for i in keep], images.num_classes)  # fmt: skip
    return images


def write_patch_figures(
    cfg: TwoLevelConfig,
    images: ImageList,
    prop: dict[str, Any],
    filt: dict[str, Any],
    part: dict[str, Any],
    *,
    split: str = "val",
    count: int = 4,
) -> list[str]:
    """PNG figures (proposals, kept patches, part patches) of the first ``count`` images of ``split``."""
    from visattn.pipelines.two_level.images import load_rgb, resize_short, to_chw
    from visattn.pipelines.two_level.object import split_boxes
    from visattn.viz.patches import plot_patch_attention

    out_dir = Path(cfg.out) / "patches"
    out_dir.mkdir(parents=True, exist_ok=True)
    props = split_boxes(prop["boxes"], prop["offsets"])
    kept = split_boxes(filt["kept_boxes"], filt["kept_offsets"])
    written = []
    for i in images.index(split)[:count]:
        img = to_chw(resize_short(load_rgb(images.paths[i]), cfg.image_size))
        fig = plot_patch_attention(img, props[i], kept[i], part["chosen_boxes"][i],
                                   title=f"{split} image {Path(images.paths[i]).name}, class {images.labels[i]}")  # fmt: skip
        path = out_dir / f"{split}_{i:05d}.png"
        fig.savefig(path, dpi=90)
        written.append(str(path))
    return written


def _fuse(
    cfg: TwoLevelConfig, images: ImageList, filt: dict[str, Any], dom: dict[str, Any], part: dict[str, Any]
) -> dict[str, Any]:
    labels = torch.tensor(images.labels)
    val = images.index("val")
    obj, prt = dom["object_probs"], part["part_probs"]
    a, curve = choose_weight(obj[val], prt[val], labels[val], grid=cfg.fuse_grid)
    fused = a * obj + (1 - a) * prt
    res: dict[str, Any] = {
        "object_weight": a,
        "val_curve": curve,
        "val_top1": {
            "whole_image": top1(filt["whole_probs"][val], labels[val]),
            "object": top1(obj[val], labels[val]),
            "part": top1(prt[val], labels[val]),
            "fused": top1(fused[val], labels[val]),
        },
        "n_val": len(val),
        "whole_image_fallback": filt["stats"]["whole_image_fallback"],
    }
    test = images.index("test")
    if cfg.score_test and test:
        res["test_top1"] = {
            "whole_image": top1(filt["whole_probs"][test], labels[test]),
            "object": top1(obj[test], labels[test]),
            "part": top1(prt[test], labels[test]),
            "fused": top1(fused[test], labels[test]),
        }
        res["n_test"] = len(test)
    return res


def run_two_level(
    cfg: TwoLevelConfig,
    stage: str = "all",
    *,
    workers: int = 1,
    make_net: Callable[[int], HookedClassifier] | None = None,
    progress: bool = True,
    figures: int = 4,
) -> dict[str, Any]:
    """Run one stage (reading the cached earlier ones) or ``"all"``; returns ``{stage: stats}``.

    ``make_net(num_classes)`` builds the CNN (default: ``build_backbone(cfg.backbone, cfg.hook)``).
    The ``fuse`` stage also writes ``OUT/report.json`` and ``figures`` PNGs of validation images.

    Raises:
        StageCacheError: an earlier stage's cache is missing, stale or from other options (named).
    """
    check_choice(stage, "stage", (*STAGES, "all"))
    images = pipeline_images(cfg)
    digest = images.digest()
    todo = STAGES if stage == "all" else (stage,)

    def net() -> HookedClassifier:
        torch.manual_seed(cfg.seed)
        m = (
            make_net(images.num_classes)
            if make_net
            else build_backbone(cfg.backbone, cfg.hook, num_classes=images.num_classes)
        )
        if not isinstance(m, HookedClassifier):
            raise TypeError(f"make_net must return a HookedClassifier, got {type(m).__name__}")
        return m.to(memory_format=torch.channels_last)

    def load(s: str) -> dict[str, Any]:
        for earlier in STAGES[: STAGES.index(s)]:  # the whole chain must be current, not just the last link
            load_stage(cfg, earlier, first_inputs=digest, check_only=True)
        return load_stage(cfg, s, first_inputs=digest)

    report: dict[str, Any] = {}
    for s in todo:
        t0, c0 = time.perf_counter(), time.process_time()
        if s == "proposals":
            from visattn.pipelines.two_level.proposals import compute_proposals

            opts = {k: getattr(cfg, k) for k in ("image_size", "ss_mode", "max_proposals", "min_box")}
            payload = compute_proposals(images, opts, cache_dir=Path(cfg.out) / "proposals_cache", workers=workers,
                                        progress=progress)  # fmt: skip
        elif s == "filter":
            from visattn.pipelines.two_level.object import run_filter

            payload = run_filter(cfg, images, load("proposals"), net())
        elif s == "domain":
            from visattn.pipelines.two_level.object import run_domain

            payload = run_domain(cfg, images, load("filter"), net())
        elif s == "part":
            from visattn.pipelines.two_level.part import run_part

            payload = run_part(cfg, images, load("filter"), load("domain"), net())
        else:
            filt, dom, part = load("filter"), load("domain"), load("part")
            payload = {"stats": _fuse(cfg, images, filt, dom, part)}
            if figures:
                payload["stats"]["figures"] = write_patch_figures(cfg, images, load("proposals"), filt, part,
                                                                  count=figures)  # fmt: skip
        payload["stats"]["stage_seconds"] = time.perf_counter() - t0
        # CPU time of this process (selective search in worker processes, ``workers > 1``, is not in it)
        payload["stats"]["stage_cpu_seconds"] = time.process_time() - c0
        save_stage(cfg, s, payload, first_inputs=digest)
        report[s] = payload["stats"]
        if s == "fuse":
            (Path(cfg.out) / "report.json").write_text(json.dumps(payload["stats"], indent=1))
    return report
