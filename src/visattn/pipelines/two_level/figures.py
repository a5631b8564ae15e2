"""The patches of a finished two-level run folder, for the HTML report (Xiao et al., CVPR 2015, Fig. 5).

A two-level run folder is what ``visattn pipeline two-level`` writes under ``out``: one cache and one
manifest per stage (``proposals.pt``/``.json``, ``filter``, ``domain``, ``part``, ``fuse``). Its
config is rebuilt from the manifests (:func:`run_config`: the ``part`` manifest holds every option the
pictures depend on), and the caches are read through :func:`~.stages.load_stage`, so a stale or
altered cache is a :class:`~.stages.StageCacheError` naming the stage, never a wrong picture.

:func:`patch_views` draws, for images of one split (``"test"`` when the run scored it, else
``"val"``), the three panels of :func:`visattn.viz.patches.plot_patch_attention`: the bottom-up
proposals, the patches the FilterNet kept, and each part detector's chosen patch.

>>> is_two_level_run(".")
False
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from visattn._validate import check_choice, check_positive
from visattn.pipelines.two_level.config import STAGES, TwoLevelConfig
from visattn.pipelines.two_level.stages import StageCacheError, load_stage, stage_paths

__all__ = ["is_two_level_run", "run_config", "run_summary", "patch_views"]

_NEEDED = ("proposals", "filter", "part")  # the stages the pictures read


def is_two_level_run(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a two-level pipeline's ``proposals`` stage manifest."""
    meta = stage_paths(path, "proposals")[1]
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("stage") == "proposals"
    except json.JSONDecodeError:
        return False


def run_config(path: str | Path) -> TwoLevelConfig:
    """The config a run folder was made with, from its latest stage manifest (``out`` = ``path``).

    Raises:
        StageCacheError: the folder holds no manifest of the stages the pictures need (named).
    """
    latest = None
    for s in STAGES:
        if stage_paths(path, s)[1].is_file():
            latest = s
    missing = [s for s in _NEEDED if not stage_paths(path, s)[1].is_file()]
    if latest is None or missing:
        raise StageCacheError(
            f"stage {missing[0] if missing else 'proposals'!r}: {str(path)!r} holds no cache of it; "
            "run `visattn pipeline two-level` to the part stage first"
        )
    options = json.loads(stage_paths(path, latest)[1].read_text())["options"]
    return TwoLevelConfig(**{**options, "out": str(path)})


def run_summary(path: str | Path) -> dict[str, Any]:
    """``OUT/report.json`` (the fuse stage's accuracies per level, weight, fallbacks), or ``{}``."""
    f = Path(path) / "report.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def patch_views(path: str | Path, *, count: int = 4, split: str | None = None) -> list[dict[str, Any]]:
    """Pictures of proposals, kept patches and part patches for ``count`` images of ``split``.

    Args:
        path: a two-level run folder (see :func:`is_two_level_run`).
        count: images drawn, evenly spaced over the split.
        split: ``"train"``, ``"val"`` or ``"test"``; default ``"test"`` when the run scored the test
            split, else ``"val"``.

    Returns:
        one dict per image: ``png`` (bytes), ``title``, ``caption``, ``index`` (position in the run's
        image list), ``counts`` ``(proposals, kept, parts)``.

    Raises:
        StageCacheError: a needed stage's cache is missing, stale or altered (the stage is named).
        ValueError: ``split`` has no image in this run.
    """
    from visattn.pipelines.two_level.images import load_rgb, resize_short, to_chw
    from visattn.pipelines.two_level.object import split_boxes
    from visattn.pipelines.two_level.pipeline import pipeline_images
    from visattn.viz.patches import plot_patch_attention
    from visattn.viz.views import figure_png

    check_positive(count, "count", integer=True)
    cfg = run_config(path)
    split = split or ("test" if cfg.score_test else "val")
    check_choice(split, "split", ("train", "val", "test"))
    images = pipeline_images(cfg)
    digest = images.digest()
    for s in STAGES[: STAGES.index("part")]:  # the whole chain up to the part stage must be current
        load_stage(cfg, s, first_inputs=digest, check_only=True)
    prop = load_stage(cfg, "proposals", first_inputs=digest)
    filt = load_stage(cfg, "filter", first_inputs=digest)
    part = load_stage(cfg, "part", first_inputs=digest)
    idx = images.index(split)
    if not idx:
        raise ValueError(f"split: the run at {str(path)!r} has no {split!r} image")
    picks = [idx[int(j)] for j in torch.linspace(0, len(idx) - 1, min(count, len(idx))).round().long()]
    props = split_boxes(prop["boxes"], prop["offsets"])
    kept = split_boxes(filt["kept_boxes"], filt["kept_offsets"])
    views = []
    for i in picks:
        name = Path(images.paths[i]).name
        img = to_chw(resize_short(load_rgb(images.paths[i]), cfg.image_size))
        parts = part["chosen_boxes"][i]
        fig = plot_patch_attention(
            img, props[i], kept[i], parts, title=f"{split} {name}, class {images.labels[i]}"
        )
        distinct = len({tuple(b) for b in parts.tolist()})
        views.append({
            "png": figure_png(fig),
            "title": f"{split} image {name}",
            "caption": f"class {images.labels[i]}; {len(props[i])} proposals (grey), {len(kept[i])} kept by the "
            f"FilterNet (green), {len(parts)} part detectors' patches ({distinct} distinct boxes)",
            "index": i,
            "counts": (len(props[i]), len(kept[i]), len(parts)),
        })  # fmt: skip
    return views
