"""Two-level attention (Xiao et al., CVPR 2015) as a staged, cached pipeline: bottom-up proposals,
object-level and part-level top-down attention, fusion. See :mod:`.pipeline`."""

from visattn.pipelines.two_level.backbone import HookedClassifier, build_backbone
from visattn.pipelines.two_level.config import STAGES, TwoLevelConfig, load_two_level_config
from visattn.pipelines.two_level.pipeline import run_two_level
from visattn.pipelines.two_level.stages import StageCacheError

__all__ = [
    "HookedClassifier",
    "STAGES",
    "StageCacheError",
    "TwoLevelConfig",
    "build_backbone",
    "load_two_level_config",
    "run_two_level",
]
