"""Attention recorders and pictures; reads ``visattn.attention`` and ``visattn.models`` only."""

from visattn.viz.excitation import excitation_stats, plot_excitations
from visattn.viz.gains import dasnet_report, gain_trajectories, plot_changed_predictions, plot_gain_evolution
from visattn.viz.glimpses import glimpse_episode, plot_glimpses, save_glimpse_gif
from visattn.viz.localization import centre_prior, localization_scores, mass_in_box, pointing_game
from visattn.viz.recorder import AttentionRecorder, TapRecord, find_taps, record_attention
from visattn.viz.render import attention_views, gradcam, overlay_grid, plot_class_weights, plot_glimpse_path
from visattn.viz.report import write_report
from visattn.viz.warps import capture_warps, grid_to_pixels, plot_warps

__all__ = ["excitation_stats", "plot_excitations", "capture_warps", "grid_to_pixels", "plot_warps"]
__all__ += ["dasnet_report", "gain_trajectories", "plot_changed_predictions", "plot_gain_evolution"]
__all__ += ["glimpse_episode", "plot_glimpses", "save_glimpse_gif"]
__all__ += ["AttentionRecorder", "TapRecord", "find_taps", "record_attention"]
__all__ += ["attention_views", "gradcam", "overlay_grid", "plot_class_weights", "plot_glimpse_path"]
__all__ += ["centre_prior", "localization_scores", "mass_in_box", "pointing_game", "write_report"]
