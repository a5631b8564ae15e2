"""Attention recorders and pictures: a library over tensors and modules (no data loading, no engine).

Reads ``visattn.functional``, ``visattn.attention`` and ``visattn.models`` only; the HTML report that
loads runs is the app ``visattn.report``.
"""

from visattn.viz.canvases import canvas_overlays, plot_canvases
from visattn.viz.excitation import excitation_stats, plot_excitations
from visattn.viz.gains import dasnet_report, gain_trajectories, plot_changed_predictions, plot_gain_evolution
from visattn.viz.glimpses import glimpse_episode, plot_glimpses, save_glimpse_gif
from visattn.viz.gradcam import gradcam
from visattn.viz.localization import centre_prior, localization_scores, mass_in_box, pointing_game
from visattn.viz.recorder import AttentionRecorder, TapRecord, find_taps, record_attention
from visattn.viz.render import attention_views, overlay_grid, plot_class_weights, plot_glimpse_path
from visattn.viz.tensorboard import AttentionImageLogger, write_attention_images
from visattn.viz.views import View, register_view, registered_views
from visattn.viz.warps import capture_warps, grid_to_pixels, plot_warps

__all__ = ["excitation_stats", "plot_excitations", "capture_warps", "grid_to_pixels", "plot_warps"]
__all__ += ["dasnet_report", "gain_trajectories", "plot_changed_predictions", "plot_gain_evolution"]
__all__ += ["glimpse_episode", "plot_glimpses", "save_glimpse_gif"]
__all__ += ["AttentionRecorder", "TapRecord", "find_taps", "record_attention"]
__all__ += ["attention_views", "gradcam", "overlay_grid", "plot_class_weights", "plot_glimpse_path"]
__all__ += ["centre_prior", "localization_scores", "mass_in_box", "pointing_game"]
__all__ += ["AttentionImageLogger", "write_attention_images", "View", "register_view", "registered_views"]
__all__ += ["canvas_overlays", "plot_canvases"]


def __getattr__(name: str):  # deprecated: the report is an app now (``visattn.report``)
    if name == "write_report":
        from visattn._deprecated import warn_moved
        from visattn.report import write_report  # architecture: allowed (deprecation shim)

        warn_moved("visattn.viz.write_report", "visattn.report.write_report")
        return write_report
    raise AttributeError(f"module 'visattn.viz' has no attribute {name!r}")
