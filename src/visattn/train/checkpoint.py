"""Deprecated alias of ``visattn.train.checkpoint``: moved to ``visattn.checkpoint`` (issue 16). Import from there."""

from visattn._deprecated import warn_moved
from visattn.checkpoint import *  # noqa: F403
from visattn.checkpoint import __all__  # noqa: F401

warn_moved("visattn.train.checkpoint", "visattn.checkpoint")
