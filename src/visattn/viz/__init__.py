"""Attention recorders and pictures; reads ``visattn.attention`` and ``visattn.models`` only."""

from visattn.viz.excitation import excitation_stats, plot_excitations
from visattn.viz.warps import capture_warps, grid_to_pixels, plot_warps

__all__ = ["excitation_stats", "plot_excitations", "capture_warps", "grid_to_pixels", "plot_warps"]
