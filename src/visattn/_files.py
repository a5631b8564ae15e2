"""Atomic file writes that respect the umask.

``tempfile.mkstemp`` creates files with mode ``0600`` whatever the umask; a file renamed over its
target keeps that mode, so run folders written through a temporary file ended up readable by their
owner only. :func:`temp_beside` opens the temporary file with the mode a plain ``open(path, "w")``
would have given (``0666 & ~umask``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["default_file_mode", "temp_beside"]


def default_file_mode() -> int:
    """``0o666`` masked by the process umask (read without changing it for long).

    >>> 0 <= default_file_mode() <= 0o666
    True
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder (for a later ``os.replace``): ``(fd, name)``,
    with the umask's mode instead of ``mkstemp``'s ``0600``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp
