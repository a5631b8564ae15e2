"""CPU-scale slice of Table 1 of Spatial Transformer Networks (Jaderberg et al., NIPS 2015).

Trains models from ``visattn.models.stn`` on a distorted MNIST (``mnist_rts`` by default) with one
fixed budget of optimiser steps per model, picks the checkpoint with the lowest error on a
validation split carved from the training set, and reports the test error of that checkpoint on
the fixed generated test set, plus the time per training step.

Example (what docs/results/stn.md reports):

    nice python benchmarks/bench_stn.py --data-dir /work/shared/data/mnist.npz --dataset mnist_rts \\
        --models cnn_mnist --steps 700 --eval-every 350 --val-size 2000 --out cnn.json
    (then the same with --models st_cnn_mnist; one model per run keeps each run under 5 minutes)
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import visattn
from visattn.data import load_dataset
from visattn.data.distorted import distort

KINDS = {"mnist_rotated": "R", "mnist_rts": "RTS", "mnist_projective": "P", "mnist_elastic": "E"}


def model_options(name: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """``create_model`` keyword arguments of model ``name`` for ``size x size`` inputs."""
    return {"image_size": size} | ({"transform": args.transform} if name.startswith("st_") else {})


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="MNIST source, e.g. /work/shared/data/mnist.npz")
    p.add_argument(
        "--dataset",
        default="mnist_rts",
        choices=list(KINDS),
    )
    p.add_argument("--models", nargs="+", default=["cnn_mnist", "st_cnn_mnist"])
    p.add_argument("--transform", default="affine", help="transform of the st_* models")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--loc-lr-mult", type=float, default=0.1, help="learning-rate factor of the localisation nets"
    )
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--train-size", type=int, default=0, help="use only this many training images (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument(
        "--time-steps", type=int, default=0, help="only time N interleaved training steps per model"
    )
    p.add_argument("--png", default=None, help="draw the selected st_* model's warps of 8 test images here")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="model and inputs in channels_last memory format (faster on CPU, not bit-identical)",
    )
    p.add_argument(
        "--save",
        default=None,
        help="write the best-on-validation state dict here (safetensors) each time it improves, and the"
        " validation curve so far to --out, so an interrupted long run keeps its selected checkpoint",
    )
    p.add_argument(
        "--fresh-train",
        action="store_true",
        help="draw new distortions of the training digits every epoch (seed 1e6 + 1000 seed + epoch; the"
        " validation digits are never trained on) instead of one fixed generated training set",
    )
    p.add_argument(
        "--test-checkpoint",
        default=None,
        help="only evaluate this --save file (of --models' single model) on the test set and stop",
    )
    return p.parse_args()


def error_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> float:
    model.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            wrong += int((model(x[i : i + batch]).argmax(1) != y[i : i + batch]).sum())
    model.train()
    return 100.0 * wrong / len(x)


def train_one(name: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = visattn.create_model(name, **model_options(name, data["size"], args))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    loc = [p for n, p in model.named_parameters() if ".localization." in f".{n}"]
    rest = [p for n, p in model.named_parameters() if ".localization." not in f".{n}"]
    groups = [{"params": rest, "lr": args.lr}]
    if loc:
        groups.append({"params": loc, "lr": args.lr * args.loc_lr_mult})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=args.steps)
    x_tr, y_tr = data["train"]
    g = torch.Generator().manual_seed(args.seed)
    best = {"val_error": float("inf"), "step": 0, "state": None}
    curve, step_time, step = [], 0.0, 0
    epoch = 0
    while step < args.steps:
        if epoch > 0 and args.fresh_train:
            x_tr = data["regenerate"](epoch)
        epoch += 1
        for idx in torch.randperm(len(x_tr), generator=g).split(args.batch_size):
            if step == args.steps:
                break
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x_tr[idx].contiguous(memory_format=fmt)), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_time += time.perf_counter() - t0
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                val = error_rate(model, *data["val"])
                curve.append({"step": step, "loss": round(loss.item(), 4), "val_error": val})
                print(f"  {name} step {step} loss {loss.item():.3f} val {val:.2f}%", flush=True)
                if val < best["val_error"]:
                    best = {
                        "val_error": val,
                        "step": step,
                        "state": {k: v.clone() for k, v in model.state_dict().items()},
                    }
                    if args.save:
                        save_file({k: v.contiguous() for k, v in best["state"].items()}, args.save)
                if args.out:  # the curve so far (no test number), for runs that are stopped early
                    with open(args.out, "w") as f:
                        json.dump(
                            {"partial": True, "model": name, "curve": curve, "best_step": best["step"]}, f
                        )
    model.load_state_dict(best["state"])
    test = error_rate(model, *data["test"])
    if args.png and name.startswith("st_"):
        from visattn.viz import plot_warps

        model.eval()
        plot_warps(model, data["test"][0][:8], args.png, max_images=8)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "model": name,
        "transform": args.transform if name.startswith("st_") else None,
        "params": n_params,
        "selected_step": best["step"],
        "val_error": best["val_error"],
        "test_error": test,
        "ms_per_step": 1000 * step_time / args.steps,
        "curve": curve,
    }


def time_steps(args: argparse.Namespace, size: int) -> None:
    """Median time of a training step per model, the models' steps interleaved (same machine load)."""
    torch.manual_seed(args.seed)
    models = {n: visattn.create_model(n, image_size=size) for n in args.models}
    opts = {n: torch.optim.Adam(m.parameters(), lr=args.lr) for n, m in models.items()}
    x = torch.randn(args.batch_size, 1, size, size)
    y = torch.randint(0, 10, (args.batch_size,))
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.time_steps + 3):
        for n, m in models.items():
            t0 = time.perf_counter()
            loss = F.cross_entropy(m(x), y)
            opts[n].zero_grad(set_to_none=True)
            loss.backward()
            opts[n].step()
            times[n].append(time.perf_counter() - t0)
    for n, t in times.items():
        med = sorted(t[3:])[len(t[3:]) // 2]
        print(
            f"{n}: {1000 * med:.1f} ms/step (median of {args.time_steps}, batch {args.batch_size}, {size}x{size})"
        )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.time_steps:
        sizes = {"mnist_rts": 42}
        return time_steps(args, sizes.get(args.dataset, 28))
    ds = load_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    mean, std = ds.mean[0], ds.std[0]

    def prep(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - mean) / std

    x, y = prep(ds.train.images), ds.train.labels
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))  # same split for every seed
    val_idx, tr_idx = perm[: args.val_size], perm[args.val_size :]
    if args.train_size:
        tr_idx = tr_idx[: args.train_size]

    source: list[torch.Tensor] = []  # the undistorted training digits, loaded on first use

    def regenerate(epoch: int) -> torch.Tensor:
        """The training digits with new distortions (same digits, labels and order as ``x[tr_idx]``)."""
        if not source:
            source.append(load_dataset("mnist", data_dir=args.data_dir).train.images[tr_idx])
        return prep(distort(source[0], KINDS[args.dataset], seed=1_000_000 + 1000 * args.seed + epoch)[0])

    data = {
        "regenerate": regenerate,
        "size": ds.image_size[0],
        "train": (x[tr_idx], y[tr_idx]),
        "val": (x[val_idx], y[val_idx]),
        "test": (prep(ds.test.images), ds.test.labels),
    }
    print(
        f"{args.dataset}: train {len(tr_idx)}, val {len(val_idx)}, test {len(ds.test)}; "
        f"generated in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    if args.test_checkpoint:
        if len(args.models) != 1:
            raise ValueError(f"--test-checkpoint needs exactly one model in --models, got {args.models}")
        name = args.models[0]
        model = visattn.create_model(name, **model_options(name, data["size"], args))
        model.load_state_dict(load_file(args.test_checkpoint))
        print(f"{name} from {args.test_checkpoint}: test error {error_rate(model, *data['test']):.2f}%")
        return None
    results = []
    for name in args.models:
        r = train_one(name, data, args)
        print(
            f"{name}: test error {r['test_error']:.2f}% (val {r['val_error']:.2f}% at step {r['selected_step']}),"
            f" {r['ms_per_step']:.1f} ms/step, {r['params']} params",
            flush=True,
        )
        results.append(r)
    summary = {
        "dataset": args.dataset,
        "args": vars(args),
        "results": results,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print(f"total {summary['total_s']}s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
