"""Fixtures of the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from two_level_helpers import make_folder


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    """``train/`` (4 per class) and ``val/`` (2 per class) of three shape classes, 40x40 PNGs."""
    return make_folder(tmp_path / "shapes", per_class={"train": 4, "val": 2})
