"""Deprecated alias of ``visattn.train.reinforce``: moved to ``visattn.learning.reinforce`` (issue 16). Import from there."""

from visattn._deprecated import warn_moved
from visattn.learning.reinforce import *  # noqa: F403
from visattn.learning.reinforce import __all__  # noqa: F401

warn_moved("visattn.train.reinforce", "visattn.learning.reinforce")
