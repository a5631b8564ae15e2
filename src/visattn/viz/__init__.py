"""Attention recorders and pictures; reads ``visattn.attention`` and ``visattn.models`` only."""

from visattn.viz.warps import capture_warps, grid_to_pixels, plot_warps

__all__ = ["capture_warps", "grid_to_pixels", "plot_warps"]
