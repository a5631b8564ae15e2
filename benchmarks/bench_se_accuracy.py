"""Accuracy of ``resnet20`` vs ``se_resnet20`` on Fashion-MNIST under one small CPU budget.

Both models train through the library's engine (``visattn.train.fit``, what ``visattn train`` runs) with the
same schedule: SGD (momentum 0.9, Nesterov, weight decay 5e-4), a linear warm-up over the first 15 % of the
steps then cosine decay from ``--lr``, batch ``--batch-size``, ``--epochs`` over a ``--train-size`` subset of
the official training set (``limit_train``), the engine's default augmentation for Fashion-MNIST (none).
``--val-size`` images carved from the training set by the engine's split (seeded by the run's seed; both
models of a seed see the same split and data order) pick the epoch; its weights are scored once on the
official 10,000-image test set. Prints mean +- std over seeds and writes JSON with the run metadata.

Until 2026-12-06 this script had its own loop (one-cycle LR, random crop + flip, one fixed split of seed
1234); docs/results/se.md says which figure was measured with which.

Usage::

    nice python benchmarks/bench_se_accuracy.py --train-size 3000 --val-size 1000 --epochs 2 \\
        --seeds 0 1 2 --json docs/results/se_accuracy.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from visattn.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import mean_std, train_config, write_result  # noqa: E402

__all__ = ["main"]

FASHION_MNIST_TRAIN = 60_000


def run(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    cfg = train_config(
        model=name,
        data="fashion_mnist",
        data_dir=args.data_dir,
        limit_train=args.train_size,
        val_fraction=args.val_size / FASHION_MNIST_TRAIN,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule="cosine",
        warmup_epochs=0.15 * args.epochs,
        seed=seed,
        out=str(Path(args.runs) / f"{name}_s{seed}"),
    )
    t0 = time.perf_counter()
    summary = fit(cfg)
    best = max(summary["history"], key=lambda h: h["val_top1"])
    return {
        "model": name,
        "seed": seed,
        "val_top1": summary["best_val_top1"],
        "epoch": best["epoch"],
        "test_top1": summary["test_top1"],
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST (default: where visattn.data finds it)")
    ap.add_argument("--models", nargs="+", default=["resnet20", "se_resnet20"])
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="runs/bench_se_accuracy", help="the engine's run folders")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [run(name, seed, args) for seed in args.seeds for name in args.models]
    print(
        f"\nFashion-MNIST, {args.train_size} train / {args.val_size} val / 10000 test, "
        f"{args.epochs} epochs, seeds {args.seeds}"
    )
    for name in args.models:
        rs = [r for r in results if r["model"] == name]
        tests = [r["test_top1"] for r in rs]
        m, s = mean_std(tests)
        secs = sum(r["seconds"] for r in rs) / len(rs)
        print(
            f"{name:12s} test acc {m:.2f} +- {s:.2f} %  "
            f"(per seed {', '.join(f'{t:.2f}' for t in tests)}; {secs:.0f} s per run)"
        )
    return write_result(args.json, {"args": vars(args), "results": results}, argv=argv)


if __name__ == "__main__":
    main()
