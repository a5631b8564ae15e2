"""Deprecated alias of ``visattn.viz.report``: moved to ``visattn.report`` (issue 16). Import from there.

``load_run`` here is the old name of :func:`visattn.report.read_run` (the run folder's config,
summary and history); ``visattn.train.load_run`` rebuilds a run's model and data.
"""

from visattn._deprecated import warn_moved
from visattn.report import *  # noqa: F403
from visattn.report import __all__ as _new_all
from visattn.report import read_run as load_run

__all__ = [*_new_all, "load_run"]

warn_moved("visattn.viz.report", "visattn.report")
