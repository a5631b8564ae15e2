"""``visattn demo``: the main job. Train a baseline and each attention model on Fashion-MNIST, compare.

Every run uses the same data (Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, or
``--data-dir``), the same validation split carved from the training set (seed 0), selection of
the checkpoint on validation top-1, and one evaluation of the selected weights on the test set.
The ``short`` budget takes about 6 minutes on 2 idle CPU cores (measured: docs/results/demo.md); ``tiny`` only checks the pipeline
(validation and test limited to 256 images each; under 3 minutes there).
Models that are not registered (a mechanism not installed) are left out and said so.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoEntry", "DEMO_ENTRIES", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoEntry:
    """One row of the demo: a label, a registered model and its config overrides."""

    label: str
    model: str
    mechanism: str
    overrides: dict[str, Any] = field(default_factory=dict)
    needs_base: bool = False
    heavy: bool = False  # trained on fewer images under the ``short`` budget (see ``_HEAVY``)


DEMO_ENTRIES: tuple[DemoEntry, ...] = (
    DemoEntry("CNN (baseline)", "mnist_cnn", "none"),
    DemoEntry(
        "CNN + SE",
        "mnist_cnn",
        "squeeze-excitation",
        {"model_kwargs": {"attn_layer": "se", "attn_kwargs": {"reduction": 4}}},
    ),
    DemoEntry("ResNet-20 (baseline)", "resnet20", "none"),
    DemoEntry("SE-ResNet-20", "se_resnet20", "squeeze-excitation"),
    DemoEntry(
        "Residual attention (Attention-56, CIFAR layout)",
        "attention56_cifar",
        "residual attention",
        heavy=True,
    ),
    # SGD at lr 0.1 makes the transformer collapse (chance accuracy, seen here); Adam at 1e-3 as in the paper's code
    DemoEntry(
        "ST-CNN",
        "st_cnn_mnist",
        "spatial transformer",
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0},
    ),
    DemoEntry(
        "RAM (6 glimpses)",
        "ram",
        "hard attention (REINFORCE)",
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0},
    ),
    DemoEntry("dasNet over the baseline CNN", "dasnet", "feedback (SNES)", needs_base=True, heavy=True),
)

_BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {"epochs": 1, "limit_train": 256, "limit_eval": 256, "max_steps_per_epoch": 4, "batch_size": 64},
    "short": {"epochs": 2, "limit_train": 12000, "batch_size": 128, "val_fraction": 0.05},
}
# what a heavy entry (about 10x the compute per image) changes under each budget
_HEAVY: dict[str, dict[str, Any]] = {"tiny": {}, "short": {"limit_train": 3000}}


def _row(entry: DemoEntry, summary: dict[str, Any], seconds: float, images: int | None) -> dict[str, Any]:
    return {
        "label": entry.label,
        "train_images": images,
        "model": entry.model,
        "mechanism": entry.mechanism,
        "params": summary.get("params"),
        "val_top1": summary.get("best_val_top1"),
        "test_top1": summary.get("test_top1"),
        "seconds": round(seconds, 1),
        "out": summary.get("out"),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | mechanism | train images | params | val top-1 (%) | test top-1 (%) | time (s) |\n"
        "|---|---|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['label']} | {r['mechanism']} | {r['train_images'] or 'all'} | {r['params']:,} "
        f"| {r['val_top1']:.2f} | {r['test_top1']:.2f} "
        f"| {r['seconds']:.0f} |\n"
        for r in rows
    )
    return head + body


def run_demo(
    *,
    out: str = "runs/demo",
    data_dir: str | None = None,
    budget: str = "short",
    entries: tuple[DemoEntry, ...] = DEMO_ENTRIES,
) -> list[dict[str, Any]]:
    """Train every available demo entry; print and write the comparison (``results.md``/``.json``)."""
    import visattn
    from visattn._validate import check_choice
    from visattn.data import load_dataset
    from visattn.train import TrainConfig, fit

    check_choice(budget, "budget", tuple(_BUDGETS))
    load_dataset("fashion_mnist", data_dir=data_dir)  # fail early, with how to get the data
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    available = [e for e in entries if e.model in visattn.list_models()]
    missing = [e.label for e in entries if e.model not in visattn.list_models()]
    rows: list[dict[str, Any]] = []
    base_weights: str | None = None
    for i, entry in enumerate(available):
        if entry.needs_base and base_weights is None:
            missing.append(f"{entry.label} (no trained baseline CNN)")
            continue
        log.info("[%d/%d] %s: training %s", i + 1, len(available), entry.label, entry.model)
        settings: dict[str, Any] = {
            "model": entry.model,
            "data": "fashion_mnist",
            "data_dir": data_dir,
            "out": str(root / f"{i:02d}_{entry.model}"),
            "seed": 0,
            "progress": False,
            **_BUDGETS[budget],
            **(_HEAVY[budget] if entry.heavy else {}),
        }
        for k, v in entry.overrides.items():
            settings[k] = dict(v) if isinstance(v, dict) else v
        if entry.needs_base:
            settings["model_kwargs"] = {**settings.get("model_kwargs", {}), "base": base_weights}
        t0 = time.perf_counter()
        summary = fit(TrainConfig(**settings))
        rows.append(_row(entry, summary, time.perf_counter() - t0, settings.get("limit_train")))
        if entry.model == "mnist_cnn" and not entry.overrides:
            base_weights = str(Path(summary["out"]) / "best.pt")
    table = _table(rows)
    note = f"\nNot run: {', '.join(missing)}\n" if missing else ""
    header = (
        f"Fashion-MNIST, budget '{budget}' ({_BUDGETS[budget]}), seed 0; checkpoint chosen on a "
        "validation split carved from the training set; test evaluated once.\n\n"
    )
    (root / "results.md").write_text(header + table + note)
    (root / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n" + header + table + note)
    print(f"results: {root / 'results.md'}")
    if rows:
        from visattn.report import write_report

        report = write_report(
            [r["out"] for r in rows], root / "report.html", title=f"visattn demo ({budget})"
        )
        print(f"report: {report}")
    return rows
