"""SE reduction-ratio sweep (Hu et al., arXiv:1709.01507, Table 10): ``se_resnet20`` at r in {4, 8, 16, 32}.

Protocol (issue 3, "the reduction-ratio sweep r in {4, 8, 16, 32} on one of them"), through the library's
engine (``visattn.train.fit``): for every seed, plain ``resnet20`` (the reference) and ``se_resnet20`` with
``model_kwargs={"attn_kwargs": {"reduction": r}}`` for each ``r`` are trained with the same schedule
(SGD, Nesterov, cosine learning rate, the engine's default augmentation) for ``--epochs`` on a
``--limit-train`` subset of the Fashion-MNIST training set. ``--val-fraction`` of the training set is held
out for validation (the engine's split, seeded by the run's seed, so every model of a seed sees the same
split and data order); the best validation epoch is scored once on the official 10,000-image test set.

``SqueezeExcite`` uses ``max(1, C // r)`` hidden units; ``resnet20``'s stages have C = 16, 32, 64, so
r = 32 gives hidden sizes 1, 1, 2 (16 // 32 = 0 is floored at 1). The script prints the hidden sizes
it actually built. Prints a Markdown table (params, test top-1 per seed, mean +- sample std) and writes JSON.

Usage::

    nice .venv/bin/python benchmarks/bench_se_reduction.py \\
        --limit-train 4000 --val-fraction 0.05 --epochs 3 --seeds 0 1 2 --json docs/results/se_reduction.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from visattn.attention.se import SqueezeExcite
from visattn.models import create_model
from visattn.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import train_config, write_result  # noqa: E402

__all__ = ["main"]


def _variants(reductions: list[int]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, model, model_kwargs)`` for the reference and each reduction ratio."""
    rows: list[tuple[str, str, dict[str, Any]]] = [("resnet20", "resnet20", {})]
    for r in reductions:
        rows.append((f"se_resnet20 r={r}", "se_resnet20", {"attn_kwargs": {"reduction": r}}))
    return rows


def _hidden_sizes(model: str, kwargs: dict[str, Any]) -> list[int]:
    """SE hidden width per stage (one per distinct channel count ``C``) of the built model; empty if none."""
    net = create_model(model, num_classes=10, in_chans=1, **kwargs)
    by_channels = {m.channels: m.fc1.out_features for m in net.modules() if isinstance(m, SqueezeExcite)}
    return [by_channels[c] for c in sorted(by_channels)]


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir",
        default=None,
        help="Fashion-MNIST folder (default: the Debian package's, as visattn.data finds it)",
    )
    ap.add_argument("--reductions", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit-train", type=int, default=4000)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate (cosine)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_se_reduction"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = _variants(args.reductions)
    hidden = {label: _hidden_sizes(model, kw) for label, model, kw in variants}
    for label, sizes in hidden.items():
        if sizes:
            print(f"{label}: SE hidden units per stage (C = 16, 32, 64): {sizes}", flush=True)

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for i, (label, model, kw) in enumerate(variants):
            cfg = train_config(
                model=model,
                model_kwargs=kw,
                data="fashion_mnist",
                data_dir=args.data_dir,
                val_fraction=args.val_fraction,
                limit_train=args.limit_train,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                schedule="cosine",
                seed=seed,
                out=str(args.out / f"seed{seed}" / f"v{i}"),
            )
            t0 = time.perf_counter()
            summary = fit(cfg)
            row = {
                "variant": label,
                "seed": seed,
                "val_top1": summary["best_val_top1"],
                "test_top1": summary["test_top1"],
                "params": summary["params"],
                "best_epoch": max(summary["history"], key=lambda h: h["val_top1"])["epoch"],
                "wall_s": time.perf_counter() - t0,
            }
            rows.append(row)
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
    total = time.perf_counter() - t_start

    print(
        f"\nFashion-MNIST, limit_train {args.limit_train}, val_fraction {args.val_fraction}, "
        f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr} cosine, seeds {args.seeds}; total {total:.0f} s"
    )
    seeds_hdr = " | ".join(f"seed {s}" for s in args.seeds)
    print(
        f"| model | SE hidden (per stage) | params | {seeds_hdr} | test top-1 mean ± std | val mean ± std |"
    )
    print("|---" * (5 + len(args.seeds)) + "|")
    for label, _, _ in variants:
        rs = [r for r in rows if r["variant"] == label]
        tests = [r["test_top1"] for r in rs]  # the engine reports percent
        per_seed = " | ".join(f"{t:.2f}" for t in tests)
        sizes = "/".join(map(str, hidden[label])) or "-"
        vals = _mean_std([r["val_top1"] for r in rs])
        print(f"| {label} | {sizes} | {rs[0]['params']} | {per_seed} | {_mean_std(tests)} | {vals} |")
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "hidden": hidden,
        "rows": rows,
        "total_s": total,
    }
    return write_result(args.json, result, argv=argv)


if __name__ == "__main__":
    main()
