"""Deprecated alias of ``visattn.attention._se_fused``: moved to ``visattn.models._se_fused`` (issue 16), beside
the SE-ResNet blocks that use it. Import from there."""

from visattn._deprecated import warn_moved
from visattn.attention.se import excite  # noqa: F401
from visattn.models._se_fused import *  # noqa: F403
from visattn.models._se_fused import (  # noqa: F401
    EVAL_FUSE_MIN_NUMEL,
    AvgSEResidualReLU,
    BNAvgSEResidualReLU,
    BNResidualReLU,
    __all__,
    batch_moments,
    bn_eval_se_residual_relu,
    bn_train_stats,
    can_fuse,
)

warn_moved("visattn.attention._se_fused", "visattn.models._se_fused")
