"""On-disk stage caches of the two-level pipeline, each with a manifest validated on load.

A stage writes ``OUT/<stage>.pt`` (tensors and plain Python values only, read back with
``torch.load(weights_only=True)``) and ``OUT/<stage>.json``, the manifest::

    {"stage": "filter", "options": {...}, "config_hash": "...", "inputs_hash": "...", "output_sha256": "..."}

``options`` are the config values the stage depends on (its own and every earlier stage's),
``inputs_hash`` is the ``output_sha256`` of the stage it reads (or the hash of the image list for
the first stage). :func:`load_stage` refuses, with a ``ValueError`` that names the stage, a cache
that is missing, was made with other options (the differing keys are listed), whose input stage
has been re-run since, or whose file no longer matches its manifest. A cache is never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from visattn.pipelines.two_level.config import STAGES, TwoLevelConfig, options_hash, stage_options

__all__ = ["StageCacheError", "save_stage", "load_stage", "stage_paths", "file_sha256"]


class StageCacheError(ValueError):
    """A stage cache that cannot be used (missing, stale, or made with other options)."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_paths(out: str | Path, stage: str) -> tuple[Path, Path]:
    """``(OUT/<stage>.pt, OUT/<stage>.json)``."""
    return Path(out) / f"{stage}.pt", Path(out) / f"{stage}.json"


def _previous(stage: str) -> str | None:
    i = STAGES.index(stage)
    return STAGES[i - 1] if i else None


def _expected_inputs_hash(cfg: TwoLevelConfig, stage: str, first_inputs: str | None) -> str:
    prev = _previous(stage)
    if prev is None:
        if first_inputs is None:
            raise ValueError(f"stage {stage!r} needs the hash of its image list")
        return first_inputs
    manifest = _read_manifest(cfg, prev)
    return str(manifest["output_sha256"])


def _read_manifest(cfg: TwoLevelConfig, stage: str) -> dict[str, Any]:
    data, meta = stage_paths(cfg.out, stage)
    if not meta.is_file() or not data.is_file():
        raise StageCacheError(
            f"stage {stage!r}: no cache at {str(data)!r}; run `visattn pipeline two-level --stage {stage}` first"
        )
    try:
        manifest = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise StageCacheError(f"stage {stage!r}: manifest {str(meta)!r} is not valid JSON ({err})") from None
    if manifest.get("stage") != stage:
        raise StageCacheError(
            f"stage {stage!r}: manifest {str(meta)!r} belongs to stage {manifest.get('stage')!r}"
        )
    return manifest


def save_stage(
    cfg: TwoLevelConfig, stage: str, payload: dict[str, Any], *, first_inputs: str | None = None
) -> Path:
    """Write ``payload`` as the cache of ``stage`` with its manifest (atomically); returns the data path."""
    data, meta = stage_paths(cfg.out, stage)
    data.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data.parent, suffix=".tmp")
    os.close(fd)
    torch.save(payload, tmp)
    os.replace(tmp, data)
    options = stage_options(cfg, stage)
    manifest = {
        "stage": stage,
        "options": options,
        "config_hash": options_hash(options),
        "inputs_hash": _expected_inputs_hash(cfg, stage, first_inputs),
        "output_sha256": file_sha256(data),
        "bytes": data.stat().st_size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.write_text(json.dumps(manifest, indent=1, default=str))
    return data


def load_stage(
    cfg: TwoLevelConfig, stage: str, *, first_inputs: str | None = None, check_only: bool = False
) -> dict[str, Any]:
    """Read the cache of ``stage`` after checking its manifest against ``cfg`` and its input stage.

    ``check_only`` validates without reading the tensors (returns the manifest).

    Raises:
        StageCacheError: (a ``ValueError``) naming ``stage`` when the cache is missing, made with other
            options, older than its input stage's cache, or altered since it was written.
    """
    manifest = _read_manifest(cfg, stage)
    data, _ = stage_paths(cfg.out, stage)
    want = stage_options(cfg, stage)
    have = manifest.get("options", {})
    if options_hash(want) != manifest.get("config_hash") or have != json.loads(json.dumps(want, default=str)):
        diff = sorted(k for k in set(want) | set(have) if have.get(k, "<absent>") != want.get(k, "<absent>"))
        detail = ", ".join(
            f"{k}: cache {have.get(k, '<absent>')!r} vs config {want.get(k, '<absent>')!r}" for k in diff
        )
        raise StageCacheError(
            f"stage {stage!r}: the cache at {str(data)!r} was made with other options ({detail}); "
            f"re-run `--stage {stage}` (or use another `out`)"
        )
    expected = _expected_inputs_hash(cfg, stage, first_inputs)
    if manifest.get("inputs_hash") != expected:
        prev = _previous(stage) or "the image list"
        raise StageCacheError(
            f"stage {stage!r}: the cache at {str(data)!r} is stale: its input ({prev}) changed since it "
            f"was made; re-run `--stage {stage}`"
        )
    if file_sha256(data) != manifest.get("output_sha256"):
        raise StageCacheError(
            f"stage {stage!r}: the cache file {str(data)!r} does not match its manifest (altered or truncated); "
            f"re-run `--stage {stage}`"
        )
    if check_only:
        return manifest
    return torch.load(data, map_location="cpu", weights_only=True)
