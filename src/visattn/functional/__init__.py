"""Geometry shared by attention modules: sampling grids, warps, batched crops.

Convention (``../shared/STYLE.md`` rule 4): ``(x, y)`` order, ``[-1, 1]`` range, grids map
output to input coordinates, ``align_corners`` stated per function.
"""

from visattn.functional.warp import (
    PADDING_MODES,
    TRANSFORMS,
    affine_grid,
    attention_grid,
    base_grid,
    identity_params,
    make_grid,
    num_params,
    projective_grid,
    tps_control_points,
    tps_grid,
    warp,
)

__all__ = [
    "PADDING_MODES",
    "TRANSFORMS",
    "affine_grid",
    "attention_grid",
    "base_grid",
    "identity_params",
    "make_grid",
    "num_params",
    "projective_grid",
    "tps_control_points",
    "tps_grid",
    "warp",
]
