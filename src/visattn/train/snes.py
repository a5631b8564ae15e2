"""Deprecated alias of ``visattn.train.snes``: moved to ``visattn.learning.snes`` (issue 16). Import from there."""

from visattn._deprecated import warn_moved
from visattn.learning.snes import *  # noqa: F403
from visattn.learning.snes import __all__  # noqa: F401

warn_moved("visattn.train.snes", "visattn.learning.snes")
