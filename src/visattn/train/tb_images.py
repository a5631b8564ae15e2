"""Deprecated alias of ``visattn.train.tb_images``: moved to ``visattn.viz.tensorboard`` (issue 16). Import from there."""

from visattn._deprecated import warn_moved
from visattn.viz.tensorboard import *  # noqa: F403
from visattn.viz.tensorboard import __all__  # noqa: F401

warn_moved("visattn.train.tb_images", "visattn.viz.tensorboard")
