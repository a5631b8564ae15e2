"""What every benchmark shares: run metadata for the raw JSON, one evaluation helper, in-memory datasets.

- :func:`run_metadata` / :func:`write_result`: the commit, date, machine, command, torch version and
  thread count that every committed raw JSON carries, with machine paths rewritten to relative or
  ``path/to/...`` forms (no absolute path of the machine a run happened on goes into the repository).
- :func:`evaluate` / :func:`error_rate`: the one accuracy loop of the benchmarks; it is the engine's own
  ``visattn.train.evaluate`` (the function that scores validation and test in ``visattn train``), fed
  either a ``DataLoader`` or in-memory ``(x, y)`` tensors.
- :func:`memory_dataset`: registers in-memory ``uint8`` images as a ``visattn.data`` dataset, so a
  benchmark whose data the registry does not build (a resized subset, a cached decode) still trains
  through ``visattn.train.fit`` / ``Trainer`` like every other run.
- :func:`train_config`: a ``TrainConfig`` with the benchmark defaults (CPU, no progress bar).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "MACHINE",
    "error_rate",
    "evaluate",
    "mean_std",
    "memory_dataset",
    "portable_path",
    "run_metadata",
    "train_config",
    "write_result",
]

#: The machine every CPU figure of docs/RESULTS.md was measured on; ``VISATTN_MACHINE`` overrides it.
MACHINE = "shared 2-core CPU VM, no GPU"

_REPO = Path(__file__).resolve().parents[1]
_MEMORY: dict[str, Any] = {}  # name -> DatasetSplits of memory_dataset

# absolute prefixes of the machines the results were produced on -> what the docs write instead
_KNOWN_PREFIXES = (
    ("/work/shared/data/", "../shared/data/"),
    ("/usr/share/datasets/", "path/to/"),
)
_ABS = re.compile(r"(?<![\w.])/(?:work|usr|home|tmp|root|var|mnt|opt|Users)/[^\s'\",:;]*")


def portable_path(text: str) -> str:
    """``text`` with absolute machine paths made portable.

    Known data folders become ``../shared/data/...`` or ``path/to/...``; the repository's own folder is
    dropped (paths become relative to it); any other absolute path becomes ``path/to/<name>``.

    >>> portable_path("--data-dir /work/shared/data/mnist.npz --json /tmp/x/se.json")
    '--data-dir ../shared/data/mnist.npz --json path/to/se.json'
    """
    for prefix, repl in _KNOWN_PREFIXES:
        text = text.replace(prefix, repl)
    text = text.replace(str(_REPO) + "/", "")

    def other(m: re.Match[str]) -> str:
        name = m.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f"path/to/{name}"

    return _ABS.sub(other, text)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _commit() -> str | None:
    commit = _git("rev-parse", "--short=12", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# taken when a benchmark imports this module, i.e. when the run starts: the code the run used
_START = {"commit": _commit(), "started": _now()}


def run_metadata(
    argv: Sequence[str] | None = None, *, script: str | None = None, machine: str | None = None
) -> dict[str, Any]:
    """Commit (when the run started), start and end date (UTC), machine, command, torch/Python, threads.

    ``commit`` gets a ``+dirty`` suffix when tracked files differed from it (the run used uncommitted code).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    script = script or Path(sys.argv[0]).name
    return {
        "commit": _START["commit"],
        "started": _START["started"],
        "date": _now(),
        "machine": machine or os.environ.get("VISATTN_MACHINE", MACHINE),
        "command": portable_path(shlex.join(["python", f"benchmarks/{script}", *argv])),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def _portable(obj: Any) -> Any:
    if isinstance(obj, str):
        return portable_path(obj)
    if isinstance(obj, Path):
        return portable_path(str(obj))
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_portable(v) for v in obj]
    return obj


def write_result(
    path: str | os.PathLike[str] | None,
    payload: dict[str, Any],
    *,
    argv: Sequence[str] | None = None,
    machine: str | None = None,
) -> dict[str, Any]:
    """``{"meta": run_metadata(argv), **payload}`` with portable paths; written as JSON to ``path`` if given."""
    record = {"meta": run_metadata(argv, machine=machine), **_portable(payload)}
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(record, indent=1, default=str) + "\n")
    return record


def _loader(data: DataLoader | tuple[torch.Tensor, torch.Tensor], batch_size: int) -> Iterable:
    if isinstance(data, DataLoader):
        return data
    x, y = data
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def evaluate(
    model: torch.nn.Module,
    data: DataLoader | tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Loss, top-1, top-5 (%) and ``n`` of ``model`` on ``data``: the engine's ``visattn.train.evaluate``.

    ``data`` is a ``DataLoader`` yielding ``(x, y)`` (e.g. ``Trainer.test_loader``) or a pair of tensors
    ``x (N, C, H, W)`` float, already normalised, and ``y (N,)``. Leaves the model in eval mode.
    """
    from visattn.train import evaluate as engine_evaluate

    return engine_evaluate(model, _loader(data, batch_size), torch.device(device))


def error_rate(
    model: torch.nn.Module, data: DataLoader | tuple[torch.Tensor, torch.Tensor], **kw: Any
) -> float:
    """Top-1 error (%) of ``model`` on ``data`` (see :func:`evaluate`)."""
    return 100.0 - evaluate(model, data, **kw)["top1"]


def memory_dataset(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    extras: dict[str, Any] | None = None,
    default_augment: str = "none",
) -> str:
    """Register ``uint8 (N, C, H, W)`` images with labels as the ``visattn.data`` dataset ``name``.

    Re-registering a name replaces it (benchmarks build one per configuration). Mean and std default to
    the training images' per-channel statistics. Returns ``name`` for ``TrainConfig(data=name)``.
    """
    from visattn.data import DatasetSplits, ImageTensorDataset

    x_tr, y_tr = train
    x_te, y_te = test
    if mean is None or std is None:
        f = x_tr.float() / 255
        mean = tuple(float(v) for v in f.mean(dim=(0, 2, 3)))
        std = tuple(float(v) for v in f.std(dim=(0, 2, 3)))
    splits = DatasetSplits(
        name=name,
        train=ImageTensorDataset(x_tr, y_tr, source=f"{name} train"),
        test=ImageTensorDataset(x_te, y_te, source=f"{name} test"),
        num_classes=num_classes or int(max(int(y_tr.max()), int(y_te.max())) + 1),
        in_chans=int(x_tr.shape[1]),
        image_size=(int(x_tr.shape[-2]), int(x_tr.shape[-1])),
        mean=tuple(mean),
        std=tuple(std),
        extras=dict(extras or {}),
        default_augment=default_augment,
    )

    _MEMORY[name] = splits
    from visattn.data import list_datasets, register_dataset

    if name not in list_datasets():

        def builder(*, data_dir: str | None = None, download: bool = False, seed: int = 0) -> DatasetSplits:
            return _MEMORY[name]

        register_dataset(name)(builder)
    return name


def train_config(**fields: Any) -> Any:
    """``visattn.train.TrainConfig(**fields)`` with benchmark defaults: CPU, no progress bar."""
    from visattn.train import TrainConfig

    base: dict[str, Any] = {"device": "cpu", "progress": False}
    base.update(fields)
    return TrainConfig(**base)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    import statistics

    vals = list(values)
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
