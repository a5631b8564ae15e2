"""Attention recorders and pictures; reads ``visattn.attention`` and ``visattn.models`` only."""

from visattn.viz.excitation import excitation_stats, plot_excitations
from visattn.viz.gains import dasnet_report, gain_trajectories, plot_changed_predictions, plot_gain_evolution
from visattn.viz.glimpses import glimpse_episode, plot_glimpses, save_glimpse_gif
from visattn.viz.warps import capture_warps, grid_to_pixels, plot_warps

__all__ = ["excitation_stats", "plot_excitations", "capture_warps", "grid_to_pixels", "plot_warps"]
__all__ += ["dasnet_report", "gain_trajectories", "plot_changed_predictions", "plot_gain_evolution"]
__all__ += ["glimpse_episode", "plot_glimpses", "save_glimpse_gif"]
