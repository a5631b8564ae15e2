"""Geometry shared by attention modules: sampling grids, warps, batched crops.

Convention (``../shared/STYLE.md`` rule 4): ``(x, y)`` order, ``[-1, 1]`` range, grids map
output to input coordinates, ``align_corners`` stated per function.
"""

from visattn.functional.affine import affine_rotation, compose_affine, residual_rotation
from visattn.functional.glimpse import (
    GLIMPSE_PADDING_MODES,
    GlimpsePyramid,
    extract_glimpses,
    extract_glimpses_direct,
    glimpse_boxes,
    glimpse_pyramid,
    glimpse_sides,
    location_to_pixels,
)
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
    "affine_rotation",
    "compose_affine",
    "residual_rotation",
    "GLIMPSE_PADDING_MODES",
    "GlimpsePyramid",
    "extract_glimpses",
    "extract_glimpses_direct",
    "glimpse_boxes",
    "glimpse_pyramid",
    "glimpse_sides",
    "location_to_pixels",
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
