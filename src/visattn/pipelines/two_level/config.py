"""The typed config of the two-level attention pipeline (Xiao et al., CVPR 2015), one dataclass.

Every field is a YAML key of ``visattn pipeline two-level --config cfg.yaml``. Each stage names the
fields it reads (:data:`STAGE_FIELDS`); a stage's cache records the values of its own fields and of
every stage before it, so changing an option invalidates exactly the stages downstream of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visattn._validate import check_choice, check_positive, check_range

__all__ = [
    "TwoLevelConfig",
    "STAGES",
    "STAGE_FIELDS",
    "stage_options",
    "options_hash",
    "load_two_level_config",
]

STAGES = ("proposals", "filter", "domain", "part", "fuse")


@dataclass
class TwoLevelConfig:
    """Options of every stage. ``out`` holds the stage caches; ``data_dir`` the images.

    ``data_dir`` is a Flowers-102 folder in torchvision's layout (``jpg/``, ``imagelabels.mat``,
    ``setid.mat``; official train / val / test) or an image folder ``train/<class>/*``, ``val/<class>/*``
    and optionally ``test/<class>/*``. ``limit_per_class`` keeps the first N images of each class in
    each split (a subset for quick runs).
    """

    data_dir: str = "../shared/data/flowers-102"
    out: str = "runs/two_level"
    limit_per_class: int | None = None
    classes: int | None = None  # keep only the first N classes (a subset); None = all
    image_size: int = 128  # shorter side of the resized image that proposals and patches come from
    # bottom-up: selective search (OpenCV contrib)
    ss_mode: str = "fast"
    max_proposals: int = 64
    min_box: int = 24  # minimum box side in pixels of the resized image
    # the CNNs
    backbone: str = "efficientnet_lite0"  # or "timm:NAME" / "torchvision:NAME" (pretrained weights)
    hook: str = "_blocks.10"  # the mid-level layer whose filters become part detectors
    patch_size: int = 64
    batch_size: int = 32
    lr: float = 3e-4  # the body; the new head gets 10x (the SE retrofit benchmark's recipe)
    weight_decay: float = 0.01
    seed: int = 0
    # object level
    filter_epochs: int = 6
    filter_threshold: float = 0.2  # keep a patch when the FilterNet's best class probability >= this
    domain_epochs: int = 2
    max_patches_per_image: int = 8  # kept patches per training image used to fine-tune the DomainNet
    # part level
    parts: int = 3
    part_similarity: str = "activation"  # "activation" (correlation over patches) or "weight" (cosine)
    part_c: float = 1.0  # inverse L2 strength of the part-level logistic regression
    # fusion
    fuse_grid: int = 11
    score_test: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values; raise ``ValueError``/``TypeError`` naming the field and the value."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            base = want.split("|")[0].strip()
            if v is None and "None" in want:
                continue
            types: Any = {"int": int, "float": (int, float), "str": str, "bool": bool}[base]
            if not isinstance(v, types) or (isinstance(v, bool) and base != "bool"):
                raise TypeError(f"config key {f.name!r} must be {want}, got {type(v).__name__} {v!r}")
        for name in (
            "image_size",
            "max_proposals",
            "patch_size",
            "batch_size",
            "parts",
            "max_patches_per_image",
        ):
            check_positive(getattr(self, name), name, integer=True)
        for name in ("filter_epochs", "domain_epochs", "min_box"):
            check_positive(getattr(self, name), name, integer=True, allow_zero=True)
        for name in ("limit_per_class", "classes"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name, integer=True)
        check_positive(self.lr, "lr")
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        check_positive(self.part_c, "part_c")
        check_range(self.filter_threshold, "filter_threshold", 0.0, 1.0)
        check_choice(self.ss_mode, "ss_mode", ("fast", "quality", "single"))
        check_choice(self.part_similarity, "part_similarity", ("activation", "weight"))
        if self.fuse_grid < 2:
            raise ValueError(f"fuse_grid must be >= 2 (weights 0..1), got {self.fuse_grid}")
        if self.min_box > self.image_size:
            raise ValueError(f"min_box {self.min_box} exceeds image_size {self.image_size}")


# The fields each stage reads; a stage's cache key holds these plus every earlier stage's.
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "proposals": ("data_dir", "limit_per_class", "classes", "score_test", "image_size", "ss_mode", "max_proposals",
                  "min_box"),
    "filter": ("backbone", "patch_size", "batch_size", "lr", "weight_decay", "seed", "filter_epochs",
               "filter_threshold"),
    "domain": ("hook", "domain_epochs", "max_patches_per_image"),
    "part": ("parts", "part_similarity", "part_c"),
    "fuse": ("fuse_grid",),
}  # fmt: skip


def stage_options(cfg: TwoLevelConfig, stage: str) -> dict[str, Any]:
    """The option values ``stage`` depends on: its own fields and those of every earlier stage.

    >>> sorted(stage_options(TwoLevelConfig(), "proposals"))[:3]
    ['classes', 'data_dir', 'image_size']
    """
    check_choice(stage, "stage", STAGES)
    out: dict[str, Any] = {}
    for s in STAGES[: STAGES.index(stage) + 1]:
        out.update({k: getattr(cfg, k) for k in STAGE_FIELDS[s]})
    return out


def options_hash(options: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able dict (sorted keys)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_two_level_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TwoLevelConfig:
    """Read a YAML file of :class:`TwoLevelConfig` fields (unknown keys raise ``ValueError`` naming them)."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--config: file {str(p)!r} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"--config: file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    data.update(overrides or {})
    known = {f.name for f in dataclasses.fields(TwoLevelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown two-level config key(s) {unknown}; valid keys: {sorted(known)}")
    return TwoLevelConfig(**data)
