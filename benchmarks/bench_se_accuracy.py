"""Accuracy of ``resnet20`` vs ``se_resnet20`` on Fashion-MNIST under one small CPU budget.

Same schedule for both: SGD (momentum 0.9, weight decay 5e-4, Nesterov), a cosine learning rate
from ``--lr``, random-crop (pad 2) + horizontal-flip augmentation, ``--epochs`` over a
``--train-size`` subset of the official training set. A disjoint ``--val-size`` subset of the
training set picks the epoch (best validation accuracy); its weights are then scored once on the
official 10,000-image test set. Same seeds, same data order per seed for both models. Prints
mean +- std over seeds and writes JSON.

Usage::

    nice python benchmarks/bench_se_accuracy.py --data-dir /usr/share/datasets/fashion-mnist \\
        --train-size 6000 --val-size 2000 --epochs 2 --seeds 0 1 2 --json /tmp/se_acc.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import visattn
from visattn.data import load_idx_pair

__all__ = ["main"]


def load_fashion_mnist(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x_tr, y_tr = load_idx_pair(
        data_dir / "train-images-idx3-ubyte.gz", data_dir / "train-labels-idx1-ubyte.gz"
    )
    x_te, y_te = load_idx_pair(data_dir / "t10k-images-idx3-ubyte.gz", data_dir / "t10k-labels-idx1-ubyte.gz")
    return x_tr, y_tr, x_te, y_te


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - 0.286) / 0.353  # Fashion-MNIST training mean and std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 2-pixel zero padding and horizontal flip, batched."""
    b, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dy, dx = torch.randint(0, 5, (2,), generator=gen).tolist()  # one shift per batch keeps it vectorised
    out = padded[:, :, dy : dy + h, dx : dx + w]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch)
    )
    return correct / len(x)


def run(name: str, seed: int, data: dict[str, torch.Tensor], args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    model = visattn.create_model(name, num_classes=10, in_chans=1)
    steps_per_epoch = len(data["x_train"]) // args.batch_size
    total = steps_per_epoch * args.epochs
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)  # same batches and augmentation for both models
    best = (-1.0, -1, None)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(data["x_train"]), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            xb = augment(data["x_train"][idx], gen)
            loss = F.cross_entropy(model(xb), data["y_train"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val = accuracy(model, data["x_val"], data["y_val"])
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
        print(f"{name} seed {seed} epoch {epoch + 1}: loss {loss.item():.3f} val {val:.4f}", flush=True)
    model.load_state_dict(best[2])
    test = accuracy(model, data["x_test"], data["y_test"])
    return {
        "model": name,
        "seed": seed,
        "val": best[0],
        "epoch": best[1] + 1,
        "test": test,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--models", nargs="+", default=["resnet20", "se_resnet20"])
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x_tr, y_tr, x_te, y_te = load_fashion_mnist(args.data_dir)
    perm = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(1234))  # fixed split
    tr, va = perm[: args.train_size], perm[args.train_size : args.train_size + args.val_size]
    data = {
        "x_train": normalise(x_tr[tr]),
        "y_train": y_tr[tr],
        "x_val": normalise(x_tr[va]),
        "y_val": y_tr[va],
        "x_test": normalise(x_te),
        "y_test": y_te,
    }
    results = [run(name, seed, data, args) for seed in args.seeds for name in args.models]
    print(
        f"\nFashion-MNIST, {args.train_size} train / {args.val_size} val / {len(x_te)} test, "
        f"{args.epochs} epochs, seeds {args.seeds}"
    )
    for name in args.models:
        rs = [r for r in results if r["model"] == name]
        tests = [100 * r["test"] for r in rs]
        std = statistics.stdev(tests) if len(tests) > 1 else 0.0
        secs = statistics.mean(r["seconds"] for r in rs)
        print(
            f"{name:12s} test acc {statistics.mean(tests):.2f} +- {std:.2f} %  "
            f"(per seed {', '.join(f'{t:.2f}' for t in tests)}; {secs:.0f} s per run)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
