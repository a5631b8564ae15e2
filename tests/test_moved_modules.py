"""Modules moved by issue 16 still import from their old paths, with a DeprecationWarning, as the same objects."""

from __future__ import annotations

import importlib
import sys

import pytest

MOVED = [
    ("visattn.train.reinforce", "visattn.learning.reinforce", "reinforce_loss"),
    ("visattn.train.snes", "visattn.learning.snes", "SNES"),
    ("visattn.train.checkpoint", "visattn.checkpoint", "load_weights"),
    ("visattn.train.tb_images", "visattn.viz.tensorboard", "AttentionImageLogger"),
    ("visattn.viz.report", "visattn.report", "write_report"),
    ("visattn.attention._se_fused", "visattn.models._se_fused", "se_norm_residual_relu"),
]


@pytest.mark.parametrize(("old", "new", "name"), MOVED)
def test_old_path_warns_and_reexports_the_same_object(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)
    assert set(importlib.import_module(new).__all__) <= set(mod.__all__)


def test_viz_report_keeps_its_old_load_run_and_viz_keeps_write_report():
    from visattn import report

    sys.modules.pop("visattn.viz.report", None)
    with pytest.warns(DeprecationWarning):
        old = importlib.import_module("visattn.viz.report")
    assert old.load_run is report.read_run
    import visattn.viz

    with pytest.warns(DeprecationWarning, match="visattn.report.write_report"):
        assert visattn.viz.write_report is report.write_report
