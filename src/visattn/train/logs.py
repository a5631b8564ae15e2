"""Run logs: ``metrics.jsonl`` and ``metrics.csv`` rewritten from the checkpointed history.

The history (one dict per finished epoch) is stored inside the checkpoint, and the log files
are rewritten from it (atomically) after each checkpoint, so a run killed and resumed at any
point has logs with no duplicated and no missing epochs.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from visattn._files import temp_beside

__all__ = ["write_text_atomic", "write_history"]


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write ``history`` as JSON lines and as CSV (columns = union of keys, in first-seen order)."""
    write_text_atomic(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    cols: list[str] = []
    for h in history:
        cols += [k for k in h if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for h in history:
        w.writerow(h)
    write_text_atomic(out_dir / "metrics.csv", buf.getvalue())
