"""Retrofit benchmark: does SE added to an already trained ``resnet20`` help more than training on?

Protocol (issue 3, "Retrofit"), per seed, through the library's engine (``visattn.train.fit``):

1. **base**: ``resnet20`` trained from scratch for ``--epochs`` on a ``--limit-train`` subset of the
   Fashion-MNIST training set, with ``--val-fraction`` of the training set held out for validation
   (the engine's split, seeded by the run's seed); ``best.pt`` is the best validation epoch.
2. From that ``best.pt``, with the same seed (so the same train/validation split and data order):

   (a) **fine-tune**: the plain ``resnet20`` trained ``--finetune-epochs`` more epochs;
   (b) **retrofit**: SE inserted with ``visattn.retrofit`` (identity init, the default), then trained
       the same ``--finetune-epochs`` with the same schedule and learning rate
       (optionally the first ``--warmup-epochs`` of them train only the inserted parameters).

Every run keeps its best validation epoch and scores it once on the official 10,000-image test set.
Right after insertion the script also measures the largest ``|logit difference|`` between the trained
network and its retrofitted copy (eval mode, float32) on the first ``--check-images`` validation images.
Prints a table (base / (a) / (b) per seed, mean +- std) and writes JSON.

Usage::

    nice .venv/bin/python benchmarks/bench_retrofit.py \\
        --epochs 5 --finetune-epochs 3 --limit-train 6000 --seeds 0 1 2 --json docs/results/se_retrofit.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from visattn.data import load_dataset, make_loaders
from visattn.train import TrainConfig, build_model, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

__all__ = ["main"]


def _config(args: argparse.Namespace, seed: int, out: Path, **changes: Any) -> TrainConfig:
    """The shared config of every run of ``seed``; ``changes`` set the run's own fields."""
    base = TrainConfig(
        model="resnet20",
        data="fashion_mnist",
        data_dir=args.data_dir,
        val_fraction=args.val_fraction,
        limit_train=args.limit_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule="cosine",
        seed=seed,
        out=str(out),
        device="cpu",
        progress=True,
    )
    return dataclasses.replace(base, **changes)


def _run(name: str, cfg: TrainConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    summary = fit(cfg)
    wall = time.perf_counter() - t0
    row = {
        "run": name,
        "seed": cfg.seed,
        "val_top1": summary["best_val_top1"],
        "test_top1": summary["test_top1"],
        "params": summary["params"],
        "best_epoch": max(summary["history"], key=lambda h: h["val_top1"])["epoch"],
        "wall_s": wall,
        "train_time_s": summary["train_time_s"],
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return row


@torch.no_grad()
def _insertion_diff(cfg: TrainConfig, n_images: int) -> float:
    """Max ``|logits(trained) - logits(trained + SE)|`` right after insertion, eval mode, float32."""
    splits = load_dataset(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed)
    loaders = make_loaders(
        splits,
        batch_size=cfg.batch_size,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        limit_train=cfg.limit_train,
        eval_batch_size=256,
    )
    assert loaders.val is not None
    plain = build_model(
        dataclasses.replace(cfg, retrofit=None), num_classes=splits.num_classes, in_chans=splits.in_chans
    ).eval()
    retro = build_model(cfg, num_classes=splits.num_classes, in_chans=splits.in_chans).eval()
    worst, seen = 0.0, 0
    for x, _ in loaders.val:
        worst = max(worst, float((plain(x) - retro(x)).abs().max()))
        seen += len(x)
        if seen >= n_images:
            break
    return worst


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST (default: where visattn.data finds it)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the base run (E)")
    ap.add_argument("--finetune-epochs", type=int, default=3, help="epochs of (a) and of (b) (k)")
    ap.add_argument("--warmup-epochs", type=int, default=0, help="of the k epochs of (b): SE params only")
    ap.add_argument("--limit-train", type=int, default=6000)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak lr of the base run (cosine)")
    ap.add_argument("--finetune-lr", type=float, default=0.02, help="peak lr of (a) and (b) (cosine)")
    ap.add_argument("--reduction", type=int, default=16, help="SE reduction ratio r")
    ap.add_argument("--check-images", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_retrofit"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.warmup_epochs >= args.finetune_epochs:
        ap.error(
            f"--warmup-epochs {args.warmup_epochs} must be below --finetune-epochs {args.finetune_epochs}"
        )
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    diffs: dict[int, float] = {}
    for seed in args.seeds:
        root = args.out / f"seed{seed}"
        rows.append(_run("base", _config(args, seed, root / "base")))
        weights = str(root / "base" / "best.pt")
        ft = {"weights": weights, "epochs": args.finetune_epochs, "lr": args.finetune_lr}
        rows.append(_run("finetune", _config(args, seed, root / "finetune", **ft)))
        retro_cfg = _config(
            args,
            seed,
            root / "retrofit",
            **ft,
            retrofit="se",
            retrofit_kwargs={"reduction": args.reduction},
            retrofit_warmup_epochs=args.warmup_epochs,
        )
        diffs[seed] = _insertion_diff(retro_cfg, args.check_images)
        print(f"seed {seed}: max |logit diff| right after insertion = {diffs[seed]:.3g}", flush=True)
        rows.append(_run("retrofit", retro_cfg))
    total = time.perf_counter() - t_start

    names = {"base": "base (E epochs)", "finetune": "(a) fine-tune k", "retrofit": "(b) SE retrofit + k"}
    print(
        f"\nFashion-MNIST resnet20, limit_train {args.limit_train}, val_fraction {args.val_fraction}, "
        f"E={args.epochs}, k={args.finetune_epochs} (warm-up {args.warmup_epochs}), "
        f"lr {args.lr} -> fine-tune lr {args.finetune_lr}, seeds {args.seeds}; total {total:.0f} s"
    )
    seeds_hdr = " | ".join(f"seed {s}" for s in args.seeds)
    print(f"| run | test top-1 {seeds_hdr} | test mean ± std | val mean ± std | params | wall s/run |")
    for key, label in names.items():
        rs = [r for r in rows if r["run"] == key]
        tests = [r["test_top1"] for r in rs]  # the engine reports percent
        vals = [r["val_top1"] for r in rs]
        per_seed = " | ".join(f"{t:.2f}" for t in tests)
        wall = statistics.mean(r["wall_s"] for r in rs)
        print(
            f"| {label} | {per_seed} | {_mean_std(tests)} | {_mean_std(vals)} | {rs[0]['params']} | {wall:.0f} |"
        )
    gains = [
        b["test_top1"] - a["test_top1"]
        for a, b in zip(
            [r for r in rows if r["run"] == "finetune"],
            [r for r in rows if r["run"] == "retrofit"],
            strict=True,
        )
    ]
    print(f"(b) - (a) test top-1 per seed: {', '.join(f'{g:+.2f}' for g in gains)}; {_mean_std(gains)}")
    print(f"max |logit diff| after insertion per seed: {', '.join(f'{diffs[s]:.3g}' for s in args.seeds)}")
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "insertion_max_abs_logit_diff": diffs,
        "paired_gain_b_minus_a": gains,
        "total_s": total,
    }
    return write_result(args.json, result, argv=argv)


if __name__ == "__main__":
    main()
