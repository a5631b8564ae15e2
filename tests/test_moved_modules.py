"""Modules moved by issue 16 still import from their old paths, with a DeprecationWarning, as the same objects."""

from __future__ import annotations

import importlib
import sys

import pytest

MOVED = [
    ("visattn.train.reinforce", "visattn.learning.reinforce", "reinforce_loss"),
    ("visattn.train.snes", "visattn.learning.snes", "SNES"),
    ("visattn.train.checkpoint", "visattn.checkpoint", "load_weights"),
]


@pytest.mark.parametrize(("old", "new", "name"), MOVED)
def test_old_path_warns_and_reexports_the_same_object(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)
    assert set(mod.__all__) == set(importlib.import_module(new).__all__)
